"""Section `scaling`: the peak memory and speed of compress and decompress against the frame size."""
from __future__ import annotations

import json
from pathlib import Path

from .common import moving_video, peak_rss_mb, ran, table

SIZES = [(256, 256, 49), (854, 480, 49), (1280, 720, 25), (1920, 1080, 25), (3840, 2160, 9)]


def scaling(tmp, sizes, log):
    """Peak RSS, frames/s and megapixels/s of compress and decompress against frame size, each command
    in its own process; the speed is the command's own timer (--json seconds: no process start-up)."""
    rows = []
    for w, h, n in sizes:
        src = moving_video(Path(tmp) / f"s{w}x{h}.mp4", w, h, n)
        row = {"size": f"{w}x{h}", "frames": n}
        for cmd, a, b in (("compress", src, Path(tmp) / f"s{w}.atok"), ("decompress", Path(tmp) / f"s{w}.atok",
                                                                         Path(tmp) / f"s{w}.mkv")):
            mb, out = peak_rss_mb(cmd, a, "-o", b, "-f", "--json", output=True)
            secs = json.loads(out.splitlines()[-1])["seconds"]
            row.update({f"{cmd}_peak_rss_mb": mb, f"{cmd}_fps": n / secs, f"{cmd}_mpx_s": n * w * h / secs / 1e6})
        rows.append(row)
        log(row)
        for p in Path(tmp).glob(f"s{w}*"):
            p.unlink()
    return rows


def markdown(r) -> list[str]:
    f0, f1 = "{:.0f}", "{:.2f}"
    first = r["scaling"][0]
    scaled = [x | {f"{c}_mpx_s_vs_first": x[f"{c}_mpx_s"] / first[f"{c}_mpx_s"] for c in ("compress", "decompress")}
              for x in r["scaling"]]
    return ["## Memory and speed against frame size", "", ran(r, "scaling"), "",
            "Each command in its own process on a generated panning clip (x264 input, FFV1 output), default "
            "settings; peak RSS is VmHWM, speed the command's own time (`--json` seconds). Megapixels/s is "
            "what says whether large frames run at the per-pixel speed of small ones.", "",
            table(scaled, ["size", "frames", "compress_peak_rss_mb", "compress_fps", "compress_mpx_s",
                           "compress_mpx_s_vs_first", "decompress_peak_rss_mb", "decompress_fps",
                           "decompress_mpx_s", "decompress_mpx_s_vs_first"],
                  {"compress_peak_rss_mb": f0, "decompress_peak_rss_mb": f0, "compress_fps": f1,
                   "decompress_fps": f1, "compress_mpx_s": f1, "decompress_mpx_s": f1,
                   "compress_mpx_s_vs_first": "{:.2f}x", "decompress_mpx_s_vs_first": "{:.2f}x"}), "",
            f"`_vs_first`: megapixels/s over that at {r['scaling'][0]['size']}, in the same run.", ""]
