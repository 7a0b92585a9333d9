"""Section `throughput`: compress and decompress end to end on a generated clip, with each stage's share."""
from __future__ import annotations

from pathlib import Path

from .common import moving_video, ran, table


def throughput(tok, sizes, frames, tmp, log):
    import adaptok_cli as atk
    rows = []
    for w, h, threshold in sizes:
        src = moving_video(Path(tmp) / f"t{w}x{h}.mp4", w, h, frames)
        c = atk.compress(src, Path(tmp) / f"t{w}.atok", loaded_tokenizer=tok, force=True, threshold=threshold)
        d = atk.decompress(Path(tmp) / f"t{w}.atok", Path(tmp) / f"t{w}.mkv", force=True)
        ct, dt = dict(c.timing), dict(d.timing)        # busy seconds per stage; stages overlap
        rows.append({"size": f"{w}x{h}", "threshold": threshold, "frames": frames, "fps_compress": frames / c.seconds,
                     "fps_decompress": frames / d.seconds, "fps_tokeniser_encode": frames / c.timing["encode"],
                     "fps_tokeniser_decode": frames / d.timing["decode"],
                     "compress_shares": {k: v / c.seconds for k, v in ct.items()},
                     "decompress_shares": {k: v / d.seconds for k, v in dt.items()}})
        log(rows[-1])
    return rows


def markdown(r) -> list[str]:
    rows = [{"size": x["size"], "threshold": x.get("threshold") or "default", "frames": x["frames"], "compress fps": x["fps_compress"],
             "decompress fps": x["fps_decompress"], "tokeniser encode fps": x.get("fps_tokeniser_encode"),
             "tokeniser decode fps": x.get("fps_tokeniser_decode"),
             "compress time shares": ", ".join(f"{k} {v:.0%}" for k, v in x["compress_shares"].items()),
             "decompress time shares": ", ".join(f"{k} {v:.0%}" for k, v in x["decompress_shares"].items())}
            for x in r["throughput"]]
    return ["## Throughput", "", ran(r, "throughput"), "",
            "A generated clip (panning texture, moving square) through `adaptok_cli.compress` and `decompress`, "
            "end to end including video reading and writing, at the default threshold and at 0.4 (where "
            "decompression runs LIT).", "",
            table(rows, list(rows[0]), {"compress fps": "{:.1f}", "decompress fps": "{:.1f}",
                                        "tokeniser encode fps": "{:.1f}", "tokeniser decode fps": "{:.1f}"}),
            "", "The tokeniser columns count the network alone (frames / time inside encode or decode). A time "
            "share is a stage's busy time over the wall time; the stages run at once (adaptok_cli/running/overlap.py), so "
            "the shares can add up to more than 100%.", ""]
