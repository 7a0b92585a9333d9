"""Benchmark section `loss_maps`: where and when dropping costs, at the chosen threshold.

Per clip, the mean over frames of (squared error as decompressed) - (squared error at full rate) per
pixel, and that loss in dB frame by frame. The maps are saved beside the results (loss_maps.npz, at a
quarter of the frame size: two pixels per latent position's eight, float16), so that
`python -m bench.bench --plots-only` redraws the figure without measuring again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptok_cli.core.codec import Decoder, to_frames

POOL = 4        # pixels per side averaged into one map cell


def measure(tok, clips, lit, threshold, chunks_of, full_rate, new_inpainter) -> tuple[dict, dict]:
    """-> (rows {clip: mean and worst dB lost}, maps {clip: (heat (h, w) float16, dB per frame, fps)}).
    chunks_of(tok, clip, threshold=): the clip's chunks as compress codes them; full_rate(tok, clip): with
    every position kept (bench/clips.py's, so the chain is codec.py's)."""
    rows, maps = {}, {}
    for c in clips:
        full, fill = Decoder(tok), Decoder(tok, new_inpainter(tok, lit, threshold), "hold", threshold)
        heat, db = np.zeros((c.height, c.width)), []
        for ref, kept, chunk in zip(c.refs, full_rate(tok, c), chunks_of(tok, c, threshold=threshold)):
            a = to_frames(full.frames(full.dense(kept))[:len(ref)], c.height, c.width).astype(np.float32)
            b = to_frames(fill.frames(fill.dense(chunk))[:len(ref)], c.height, c.width).astype(np.float32)
            ea, eb = ((a - ref) ** 2).mean(-1), ((b - ref) ** 2).mean(-1)
            heat += (eb - ea).sum(0)
            db += [10 * np.log10(max(y.mean(), 1e-10) / max(x.mean(), 1e-10)) for x, y in zip(ea, eb)]
        heat /= c.frames
        rows[c.name] = {"mean_db_loss": float(np.mean(db)), "worst_frame_db_loss": float(np.max(db))}
        maps[c.name] = (pooled(heat), np.array(db, np.float32), c.fps)
    return rows, maps


def pooled(heat: np.ndarray) -> np.ndarray:
    h, w = (s // POOL * POOL for s in heat.shape)
    return heat[:h, :w].reshape(h // POOL, POOL, w // POOL, POOL).mean((1, 3)).astype(np.float16)


def save(maps: dict, path: Path):
    names = list(maps)
    np.savez_compressed(path, names=np.array(names), fps=np.array([maps[n][2] for n in names]),
                        **{f"heat{i}": maps[n][0] for i, n in enumerate(names)},
                        **{f"db{i}": maps[n][1] for i, n in enumerate(names)})


def load(path: Path) -> dict:
    with np.load(path) as f:
        return {str(n): (f[f"heat{i}"], f[f"db{i}"], float(f["fps"][i])) for i, n in enumerate(f["names"])}


def draw(maps: dict, threshold: float, lit: bool, png: Path):
    """One row per clip: where (the map) and when (dB lost per frame). All maps share one colour scale
    (square-root, to 99.5% of all cells), so clips compare by colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm
    top = max(1e-6, float(np.percentile(np.concatenate([m[0].astype(np.float32).ravel() for m in maps.values()]),
                                        99.5)))
    norm = PowerNorm(0.5, vmin=0, vmax=top)
    fig, axes = plt.subplots(len(maps), 2, figsize=(10, 1.9 * len(maps) + 1.2), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.6]}, layout="constrained")
    for (ax_map, ax_t), (name, (heat, db, fps)) in zip(axes, maps.items()):
        im = ax_map.imshow(heat.astype(np.float32), cmap="magma", norm=norm, interpolation="nearest")
        ax_map.set(xticks=[], yticks=[])
        ax_map.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax_t.plot(np.arange(len(db)) / fps, db, color="#b4421f")
        ax_t.set_ylabel("dB lost", fontsize=8)
        ax_t.set_title(f"mean {np.mean(db):.2f} dB lost, worst frame {np.max(db):.2f}", fontsize=9)
        ax_t.tick_params(labelsize=8)
    axes[0][0].set_title("where: extra squared error per pixel", fontsize=9)
    axes[-1][1].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[:, 0], location="bottom", fraction=0.02, pad=0.01, aspect=40,
                 label="extra squared error per pixel: one scale for every clip (square root)")
    fig.suptitle(f"Loss against full rate at threshold {threshold:g} ({'LIT' if lit else 'hold-fill'}); "
                 f"each time plot has its own y scale")
    fig.savefig(png, dpi=70)
    plt.close(fig)
