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

from adaptok_cli.defaults import UNITS
from adaptok_cli.core.layout import pixels_for

DEFAULT_UNIT = UNITS[0]
SENSITIVITY_WINDOWS = 8       # latent windows the decoder is probed on, spread over the clips
SENSITIVITY_FRAMES = 5        # latent frames per window
PROBE_SIDE = 24               # latent positions per side of the centre crop each window is probed on
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


def probe_crop(z: torch.Tensor, side: int = PROBE_SIDE) -> torch.Tensor:
    """The centre side x side latent positions of a window (t, C, h, w): the sensitivity is a mean over
    positions, so a crop measures it at a fraction of the decoding (docs/TOKENIZERS.md: the tolerance)."""
    h, w = z.shape[2:]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return z[:, :, y:y + side, x:x + side]


@torch.no_grad()
def decoder_sensitivity(tok, windows, spread, nudge=NUDGE, progress=None) -> torch.Tensor:
    """Mean squared pixel change per unit (spread, squared) of noise in each channel, nudging one
    channel at a time -> (C,), mean 1. windows: latent tensors (t, C, h, w), probed on their centre
    crops. progress(n) is told of the pixels each decode makes."""
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(tok.channels)
    for z in windows:
        z = probe_crop(z)
        base, _ = tok.decode(z)
        for c in range(tok.channels):
            nudged = z.clone()
            nudged[:, c] += nudge * float(spread[c]) * torch.randn(nudged[:, c].shape, generator=g)
            total[c] += ((tok.decode(nudged)[0] - base) ** 2).mean() / nudge ** 2
            if progress:
                progress(base[:, 0].numel())
        if progress:
            progress(base[:, 0].numel())
    return (total / total.mean()).clamp_min(1e-4)


def probe_pixels(tok, shapes) -> int:
    """Pixels the decoder makes while probing windows of these latent shapes (t, C, h, w)."""
    side = lambda n: pixels_for(min(n, PROBE_SIDE), tok.space_factor)
    return sum((tok.channels + 1) * tok.frames_for(t, True) * side(h) * side(w) for t, _, h, w in shapes)


class Tally:
    """progress(done, total) for a bar: pixels coded so far (encoded or decoded), against about how
    many there will be (refined as the work becomes known)."""

    def __init__(self, progress, total: int = 0):
        self.progress, self.done, self.total = progress, 0, total

    def __call__(self, n: int):
        self.done += n
        self.progress(self.done, max(self.total, self.done))


