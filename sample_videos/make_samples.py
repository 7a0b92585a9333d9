"""Regenerate the sample clips (all synthetic, made by this project): python sample_videos/make_samples.py

static_ball.mp4  still scene, one small ball moving: almost every latent position can be dropped
pan.mp4          global camera motion over a textured scene: most positions change
noise.mp4        boiling noise-like texture: nothing is redundant
"""
from fractions import Fraction
from pathlib import Path

import numpy as np

from adaptok_cli.running.video import VideoWriter

HERE = Path(__file__).parent
W, H, T, FPS = 256, 192, 45, Fraction(24)


def smooth_noise(rng, h, w, cell):
    """Value noise: random grid upsampled bilinearly (cheap, deterministic texture)."""
    g = rng.random((h // cell + 2, w // cell + 2, 3))
    y = np.arange(h) / cell
    x = np.arange(w) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None, None], (x - x0)[None, :, None]
    a, b = g[y0][:, x0], g[y0][:, x0 + 1]
    c, d = g[y0 + 1][:, x0], g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def scene(rng, h, w):
    """A 'room': gradient wall, floor, a few rectangles, mild texture."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.55 + 0.2 * xx, 0.5 + 0.1 * yy, 0.45 - 0.1 * xx], -1)
    img[int(h * 0.7):] = [0.35, 0.25, 0.2]
    for _ in range(6):
        y0, x0 = rng.integers(0, h - 40), rng.integers(0, w - 40)
        img[y0:y0 + rng.integers(15, 40), x0:x0 + rng.integers(15, 40)] = rng.random(3)
    img += 0.15 * (smooth_noise(rng, h, w, 8) - 0.5)
    return np.clip(img, 0, 1)


def write(name, frames):
    w = VideoWriter(HERE / name, frames[0].shape[1], frames[0].shape[0], FPS, crf=20)
    for f in frames:
        w.write((f * 255 + 0.5).astype(np.uint8))
    w.close()
    print(f"{name}: {(HERE / name).stat().st_size} bytes")


def main():
    rng = np.random.default_rng(2026)
    bg = scene(rng, H, W)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = []
    for t in range(T):
        f = bg.copy()
        cx, cy = 40 + 4 * t, 60 + 30 * np.sin(t / 6)
        f[(yy - cy) ** 2 + (xx - cx) ** 2 < 8 ** 2] = [0.9, 0.2, 0.1]
        frames.append(f)
    write("static_ball.mp4", frames)

    big = scene(rng, H + 80, W + 200)
    write("pan.mp4", [big[40 + int(20 * np.sin(t / 10)):40 + int(20 * np.sin(t / 10)) + H, 4 * t:4 * t + W]
                      for t in range(T)])

    write("noise.mp4", [0.5 + 0.5 * (smooth_noise(rng, H, W, 3) - 0.5) * 1.6 for _ in range(T)])


if __name__ == "__main__":
    main()
