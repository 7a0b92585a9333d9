"""The unit of the dropping rule: how much change in each latent channel counts as one.

The rule keeps a position when the mean over channels of |z_c - held_c| / unit_c exceeds the threshold.
Two units (`--unit`):
- "spread": each channel's spread over real footage. This is the tokeniser's own scale, and the only
  unit containers of format 1 to 3 knew.
- "decoder": the spread divided by sqrt(w_c), where w_c (mean 1) is how much the frozen decoder's pixels
  move per unit of change in channel c, rescaled to the spread's geometric mean. One unit of change then
  costs about the same pixel error in every channel (TinyTok's channels differ 40-fold), and thresholds
  stay comparable with the spread's. It drops the positions the decoder would miss least
  (docs/EXPERIMENTS.md: +0.05 to +0.27 dB at the same token rate on the dev clips).

A calibration holds both measurements. TinyTok's ships in the package (make calibrate-tinytok); every
container records the unit it was made with, so decoding never needs the calibration again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .defaults import UNITS

DEFAULT_UNIT = UNITS[0]
SENSITIVITY_WINDOWS = 4       # latent windows the decoder is probed on
SENSITIVITY_FRAMES = 5        # latent frames per window
NUDGE = 0.1                   # probe noise, in units of each channel's spread


@dataclass
class Calibration:
    """What `measure` found for one tokeniser: per-channel spread and decoder sensitivity, both (C,)."""
    spread: torch.Tensor
    sensitivity: torch.Tensor
    tokenizer_fingerprint: str
    windows: int = 0

    def unit(self, name: str) -> torch.Tensor:
        if name == "spread":
            return self.spread
        u = self.spread / self.sensitivity.sqrt()
        return u * (self.spread.log().mean() - u.log().mean()).exp()     # the spread's geometric mean


@torch.no_grad()
def decoder_sensitivity(tok, windows, spread, nudge=NUDGE) -> torch.Tensor:
    """Mean squared pixel change per unit (spread, squared) of noise in each channel, nudging one
    channel at a time -> (C,), mean 1. windows: latent tensors (t, C, h, w)."""
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(tok.channels)
    for z in windows:
        base, _ = tok.decode(z)
        for c in range(tok.channels):
            nudged = z.clone()
            nudged[:, c] += nudge * float(spread[c]) * torch.randn(nudged[:, c].shape, generator=g)
            total[c] += ((tok.decode(nudged)[0] - base) ** 2).mean() / nudge ** 2
    return (total / total.mean()).clamp_min(1e-4)


def probe_windows(latents, n: int = SENSITIVITY_WINDOWS, frames: int = SENSITIVITY_FRAMES) -> list[torch.Tensor]:
    """n windows of `frames` latent frames, spread over a list of clips' latents (arrays or tensors)."""
    return [torch.from_numpy(np.asarray(z[:frames], np.float32)) for z in latents[::max(1, len(latents) // n)][:n]]


def measure(tok, latents, spread: torch.Tensor | None = None) -> Calibration:
    """latents: an iterable of (t, C, h, w) tensors from real clips. The spread is each channel's
    standard deviation over all of them (or the given one); the decoder is probed on the first
    SENSITIVITY_FRAMES latent frames of up to SENSITIVITY_WINDOWS of them."""
    n, s, s2, windows = 0, torch.zeros(tok.channels, dtype=torch.float64), torch.zeros(tok.channels, dtype=torch.float64), []
    for z in latents:
        z = torch.as_tensor(z, dtype=torch.float32)
        flat = z.transpose(0, 1).reshape(tok.channels, -1).double()
        n, s, s2 = n + flat.shape[1], s + flat.sum(1), s2 + (flat ** 2).sum(1)
        if len(windows) < SENSITIVITY_WINDOWS:
            windows.append(z[:SENSITIVITY_FRAMES].clone())
    if not windows:
        raise ValueError("no latents to calibrate on")
    if spread is None:
        spread = ((s2 / n - (s / n) ** 2).clamp_min(0).sqrt().float()).clamp_min(1e-4)
    return Calibration(spread, decoder_sensitivity(tok, windows, spread), tok.fingerprint, len(windows))


def clip_latents(tok, paths, short_side: int | None = 256, max_frames: int = 64, chunk: int = 8):
    """Latents of the first max_frames frames of each clip (shrunk to short_side, never enlarged), as
    compress would encode them."""
    from itertools import islice

    from .codec import Codec, Rule
    from .video import read_shrunk
    for path in paths:
        with read_shrunk(path, short_side) as reader:
            for enc in Codec(tok, Rule(threshold=0.0)).encoder().chunks(islice(reader, max_frames), chunk):
                yield enc.latents


def calibrate(tok, paths, short_side: int | None = 256, max_frames: int = 64) -> Calibration:
    """A tokeniser's calibration measured on these clips (what `adaptok calibrate` runs)."""
    return measure(tok, clip_latents(tok, paths, short_side, max_frames))


def save(cal: Calibration, path):
    from safetensors.torch import save_file

    from .outputs import atomic_path
    tensors = {"spread": cal.spread.float().contiguous(), "sensitivity": cal.sensitivity.float().contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"tokenizer_fingerprint": cal.tokenizer_fingerprint,
                                               "windows": str(cal.windows)})
        tmp.chmod(0o644)


def load(path, tok) -> Calibration:
    """A calibration file for this tokeniser, checked: two positive, finite (C,) tensors and the same
    tokeniser fingerprint (safetensors: a file cannot run code)."""
    from safetensors.torch import load_file

    from .errors import UsageError
    from .tokenizer import safetensors_metadata
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as f:
            meta = safetensors_metadata(f)
    except Exception as e:
        raise UsageError(f"{path}: not a calibration file ({e})") from None
    if meta.get("tokenizer_fingerprint") != tok.fingerprint:
        raise UsageError(f"{path}: calibrated for another tokeniser ({meta.get('tokenizer_fingerprint')}, "
                         f"not {tok.fingerprint})")
    for key in ("spread", "sensitivity"):
        t = tensors.get(key)
        if t is None or t.shape != (tok.channels,) or not bool(torch.isfinite(t).all() and (t > 0).all()):
            raise UsageError(f"{path}: {key} must be {tok.channels} positive numbers")
    return Calibration(tensors["spread"].float(), tensors["sensitivity"].float(), tok.fingerprint,
                       int(meta.get("windows", "0") or 0))


def shipped_path(tok) -> Path:
    from .tokenizer import WEIGHTS_DIR
    return WEIGHTS_DIR / f"{tok.name}-calibration.safetensors"


def store_dir() -> Path:
    """Where `adaptok calibrate` keeps calibrations: $ADAPTOK_CACHE/calibration, else
    $XDG_CACHE_HOME/adaptok/calibration (~/.cache/adaptok/calibration)."""
    from .cache import root
    return root() / "calibration"


def stored_path(tok) -> Path:
    """A calibration is found by the tokeniser's fingerprint: the hash of its weights."""
    return store_dir() / f"{tok.fingerprint}.safetensors"


_LOADED: dict = {}


def find(tok) -> Calibration | None:
    """The calibration of this tokeniser: shipped (built-in ones), else stored by `adaptok calibrate`.
    Read once per file version (a compress asks for it for its rule, its header and its up-to-date check)."""
    p = shipped_path(tok) if tok.source == "builtin" else stored_path(tok)
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    key = (str(p), st.st_mtime_ns, st.st_size, tok.fingerprint)
    if key not in _LOADED:
        _LOADED[key] = load(p, tok)
    return _LOADED[key]


def rule_unit(tok, name: str = DEFAULT_UNIT) -> tuple[str, torch.Tensor]:
    """The unit compress will use -> (its name, (C,) values). Without a calibration, a tokeniser whose
    scale was measured (TinyTok files) uses that as its spread; any other must be calibrated first."""
    from .errors import ModelUnavailableError, UsageError
    if name not in UNITS:
        raise UsageError(f"--unit must be one of {', '.join(UNITS)}")
    cal = find(tok)
    if cal is not None:
        return name, cal.unit(name)
    if not tok.measured_scale:
        spec = getattr(tok, "spec", tok.name)
        raise ModelUnavailableError(f"tokeniser {tok.name} is not calibrated: run 'adaptok calibrate --tokenizer "
                                    f"{spec} CLIP...' once, on a few clips like yours")
    return "spread", tok.scale
