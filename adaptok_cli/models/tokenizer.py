"""Frozen continuous video tokenisers behind one small protocol, and how to load them.

A tokeniser maps frames (T, 3, H, W) in [-1, 1] (or uint8 0..255, which it converts as late as it
can) to latents (t, C, h, w) and back to frames in [-1, 1]. Streaming:
`encode`/`decode` take and return a state; a call with state None starts a stream. A *stateful*
tokeniser (the built-in one) continues the stream across calls, so chunked coding equals whole-clip
coding; a stateless one (Cosmos TorchScript) codes each chunk as an independent clip.

The families adaptok loads are the table KINDS, the one place to add one: the built-in
(`TinyTokTokenizer` with shipped weights, by name), a TinyTok .safetensors file (our own network,
tinytok.py; safetensors never runs code), a diffusers VAE folder (diffusers_tok.py) and a user's
local Cosmos-Tokenizer CV folder with encoder.jit / decoder.jit (`CosmosTokenizer`; TorchScript is
code, so it is only ever loaded from a folder the user names explicitly). The protocol they
implement is `tokenizer_base.Tokenizer`.

Which files are loaded is decided only by the user (`spec`) or by the fixed table of built-ins
(`BUILTIN_TOKENIZERS`); a container names a model by identity (name + fingerprint), never by path.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from adaptok_cli.models import diffusers_tok
from adaptok_cli.format import safejson
from adaptok_cli.running.outputs import atomic_path
from adaptok_cli.defaults import BUILTIN_TOKENIZERS, DEFAULT_TOKENIZER, TOKENIZER_KINDS, is_device_name
from adaptok_cli.errors import ModelUnavailableError, UsageError
from adaptok_cli.models.modelcheck import mismatch
from adaptok_cli.models.tinytok import TinyTok, TinyTokConfig, to_uint8
from adaptok_cli.models.tokenizer_base import Tokenizer, file_fingerprint, host_frames

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"   # adaptok_cli/weights
FOLDER_FILES = ("config.json", "model_index.json", "encoder.jit", "decoder.jit")   # name their folder instead


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """A device name (auto, cpu, cuda[:N]) -> the device: resolved once per job, at its start; a
    torch.device (resolved already) passes through."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not is_device_name(str(device)):
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


class TinyTokTokenizer(Tokenizer):
    stateful = True

    def __init__(self, path: Path, device="cpu", name=None):
        path = Path(path)
        try:
            tensors, meta = read_safetensors(path)
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


def read_safetensors(path) -> tuple[dict, dict]:
    """A safetensors file's tensors and its metadata, checked as safetensors_metadata checks it (the
    weights files adaptok loads: TinyTok, LIT, calibrations)."""
    tensors = load_file(str(path))
    with open(path, "rb") as f:
        return tensors, safetensors_metadata(f)


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


def is_cosmos_folder(spec: str) -> bool:
    p = Path(spec)
    return p.is_dir() and any((p / f).is_file() for f in ("encoder.jit", "decoder.jit"))


def is_tinytok_file(spec: str) -> bool:
    p = Path(spec)
    return p.suffix == ".safetensors" and p.is_file()


@dataclass(frozen=True)
class Kind:
    """A family of tokenisers: which specs name one (from the path alone: nothing is read or run), the
    files its fingerprint covers, and how one is loaded."""
    name: str
    names: Callable[[str], bool]
    files: Callable[[str], list[Path]]
    load: Callable[..., Tokenizer]     # (spec, device, dtype) -> Tokenizer


# Consulted in this order; the first whose names() is true loads the spec. The one place to add a family.
KINDS = (
    Kind("diffusers", diffusers_tok.is_diffusers_spec, diffusers_tok.spec_files, diffusers_tok.DiffusersTokenizer),
    Kind("cosmos", is_cosmos_folder, lambda spec: [Path(spec) / "encoder.jit", Path(spec) / "decoder.jit"],
         lambda spec, device, dtype: CosmosTokenizer(Path(spec), device)),   # the one missing is named when read
    Kind("tinytok file", is_tinytok_file, lambda spec: [Path(spec)],
         lambda spec, device, dtype: TinyTokTokenizer(Path(spec), device)),
    Kind("built-in", lambda spec: spec in BUILTIN_TOKENIZERS, lambda spec: [],
         lambda spec, device, dtype: load_builtin(spec, device)),
)


def kind_of(spec: str) -> Kind:
    """The family a spec names; a spec that names none is refused with what each kind it could be is missing."""
    p = Path(spec)
    if p.is_file() and p.parent != p and (p.name in FOLDER_FILES or p.suffix == ".safetensors"
                                          and (p.parent / "config.json").is_file()):
        raise ModelUnavailableError(f"{spec}: a file of a tokeniser folder: name the folder (--tokenizer {p.parent})")
    for kind in KINDS:
        if kind.names(spec):
            return kind
    if p.is_dir():
        raise ModelUnavailableError(f"{spec}: no tokeniser in this folder: a diffusers VAE folder needs config.json "
                                    f"and .safetensors weights, a pipeline folder vae/config.json, a Cosmos-Tokenizer "
                                    f"folder encoder.jit and decoder.jit")
    if p.is_file():
        raise ModelUnavailableError(f"{spec}: not a tokeniser: give {TOKENIZER_KINDS}")
    if "/" not in spec and "." not in spec:
        raise ModelUnavailableError(f"unknown tokeniser {spec!r}: give {TOKENIZER_KINDS}")
    raise ModelUnavailableError(f"tokeniser {spec!r} not found: give {TOKENIZER_KINDS}")


def spec_files(spec: str) -> list[Path]:
    """The files a user's tokeniser spec names (what its fingerprint is computed over), or [] for a built-in."""
    return kind_of(spec).files(spec)


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
    diffusers VAE (diffusers_tok.py), as KINDS says. dtype (auto, fp32, bf16, fp16) applies to diffusers
    VAEs; the others run in float32."""
    return kind_of(spec).load(spec, device, dtype)
