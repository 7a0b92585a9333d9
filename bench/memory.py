"""Section `memory`: the peak memory of compress and decompress against the video's length."""
from __future__ import annotations

import time
from pathlib import Path

from .common import moving_video, peak_rss_mb, ran, table


def long_video_memory(tmp, lengths_s, fps, log, width=854, height=480):
    rows = []
    for secs in lengths_s:
        src = moving_video(Path(tmp) / f"long{secs}.mp4", width, height, int(secs * fps), fps)
        t0 = time.perf_counter()
        c = peak_rss_mb("compress", src, "-o", Path(tmp) / f"long{secs}.atok", "-q", "-f")
        d = peak_rss_mb("decompress", Path(tmp) / f"long{secs}.atok", "-o", Path(tmp) / f"long{secs}.mkv", "-q", "-f")
        rows.append({"seconds_of_video": secs, "fps": fps, "frames": int(secs * fps), "size": f"{width}x{height}",
                     "peak_rss_compress_mb": c, "peak_rss_decompress_mb": d, "wall_s": time.perf_counter() - t0})
        log(rows[-1])
        for p in Path(tmp).glob(f"long{secs}*"):
            p.unlink()
    return rows


def markdown(r) -> list[str]:
    return ["## Peak memory against video length", "", ran(r, "memory"), "",
            "Peak resident memory (VmHWM) of `adaptok compress` and `adaptok decompress` processes on generated "
            "videos of different lengths.", "",
            table(r["memory"], ["seconds_of_video", "fps", "frames", "size", "peak_rss_compress_mb",
                                "peak_rss_decompress_mb"],
                  {"seconds_of_video": "{:g}", "fps": "{:g}", "peak_rss_compress_mb": "{:.0f}",
                   "peak_rss_decompress_mb": "{:.0f}"}), ""]
