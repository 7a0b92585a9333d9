"""Pictures of where the tokens go: a timeline and heatmap PNG, a terminal heatmap, a mask overlay."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import UsageError
from .layout import latent_starts, pixel_map, starts_stream

if TYPE_CHECKING:
    import torch

    from .container import AtokReader


def keep_statistics(r: AtokReader) -> tuple[np.ndarray, np.ndarray]:
    """-> (kept fraction per latent frame (T,), how often each position was kept (h, w)) of an open
    container; numpy only (inspect draws the heatmap without torch)."""
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
    from .report import describe
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


def terminal_heatmap(heat: np.ndarray, width: int = 48) -> list[str]:
    """Rows of shade characters for a (h, w) map in [0, 1], at most `width` columns wide.

    Two latent rows per character row keeps the aspect ratio of terminal cells (about 1:2).
    """
    step = max(1, -(-heat.shape[1] // width))
    small = block_means(heat, 2 * step, step)
    idx = np.clip((small * (len(SHADES) - 1)).round().astype(int), 0, len(SHADES) - 1)
    return ["".join(SHADES[i] for i in row) for row in idx]


def block_means(a: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Means of (bh, bw) blocks of a 2-D array; blocks at the bottom and right edges are cut short and
    averaged over what they hold."""
    h, w = a.shape
    nh, nw = -(-h // bh), -(-w // bw)
    total, count = np.zeros((nh * bh, nw * bw)), np.zeros((nh * bh, nw * bw))
    total[:h, :w], count[:h, :w] = a, 1
    return total.reshape(nh, bh, nw, bw).sum((1, 3)) / count.reshape(nh, bh, nw, bw).sum((1, 3))


def overlay(frames: np.ndarray, mask: torch.Tensor, time_factor: int, space_factor: int, starts_stream: bool) -> np.ndarray:
    """Tint, in each frame, the positions its latent frame dropped: (n, H, W, 3) uint8. The frames are
    those of mask's latent frames (t, h, w); starts_stream: its first latent frame begins a stream."""
    n, height, width = frames.shape[:3]
    m = pixel_map(mask.numpy(), n, time_factor, starts_stream, space_factor, height, width)
    out = frames.astype(np.float32)
    tint = np.array([40, 90, 255], np.float32)
    out[~m] = out[~m] * 0.55 + tint * 0.45
    return out.round().astype(np.uint8)
