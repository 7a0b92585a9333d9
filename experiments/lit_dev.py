"""Does a LIT file beat hold-fill (and the shipped LIT) on the dev clips, decoded as decompress does?

    python -m experiments.lit_dev runs/lit4/lit.safetensors                # dev clips (not distributed)
    python -m experiments.lit_dev A.safetensors B.safetensors --thresholds 0.15,0.25

Each clip is read and encoded once at short side 256 with the shipped rule (--unit decoder); at every
threshold the same masks are decoded with hold-fill, with the shipped LIT and with each file given,
and scored against the input frames (PSNR, mean over clips as docs/BENCHMARKS.md does). LIT's time
against the decoder's is summed over the clips: the issue's budget is at most 25%.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from adaptok_cli.models.matching import ModelRef, shipped_lit
from bench.clips import lit_share, reconstruct, threshold_chunks
from experiments import dev_clips


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lits", nargs="*", type=Path, help="LIT .safetensors files to compare with the shipped one")
    dev_clips.add_options(ap, "0.15,0.25,0.4")
    args = ap.parse_args()
    tok, clips, thresholds = dev_clips.load(args)
    lits = {"shipped": shipped_lit(tok), **{p.stem: ModelRef(p) for p in args.lits}}
    summary = []
    for tau in thresholds:
        coded = [threshold_chunks(tok, c, tau) for c in clips]
        runs = {"hold": [reconstruct(tok, c, m) for c, m in zip(clips, coded)]}
        for name, ref in lits.items():
            runs[name] = [reconstruct(tok, c, m, ref, tau) for c, m in zip(clips, coded)]
        row = {"threshold": tau, "token_rate": float(np.mean([r["token_rate"] for r in runs["hold"]]))}
        for name, rs in runs.items():
            row[f"psnr_{name}"] = float(np.mean([r["psnr"] for r in rs]))
            row[f"per_clip_{name}"] = [round(r["psnr"], 3) for r in rs]
            if name != "hold":
                row[f"lit_share_{name}"] = lit_share(rs)
        summary.append(row)
        print(json.dumps(row), flush=True)
    names = [n for n in lits]
    print("\n| threshold | token rate | hold | " + " | ".join(f"{n} | {n} - hold | {n} worst clip - hold | {n} time / decoder"
                                                        for n in names) + " |")
    print("|---|---|---|" + "---|---|---|---|" * len(names))
    for r in summary:
        cells = []
        for n in names:
            worst = min(a - b for a, b in zip(r[f"per_clip_{n}"], r["per_clip_hold"]))
            cells += [f"{r[f'psnr_{n}']:.2f}", f"{r[f'psnr_{n}'] - r['psnr_hold']:+.2f}", f"{worst:+.2f}",
                      f"{100 * r[f'lit_share_{n}']:.1f}%"]
        print(f"| {r['threshold']:g} | {r['token_rate']:.3f} | {r['psnr_hold']:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
