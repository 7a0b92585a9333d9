"""The figures the open issues set targets on, and README.md's headline, worked out from the results of
the other sections."""
from __future__ import annotations

import numpy as np

from adaptok_cli.models.matching import LIT_FROM_THRESHOLD

from .common import ROOT, table
from .rd import at_rate


def markdown(r) -> list[str]:
    """The figures the open issues set targets on, worked out from the sections above."""
    rows = []
    if "rd" in r:
        tau, full = r["threshold"], r["rd"][0]["psnr"]
        lit = [x for x in r["rd"] if x["method"] == "threshold + LIT"] or [
            x for x in r["rd"] if x["method"] == "threshold + hold-fill"]      # no LIT installed
        at = next(x for x in lit if x["param"] == tau)
        clips = r["per_clip"].values()
        best_fill = max(("hold", "interp"), key=lambda f: np.mean([v[f]["psnr"] for v in clips if f in v]))
        fill = np.mean([v[best_fill]["psnr"] for v in clips])
        p57 = at_rate(lit, 0.57)
        rows += [
            ("PSNR at token rate 0.57 (threshold + LIT, interpolated)", ">= 27.6 dB", f"{p57:.2f} dB" if p57 else "-"),
            (f"loss against full rate at the default ({tau:g})", "<= 0.3 dB at rate <= 0.60",
             f"{full - at['psnr']:.2f} dB at rate {at['token_rate']:.3f}"),
            (f"LIT over the best non-learned fill ({best_fill}) at the default", ">= 0.3 dB",
             f"{at['psnr'] - fill:+.2f} dB"),
            ("worst clip, LIT against that fill", ">= -0.05 dB",
             "{:+.2f} dB ({})".format(*min((v["lit"]["psnr"] - v[best_fill]["psnr"], k) for k, v in r["per_clip"].items()))),
            ("worst clip's loss against its full rate", "<= 1.0 dB",
             "{:.2f} dB ({})".format(*max((v["full"]["psnr"] - v["lit"]["psnr"], k) for k, v in r["per_clip"].items()))),
            ("LIT time / decoder at the default" + (" (measured alone)" if "lit_cost" in r else ""), "<= 25%",
             f"{next((x for x in r.get('lit_cost', []) if x['threshold'] == tau), at).get('lit_decoder_time', float('nan')):.1%}")]
    by_size = {x["size"]: x for x in r.get("scaling", [])}
    if {"256x256", "854x480", "1920x1080", "3840x2160"} <= set(by_size):
        s0 = by_size["256x256"]
        for size, bound in (("854x480", 500), ("1920x1080", 1000), ("3840x2160", 2000)):
            x = by_size[size]
            rows.append((f"peak RSS at {size}, compress / decompress", f"{'<' if size == '3840x2160' else '<='} {bound} MB",
                         f"{x['compress_peak_rss_mb']:.0f} / {x['decompress_peak_rss_mb']:.0f} MB"))
        for size in ("854x480", "1920x1080"):
            x = by_size[size]
            rows.append((f"megapixels/s at {size} over 256x256, compress / decompress", ">= 0.80x",
                         f"{x['compress_mpx_s'] / s0['compress_mpx_s']:.2f}x / "
                         f"{x['decompress_mpx_s'] / s0['decompress_mpx_s']:.2f}x"))
    if len(r.get("memory", [])) >= 2:
        short, long = r["memory"][0], r["memory"][-1]
        rows.append((f"peak RSS, {long['seconds_of_video']:g} s against {short['seconds_of_video']:g} s at "
                     f"{short['size']}, compress / decompress", "within 5%",
                     f"{long['peak_rss_compress_mb'] / short['peak_rss_compress_mb'] - 1:+.1%} / "
                     f"{long['peak_rss_decompress_mb'] / short['peak_rss_decompress_mb'] - 1:+.1%}"))
    if not rows:
        return []
    return ["## Targets", "", "Worked out from the tables above; the targets are those of the quality and memory "
            "issues. Experiments that changed nothing shipped (rule variants, LIT designs) are in "
            "docs/EXPERIMENTS.md with their commands.", "",
            table([{"figure": a, "target": b, "measured": c} for a, b, c in rows], ["figure", "target", "measured"]), ""]


def headline(r) -> str:
    """The short table README.md carries (between its headline markers), from the full results."""
    if not all(k in r for k in ("rd", "allocators", "throughput", "codecs")):
        return ""
    tau, full = r["threshold"], r["rd"][0]
    main = next(x for x in r["rd"] if x["param"] == tau and x["method"] in ("threshold + LIT", "threshold + hold-fill"))
    hold = next(x for x in r["rd"] if x["param"] == tau and x["method"] == "threshold + hold-fill")
    t256 = next((x for x in r["throughput"] if x["size"] == "256x256" and not x.get("threshold")),
                r["throughput"][0])
    alloc = {a["allocator"].split()[0]: a["x_single_pass"] for a in r["allocators"]}
    x264 = next((c for c in r["codecs"] if c["codec"] == "libx264"), None)
    rows = [
        ("mean token rate at the default threshold " + f"{tau:g}", f"{main['token_rate']:.3f}"),
        ("PSNR / SSIM as decompressed" + (" (hold-fill at this threshold)" if tau < LIT_FROM_THRESHOLD else " (LIT)"),
         f"{(hold if tau < LIT_FROM_THRESHOLD else main)['psnr']:.2f} dB / "
         f"{(hold if tau < LIT_FROM_THRESHOLD else main)['ssim']:.3f}"),
        ("PSNR with LIT / hold-fill / full rate", f"{main['psnr']:.2f} / {hold['psnr']:.2f} / {full['psnr']:.2f} dB"),
        ("bits per pixel (.atok)", f"{main['bpp']:.3f}"),
        (f"compress / decompress, {t256['size']}, 2-core CPU", f"{t256['fps_compress']:.0f} / {t256['fps_decompress']:.0f} frames/s"),
        ("time of a search allocator (ElasticTok-style) / probe allocator (InfoTok-style), same PSNR",
         f"{alloc.get('search', float('nan')):.1f}x / {alloc.get('probe', float('nan')):.2f}x ours"),
    ]
    if x264:
        rows.append(("libx264 at the same bpp", f"{x264['psnr']:.2f} dB / {x264['ssim']:.3f} at {x264['bpp']:.3f} bpp"))
    return "\n".join(["| dev clips, short side 256 | |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]])


def update_readme(r, readme=ROOT / "README.md"):
    start, end = "<!-- headline:start -->", "<!-- headline:end -->"
    text, table_md = readme.read_text(), headline(r)
    if table_md and start in text and end in text:
        a, b = text.index(start) + len(start), text.index(end)
        readme.write_text(text[:a] + "\n" + table_md + "\n" + text[b:])
