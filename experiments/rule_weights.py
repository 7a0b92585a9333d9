"""What if the dropping rule weighed each latent channel by how much it moves the decoded pixels?

    python -m experiments.rule_weights                  # dev clips at short side 256, hold-fill, no LIT

The rule measures change as the mean over channels of |z - C_sel| / scale. TinyTok's scale is each
channel's spread, but its decoder is ~40 times more sensitive to some channels than to others
(training.lit.decoder_channel_weights). Scaling channel c by scale_c / sqrt(w_c) instead makes one unit
of change cost the same pixel error in every channel. This script compares the two rules on the same
clips, hold-fill only (LIT is trained for the shipped scale), at several thresholds, so that the
curves of token rate against PSNR can be set side by side.
"""
from __future__ import annotations

import argparse
import copy
import json

import torch

from adaptok_cli.measure.evaluate import evaluate, mean_of
from adaptok_cli.running.options import CompressOptions
from adaptok_cli.models.tokenizer import load_tokenizer
from adaptok_cli.training.data import DEV, train_latents
from adaptok_cli.training.lit import decoder_channel_weights
from adaptok_cli.running.video import is_video_path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thresholds", default="0.1,0.15,0.25,0.4")
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--rules", default="shipped,weighted", help="which rules to run: shipped, weighted or both")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = load_tokenizer("tinytok")
    w = decoder_channel_weights(tok, train_latents(tok))
    weighted = copy.copy(tok)
    s = tok.scale / w.sqrt()
    weighted.scale = s * (tok.scale.log().mean() - s.log().mean()).exp()   # same geometric mean
    print("decoder channel weights " + " ".join(f"{x:.2f}" for x in w), flush=True)
    clips = sorted(p for p in DEV.iterdir() if is_video_path(p))
    rows = []
    rules = {"shipped": ("scale (shipped)", tok), "weighted": ("decoder-weighted", weighted)}
    for name, t in (rules[r] for r in args.rules.split(",")):
        for tau in (float(x) for x in args.thresholds.split(",")):
            opts = CompressOptions(threshold=tau, short_side=args.short_side)
            m = mean_of([evaluate(c, opts, use_lit=False, tokenizer=t, upscale=True) for c in clips])
            rows.append({"rule": name, "threshold": tau, "token_rate": round(m["token_rate"], 4),
                         "psnr_hold_fill": round(m["psnr_hold_fill"], 3), "psnr_full_rate": round(m["psnr_full_rate"], 3)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| rule | threshold | token rate | PSNR hold-fill | loss vs full rate (dB) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rule']} | {r['threshold']:g} | {r['token_rate']:.3f} | {r['psnr_hold_fill']:.2f} | "
              f"{r['psnr_full_rate'] - r['psnr_hold_fill']:.2f} |")


if __name__ == "__main__":
    main()
