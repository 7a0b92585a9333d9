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
import os
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import layout, safejson
from .outputs import atomic_path
from .defaults import BUILTIN_TOKENIZERS, DEFAULT_TOKENIZER, is_device_name
from .errors import ModelUnavailableError, UsageError
from .modelcheck import mismatch
from .tinytok import TinyTok, TinyTokConfig, to_uint8

WEIGHTS_DIR = Path(__file__).parent / "weights"


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not is_device_name(str(device)):
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


_FINGERPRINTS: dict[tuple, str] = {}


def file_fingerprint(*paths) -> str:
    """sha256 of the files' bytes (16 hex digits), hashed once per process while their path, size,
    inode and mtime stay the same: a large VAE is named, checked and loaded without being read thrice."""
    stats = tuple((str(p), st.st_size, st.st_ino, st.st_mtime_ns) for p, st in zip(paths, map(os.stat, paths)))
    if stats not in _FINGERPRINTS:
        h = hashlib.sha256()
        for p in paths:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        _FINGERPRINTS[stats] = h.hexdigest()[:16]
    return _FINGERPRINTS[stats]


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
        return layout.frames_for(n_latent, self.time_factor, at_start or not self.stateful)

    def latents_for(self, n_frames: int, at_start: bool = True) -> int:
        """Latent frames n_frames need (the last group padded), at the start of a video or later."""
        return layout.latents_for(n_frames, self.time_factor, at_start or not self.stateful)

    def encode(self, frames: torch.Tensor, state=None):
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, state=None, uint8=False):
        """-> (frames in [-1, 1], or uint8 0..255 with uint8=True, state)."""
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
        return x[0].cpu(), state


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
        x = (x[0] if isinstance(x, (tuple, list)) else x)[0].permute(1, 0, 2, 3).float().cpu()
        return (to_uint8(x) if uint8 else x), None


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
    """The files a user's tokeniser spec names (what its fingerprint is computed over), or [] for a built-in."""
    p = Path(spec)
    from .diffusers_tok import is_diffusers_spec, model_files, read_config, resolve
    if is_diffusers_spec(spec):
        folder = resolve(spec)
        read_config(folder)
        return model_files(folder)
    if p.is_dir():
        return [p / "encoder.jit", p / "decoder.jit"]
    if p.suffix == ".safetensors" and p.is_file():
        return [p]
    if spec in BUILTIN_TOKENIZERS:
        return []
    if "/" not in spec and "." not in spec:
        raise ModelUnavailableError(f"unknown tokeniser {spec!r}: use 'tinytok', a .safetensors file, or a Cosmos folder")
    raise ModelUnavailableError(f"tokeniser {spec!r} not found: give 'tinytok', a .safetensors file, or a Cosmos folder")


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