def probe_windows(latents, n: int = SENSITIVITY_WINDOWS, frames: int = SENSITIVITY_FRAMES) -> list[torch.Tensor]:
    """n windows of `frames` latent frames, spread over a list of clips' latents (arrays or tensors)."""
    return [torch.from_numpy(np.asarray(z[:frames], np.float32)) for z in latents[::max(1, len(latents) // n)][:n]]


class EvenlySpaced:
    """Up to n items spread evenly over a stream of unknown length, in O(n) memory: every stride-th
    item is kept, and the stride doubles (every other kept one dropped) whenever 2n are held."""

    def __init__(self, n: int):
        self.n, self.stride, self.seen, self.items = n, 1, 0, []

    def offer(self, make):
        if self.seen % self.stride == 0:
            self.items.append(make())
            if len(self.items) == 2 * self.n:
                self.items, self.stride = self.items[::2], self.stride * 2
        self.seen += 1

    def result(self) -> list:
        k = len(self.items)
        return self.items if k <= self.n else [self.items[i * k // self.n] for i in range(self.n)]


def measure(tok, latents, spread: torch.Tensor | None = None, progress=None) -> Calibration:
    """latents: an iterable of (t, C, h, w) tensors from real clips (a clip's chunks in turn). The
    spread is each channel's standard deviation over all of them (or the given one); the decoder is
    probed on the first SENSITIVITY_FRAMES latent frames of up to SENSITIVITY_WINDOWS of them, spread
    evenly over all (those that long, where there are such). progress: a Tally."""
    n, s, s2 = 0, torch.zeros(tok.channels, dtype=torch.float64), torch.zeros(tok.channels, dtype=torch.float64)
    full, short = EvenlySpaced(SENSITIVITY_WINDOWS), EvenlySpaced(SENSITIVITY_WINDOWS)
    for z in latents:
        z = torch.as_tensor(z, dtype=torch.float32)
        flat = z.transpose(0, 1).reshape(tok.channels, -1).double()
        n, s, s2 = n + flat.shape[1], s + flat.sum(1), s2 + (flat ** 2).sum(1)
        (full if len(z) >= SENSITIVITY_FRAMES else short).offer(lambda: probe_crop(z[:SENSITIVITY_FRAMES]).clone())
    windows = full.result() or short.result()
    if not windows:
        raise ValueError("no latents to calibrate on")
    if spread is None:
        spread = ((s2 / n - (s / n) ** 2).clamp_min(0).sqrt().float()).clamp_min(1e-4)
    if progress:
        progress.total = progress.done + probe_pixels(tok, [w.shape for w in windows])
    return Calibration(spread, decoder_sensitivity(tok, windows, spread, progress=progress), tok.fingerprint,
                       len(windows))


def clip_latents(tok, paths, short_side: int | None = 256, max_frames: int = 64, chunk: int = 8, progress=None):
    """Latents of the first max_frames frames of each clip (shrunk to short_side, never enlarged), as
    compress would encode them. progress(n): pixels encoded."""
    from itertools import islice

    from adaptok_cli.core.codec import Codec, Rule
    from adaptok_cli.running.video import read_shrunk
    for path in paths:
        with read_shrunk(path, short_side) as reader:
            for enc in Codec(tok, Rule(threshold=0.0)).encoder().chunks(islice(reader, max_frames), chunk):
                if progress:
                    progress(enc.frames * reader.info.width * reader.info.height)
                yield enc.latents


def pixels_to_read(paths, short_side: int | None, max_frames: int) -> int:
    """About how many pixels clip_latents encodes from these clips (the containers' frame estimates)."""
    from adaptok_cli.running.video import read_shrunk
    total = 0
    for path in paths:
        with read_shrunk(path, short_side) as r:
            total += min(max_frames, r.info.frames or max_frames) * r.info.width * r.info.height
    return total


def calibrate(tok, paths, short_side: int | None = 256, max_frames: int = 64, progress=None) -> Calibration:
    """A tokeniser's calibration measured on these clips (what `adaptok calibrate` runs).
    progress(done, total): pixels coded so far (encoded, then decoded by the probes) of about total."""
    paths = list(paths)
    tally = None
    if progress:
        probes = [(SENSITIVITY_FRAMES, tok.channels, PROBE_SIDE, PROBE_SIDE)] * SENSITIVITY_WINDOWS
        tally = Tally(progress, pixels_to_read(paths, short_side, max_frames) + probe_pixels(tok, probes))
    return measure(tok, clip_latents(tok, paths, short_side, max_frames, progress=tally), progress=tally)


def save(cal: Calibration, path):
    from safetensors.torch import save_file

    from adaptok_cli.running.outputs import atomic_path
    tensors = {"spread": cal.spread.float().contiguous(), "sensitivity": cal.sensitivity.float().contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"tokenizer_fingerprint": cal.tokenizer_fingerprint,
                                               "windows": str(cal.windows)})
        tmp.chmod(0o644)


def load(path, tok) -> Calibration:
    """A calibration file for this tokeniser, checked: two positive, finite (C,) tensors and the same
    tokeniser fingerprint (safetensors: a file cannot run code)."""
    from adaptok_cli.errors import UsageError
    from adaptok_cli.models.tokenizer import read_safetensors
    try:
        tensors, meta = read_safetensors(path)
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
    from adaptok_cli.models.tokenizer import WEIGHTS_DIR
    return WEIGHTS_DIR / f"{tok.name}-calibration.safetensors"


def store_dir() -> Path:
    """Where `adaptok calibrate` keeps calibrations: $ADAPTOK_CACHE/calibration, else
    $XDG_CACHE_HOME/adaptok/calibration (~/.cache/adaptok/calibration)."""
    from adaptok_cli.models.cache import root
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
    from adaptok_cli.errors import ModelUnavailableError, UsageError
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
