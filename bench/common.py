"""What the benchmark's sections share: the markdown table, the line saying which run made a section,
the machine's description, the dev clips' listing, a generated test video and a command's peak memory."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import torch

from adaptok_cli.running.video import VIDEO_EXTENSIONS

ROOT = Path(__file__).resolve().parents[1]


def video_paths(folder: Path) -> list[Path]:
    """The videos of a folder (the dev clips), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)


def mean(rows, key):
    """The mean of a column over rows, skipping rows without it (None when none has it)."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def machine():
    """The machine in one line (CPU, cores, torch and its threads, OS), for the report's header."""
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {platform.platform()}"


def table(rows, cols, fmt=None):
    """A markdown table of rows (dicts) in these columns; floats by fmt[col] (else 3 decimals), None as -."""
    fmt = fmt or {}
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("-" if v is None else (fmt.get(c, "{:.3f}").format(v) if isinstance(v, float) else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def ran(r, section):
    """The line under a section's heading: the command that measured it, its date and duration."""
    x = r["runs"][section]
    return f"_`{x['command']}`, {x['date']}, {x['minutes']:.1f} min._"


def moving_video(path, width, height, frames, fps=25, seed=0):
    """A textured picture panning and a square moving over it, written with x264 (fast)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / (9 + 4 * rng.random()) + rng.random() * 6) * np.cos(y / (13 + 4 * rng.random()))
                     for _ in range(3)], -1)
    base = ((base * 0.4 + 0.5) * 255 + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            f = np.roll(base, i // 2, 1).copy()
            y, x = (height // 3 + i) % (height - 16), (2 * i) % (width - 16)
            f[y:y + 16, x:x + 16] = 255
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def peak_rss_mb(*args, output=False):
    """Peak RSS (MB) of one adaptok command in its own process (and, output=True, its stdout)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, ROOT / "tests" / "peak_rss.py", *map(str, args)], capture_output=True,
                       text=True, env=env)
    if p.returncode:
        raise RuntimeError(p.stderr)
    mb = int(p.stderr.strip().splitlines()[-1]) / 1024
    return (mb, p.stdout) if output else mb
