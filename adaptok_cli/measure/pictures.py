"""Pictures of where the tokens go: a timeline and heatmap PNG, a terminal heatmap, a mask overlay.

The terminal heatmap is plain Python (inspect on a terminal imports no numpy); the PNG and the overlay
import numpy where they run.
"""
from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

from adaptok_cli.errors import UsageError
from adaptok_cli.core.layout import latent_starts, pixel_map, starts_stream

if TYPE_CHECKING:
    import numpy as np
    import torch

    from adaptok_cli.format.container import AtokReader


def keep_statistics(r: AtokReader) -> tuple[np.ndarray, np.ndarray]:
    """-> (kept fraction per latent frame (T,), how often each position was kept (h, w)) of an open
    container; numpy only (--plot draws the heatmap without torch)."""
    import numpy as np
    per_frame, counts, n = [], None, 0
    for i in range(len(r.chunks)):
        m = r.read_mask(i)
        per_frame += list(m.mean(axis=(1, 2)))
        counts = m.sum(0) if counts is None else counts + m.sum(0)
        n += m.shape[0]
    return np.array(per_frame), counts / max(1, n)


def plot(r: AtokReader, png_path) -> None:
    """Token-rate timeline and spatial keep heatmap of one open container, as a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'adaptok[plot]'") from None
    import numpy as np
    from adaptok_cli.measure.report import describe
    rate, heat = keep_statistics(r)
    info, h = describe(r, r.path), r.header
    seconds = np.concatenate([c.first_frame + latent_starts(c.latent_frames, h.tokenizer.time_factor,
                                                            starts_stream(c.index == 0, h.stateful))
                              for c in info.chunks]) / info.fps
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    a.step(seconds, rate, where="post", color="#1f6fb4")
    a.fill_between(seconds, rate, step="post", alpha=0.25, color="#1f6fb4")
    a.set(xlabel="time (s)", ylabel="kept fraction", ylim=(0, 1.02),
          title=f"token rate per latent frame (clip: {info.token_rate:.3f})")
    im = b.imshow(heat, vmin=0, vmax=1, cmap="magma", interpolation="nearest")
    b.set(title="how often each position was kept", xticks=[], yticks=[])
    fig.colorbar(im, ax=b, fraction=0.046)
    fig.suptitle(str(r.path.name))
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


SHADES = " ░▒▓█"


def terminal_heatmap(r: AtokReader, width: int = 48) -> list[str]:
    """Rows of shade characters for how often each latent position of an open container was kept, at
    most `width` columns wide: each character the mean over a block of positions, blocks at the bottom
    and right edges cut short. Two latent rows per character row keeps the aspect ratio of terminal
    cells (about 1:2). Counted exactly, in integers, and rounded half to even."""
    h = r.header
    lh, lw = h.latent_height, h.latent_width
    planes, n = keep_counts(r)
    step = max(1, -(-lw // width))
    rows = []
    for top in range(0, lh, 2 * step):
        band_rows = min(2 * step, lh - top)
        band = [(p >> (top * lw)) & ((1 << (band_rows * lw)) - 1) for p in planes]
        line = []
        for left in range(0, lw, step):
            cols = min(step, lw - left)
            block = sum((((1 << cols) - 1) << left) << (y * lw) for y in range(band_rows))
            kept = sum((p & block).bit_count() << k for k, p in enumerate(band))
            line.append(SHADES[round(Fraction(kept * (len(SHADES) - 1), max(1, n) * band_rows * cols))])
        rows.append("".join(line))
    return rows


def keep_counts(r: AtokReader) -> tuple[list[int], int]:
    """-> (how many latent frames kept each position, as bit planes: bit p of plane k is bit k of position
    p's count; the latent frames counted) of an open container, in plain Python: each latent frame's
    mask, an integer of h x w bits, is added to the planes as a binary counter adds a bit to each of
    its positions at once."""
    hw = r.header.latent_positions
    whole = (1 << hw) - 1
    planes, n = [], 0
    for i in range(r.num_chunks):
        mask = int.from_bytes(r.mask_bytes(i), "little")
        for _ in range(r.entry(i).latent_frames):
            carry = mask & whole
            for k, plane in enumerate(planes):
                if not carry:
                    break
                planes[k], carry = plane ^ carry, plane & carry
            if carry:
                planes.append(carry)
            mask >>= hw
            n += 1
    return planes, n


def overlay(frames: np.ndarray, mask: torch.Tensor, time_factor: int, space_factor: int, starts_stream: bool) -> np.ndarray:
    """Tint, in each frame, the positions its latent frame dropped: (n, H, W, 3) uint8. The frames are
    those of mask's latent frames (t, h, w); starts_stream: its first latent frame begins a stream."""
    import numpy as np
    n, height, width = frames.shape[:3]
    m = pixel_map(mask.numpy(), n, time_factor, starts_stream, space_factor, height, width)
    out = frames.astype(np.float32)
    tint = np.array([40, 90, 255], np.float32)
    out[~m] = out[~m] * 0.55 + tint * 0.45
    return out.round().astype(np.uint8)
