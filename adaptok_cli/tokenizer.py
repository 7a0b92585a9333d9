"""Frozen continuous video tokenisers behind one small protocol, and how to load them.

A tokeniser maps frames (T, 3, H, W) in [-1, 1] (or uint8 0..255, which it converts as late as it
can) to latents (t, C, h, w) and back to frames in [-1, 1]. Streaming:
`encode`/`decode` take and return a state; a call with state None starts a stream. A *stateful*
tokeniser (the built-in one) continues the stream across calls, so chunked coding equals whole-clip
coding; a stateless one (Cosmos TorchScript) codes each chunk as an independent clip.

Two kinds exist:
- `TinyTokTokenizer`: our own network (tinytok.py); weights in safetensors (shipped in the package,
  or any file a user points to: safetensors never runs code).
- `CosmosTokenizer`: a user's local Cosmos-Tokenizer CV folder with encoder.jit / decoder.jit.
  TorchScript is code, so it is only ever loaded from a folder the user names explicitly.

Which files are loaded is decided only by the user (`spec`) or by the fixed table of built-ins
(`BUILTIN_TOKENIZERS`); a container names a model by identity (name + fingerprint), never by path.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import cache, layout, safejson
from .outputs import atomic_path
from .defaults import BUILTIN_TOKENIZERS, DEFAULT_TOKENIZER, TOKENIZER_KINDS, is_device_name
from .errors import ModelUnavailableError, UsageError
from .modelcheck import mismatch
from .tinytok import TinyTok, TinyTokConfig, to_uint8

WEIGHTS_DIR = Path(__file__).parent / "weights"
FOLDER_FILES = ("config.json", "model_index.json", "encoder.jit", "decoder.jit")   # name their folder instead


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not is_device_name(str(device)):
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def host_frames(x: torch.Tensor, uint8: bool) -> torch.Tensor:
    """Decoded frames (T, 3, H, W) to the CPU. uint8 frames, the ones written out, are laid out channels
    last (memory (T, H, W, 3), as video frames are) on the device before the one copy, so the host never
    transposes them; the shape and values are the same. From a GPU they land in pinned memory (a copy
    at full speed) and this waits for them: the caller reads them next."""
    if not uint8:
        return x.cpu()
    x = x.contiguous(memory_format=torch.channels_last)
    if x.device.type != "cuda":
        return x
    try:
        out = torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, pin_memory=True)
    except RuntimeError:          # no pinned memory to be had: the plain copy
        return x.cpu()
    out.copy_(x, non_blocking=True)
    torch.cuda.current_stream(x.device).synchronize()
    return out


_FINGERPRINTS: dict[str, str] = {}
FINGERPRINT = re.compile(r"[0-9a-f]{16}")
KEEP_FROM_BYTES = 1 << 26    # files this large in all keep their hash across processes (hashing them takes seconds)


def file_fingerprint(*paths) -> str:
    """sha256 of the files' bytes (16 hex digits), hashed once while the files stay the same (path,
    inode, size, mtime, ctime): within a process a large VAE is named, checked and loaded without
    being read thrice, and across processes (from KEEP_FROM_BYTES) the cache keeps it (cache.py)."""
    ident = cache.file_identity(paths)
    key = repr(ident)
    if key not in _FINGERPRINTS:
        keep = sum(size for _, _, _, size, _, _ in ident) >= KEEP_FROM_BYTES
        stored = cache.get("fingerprints", ident) if keep else None
        fp = stored.get("sha256") if stored else None
        if not (isinstance(fp, str) and FINGERPRINT.fullmatch(fp)):
            h = hashlib.sha256()
            for p in paths:
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            fp = h.hexdigest()[:16]
            if keep:
                cache.put("fingerprints", ident, {"sha256": fp})
        _FINGERPRINTS[key] = fp
    return _FINGERPRINTS[key]


class Tokenizer:
    """The protocol. Subclasses set the attributes and implement encode/decode."""

    name: str                 # what the container records, e.g. "tinytok" or "cosmos:CV4x8x8"
    source: str               # "builtin" (shipped, by name) or "file" (a file or folder the user named)
    fingerprint: str          # hash of the weights
    time_factor: int
    space_factor: int
    pad_multiple: int         # frame sides are padded to a multiple of this
    channels: int
    scale: torch.Tensor       # (C,) per-channel latent scale: the unit of the masking threshold
    stateful: bool
    measured_scale = True     # False: scale is a placeholder, and the rule's unit needs `adaptok calibrate`
    chunks_per_call = 1       # a stateless tokeniser may code this many whole chunks in one call (encode_many)

    def frames_for(self, n_latent: int, at_start: bool) -> int:
        """Frames that make n_latent latent frames, at the start of a video or later (layout.py)."""
        return layout.frames_for(n_latent, self.time_factor, layout.starts_stream(at_start, self.stateful))

    def latents_for(self, n_frames: int, at_start: bool = True) -> int:
        """Latent frames n_frames need (the last group padded), at the start of a video or later."""
        return layout.latents_for(n_frames, self.time_factor, layout.starts_stream(at_start, self.stateful))

    def encode(self, frames: torch.Tensor, state=None):
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, state=None, uint8=False):
        """-> (frames in [-1, 1], or uint8 0..255 with uint8=True (laid out by host_frames), state), on the CPU."""
        raise NotImplementedError

    def identity(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "time_factor": self.time_factor,
                "space_factor": self.space_factor, "channels": self.channels}


class TinyTokTokenizer(Tokenizer):
    stateful = True

    def __init__(self, path: Path, device="cpu", name=None):
        path = Path(path)
        try:
            tensors = load_file(str(path))
            with open(path, "rb") as f:
                meta = safetensors_metadata(f)
            cfg = TinyTokConfig.from_dict(safejson.loads(meta["config"], MAX_CONFIG_JSON))
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
            raise ModelUnavailableError(f"{path}: not a tinytok weights file ({e})") from None
        scale = tensors.pop("scale", None)
        if scale is None or scale.shape != (cfg.latent_channels,) or not bool(torch.isfinite(scale).all()
                                                                               and (scale > 0).all()):
            wrong = f"its scale is not {cfg.latent_channels} positive numbers"
        else:
            wrong = mismatch(lambda: TinyTok(cfg), {k: tuple(v.shape) for k, v in tensors.items()})
        if wrong:
            raise ModelUnavailableError(f"{path}: weights do not match their config ({wrong})")
        self.scale = scale.float()
        self.model = TinyTok(cfg)
        try:
            self.model.load_state_dict({k: v.float() for k, v in tensors.items()})
        except RuntimeError as e:
            raise ModelUnavailableError(f"{path}: weights do not match their config ({str(e)[:200]})") from None
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.name = name or str(meta.get("name", path.stem))[:64]   # informative only: never a path
        self.source = "builtin" if name else "file"
        self.fingerprint = file_fingerprint(path)
        self.time_factor, self.space_factor, self.pad_multiple = cfg.group, cfg.patch, cfg.patch
        self.channels = cfg.latent_channels

    @torch.no_grad()
    def encode(self, frames, state=None):
        z, state = self.model.encode(frames[None].to(self.device), state)
        return z[0].cpu(), state

    @torch.no_grad()
    def decode(self, latents, state=None, uint8=False):
        x, state = self.model.decode(latents[None].to(self.device), state, uint8)
        return host_frames(x[0], uint8), state


MAX_SAFETENSORS_HEADER = 1 << 24     # bytes of a safetensors header: its JSON is bounded before it is parsed
MAX_CONFIG_JSON = 1 << 16            # bytes of a model config stored in the metadata


def safetensors_metadata(f) -> dict:
    """A safetensors file's __metadata__ (str -> str), from its header alone; ValueError when the header
    is not one (too large, nested too deep, not a map of strings)."""
    import struct
    raw = f.read(8)
    if len(raw) < 8:
        raise ValueError("not a safetensors file (shorter than its header length)")
    n = struct.unpack("<Q", raw)[0]
    if n > MAX_SAFETENSORS_HEADER:
        raise ValueError(f"header of {n} bytes, over {MAX_SAFETENSORS_HEADER}")
    header = safejson.loads(f.read(n), MAX_SAFETENSORS_HEADER)
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("its header's metadata is not a map of strings")
    return meta


def save_tinytok(model: TinyTok, scale: torch.Tensor, path: Path, extra: dict | None = None):
    """Weights as fp16 safetensors (half the size; measured quality is that of the fp16 weights)."""
    tensors = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    tensors["scale"] = scale.float().contiguous()
    meta = {"config": json.dumps(model.cfg.to_dict()), "name": "tinytok", **(extra or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        tmp.chmod(0o644)


class CosmosTokenizer(Tokenizer):
    """A local Cosmos-Tokenizer CV folder (encoder.jit, decoder.jit): B,3,T,H,W in [-1, 1]."""

    stateful = False
    pad_multiple = 16
    measured_scale = False

    def __init__(self, folder: Path, device="cpu"):
        folder = Path(folder)
        enc, dec = folder / "encoder.jit", folder / "decoder.jit"
        if not (enc.is_file() and dec.is_file()):
            raise ModelUnavailableError(f"{folder}: a Cosmos tokeniser folder needs encoder.jit and decoder.jit")
        self.device = torch.device(device)
        try:
            with warnings.catch_warnings():  # torch marks jit.load deprecated; Cosmos ships TorchScript
                warnings.simplefilter("ignore", DeprecationWarning)
                self.encoder = torch.jit.load(str(enc), map_location=self.device).eval()
                self.decoder = torch.jit.load(str(dec), map_location=self.device).eval()
        except (RuntimeError, ValueError) as e:
            raise ModelUnavailableError(f"{folder}: cannot load TorchScript ({str(e).splitlines()[0]})") from None
        self.name, self.spec = f"cosmos:{folder.name}", str(folder)
        self.source = "file"
        self.fingerprint = file_fingerprint(enc, dec)
        # Probe the factors on a tiny clip rather than trusting the folder name.
        with torch.no_grad():
            z = self._run_encoder(torch.zeros(1, 3, 17, 32, 32, device=self.device))
        t, self.channels, h = z.shape[2], z.shape[1], z.shape[3]
        if t < 2 or 16 % (t - 1) or 32 % h:
            raise ModelUnavailableError(f"{folder}: unexpected latent shape {tuple(z.shape)} for a 17x32x32 probe")
        self.time_factor, self.space_factor = 16 // (t - 1), 32 // h
        self.pad_multiple = max(16, self.space_factor)
        self.scale = torch.ones(self.channels)

    def _run_encoder(self, x):
        out = self.encoder(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    @torch.no_grad()
    def encode(self, frames, state=None):
        if frames.dtype == torch.uint8:
            frames = frames.float().div_(127.5).sub_(1)
        x = frames.permute(1, 0, 2, 3)[None].to(self.device)
        return self._run_encoder(x)[0].permute(1, 0, 2, 3).float().cpu(), None

    @torch.no_grad()
    def decode(self, latents, state=None, uint8=False):
        x = self.decoder(latents.permute(1, 0, 2, 3)[None].to(self.device))
        x = (x[0] if isinstance(x, (tuple, list)) else x)[0].permute(1, 0, 2, 3).float()
        return host_frames(to_uint8(x) if uint8 else x, uint8), None


def builtin_path(name: str) -> Path:
    if name not in BUILTIN_TOKENIZERS:
        raise ModelUnavailableError(f"unknown built-in tokeniser {name!r}: the built-ins are {', '.join(BUILTIN_TOKENIZERS)}")
    return WEIGHTS_DIR / f"{name}.safetensors"


def load_builtin(name: str, device="cpu") -> Tokenizer:
    """A tokeniser shipped with adaptok, by name from the fixed table (a container may ask for these)."""
    path = builtin_path(name)
    if not path.is_file():
        raise ModelUnavailableError(f"the built-in tokeniser's weights are missing ({path}): reinstall adaptok")
    return TinyTokTokenizer(path, device, name=name)


def spec_files(spec: str) -> list[Path]:
    """The files a user's tokeniser spec names (what its fingerprint is computed over), or [] for a built-in.
    A spec that names no tokeniser is refused with what each kind it could be is missing."""
    p = Path(spec)
    from .diffusers_tok import is_diffusers_spec, model_files, read_config, resolve
    if is_diffusers_spec(spec):
        folder = resolve(spec)
        read_config(folder)
        return model_files(folder)
    if p.is_dir():
        cosmos = [p / "encoder.jit", p / "decoder.jit"]
        if any(f.is_file() for f in cosmos):
            return cosmos                   # a Cosmos folder: the one missing is named when it is read
        raise ModelUnavailableError(f"{spec}: no tokeniser in this folder: a diffusers VAE folder needs config.json "
                                    f"and .safetensors weights, a pipeline folder vae/config.json, a Cosmos-Tokenizer "
                                    f"folder encoder.jit and decoder.jit")
    if p.is_file() and p.parent != p and (p.name in FOLDER_FILES or p.suffix == ".safetensors"
                                          and (p.parent / "config.json").is_file()):
        raise ModelUnavailableError(f"{spec}: a file of a tokeniser folder: name the folder (--tokenizer {p.parent})")
    if p.suffix == ".safetensors" and p.is_file():
        return [p]
    if spec in BUILTIN_TOKENIZERS:
        return []
    if p.is_file():
        raise ModelUnavailableError(f"{spec}: not a tokeniser: give {TOKENIZER_KINDS}")
    if "/" not in spec and "." not in spec:
        raise ModelUnavailableError(f"unknown tokeniser {spec!r}: give {TOKENIZER_KINDS}")
    raise ModelUnavailableError(f"tokeniser {spec!r} not found: give {TOKENIZER_KINDS}")


def spec_fingerprint(spec: str) -> str:
    """The fingerprint load_tokenizer(spec) would have, computed from the files alone (nothing is run)."""
    files = spec_files(spec)
    paths = files or [builtin_path(spec)]
    for f in paths:
        if not f.is_file():
            raise ModelUnavailableError(f"{spec}: {f.name} is missing")
    try:
        return file_fingerprint(*paths)
    except OSError as e:
        raise ModelUnavailableError(f"{spec}: cannot read ({e.strerror})") from None


def load_tokenizer(spec: str = DEFAULT_TOKENIZER, device="cpu", dtype: str = "auto") -> Tokenizer:
    """A built-in name ('tinytok'), a .safetensors file of our architecture, a Cosmos folder, or a
    diffusers VAE (diffusers_tok.py). dtype (auto, fp32, bf16, fp16) applies to diffusers VAEs; the
    others run in float32."""
    files = spec_files(spec)
    if not files:
        return load_builtin(spec, device)
    from .diffusers_tok import DiffusersTokenizer, is_diffusers_spec
    if is_diffusers_spec(spec):
        return DiffusersTokenizer(spec, device, dtype)
    if Path(spec).is_dir():
        return CosmosTokenizer(Path(spec), device)
    return TinyTokTokenizer(Path(spec), device)
