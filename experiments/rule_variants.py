"""Which encoder-side rule keeps the positions that matter, at the same token rate?

    python -m experiments.rule_variants                     # dev clips (not distributed) at short side 256
    python -m experiments.rule_variants --variants mean,rms --thresholds 0.15,0.25

Every variant only changes which positions the encoder keeps; the mask travels in the container, so
the decoder (hold-fill, LIT) is the same and old files are untouched. All judge a position's change
against C_sel, the value the decoder holds, in the shipped unit (--unit decoder):

- mean:   the shipped rule: mean over channels of |z - C_sel| / unit > τ.
- rms:    root-mean-square over channels instead of the mean: a change in a few channels counts more,
          as it does in the decoder's squared pixel error.
- border: mean, plus the 8-neighbours of a kept position whose change exceeds BORDER * τ (the edges
          of moving things, where positions change just under τ and are held).
- age:    mean, plus positions whose held error, summed over the frames since they were last kept,
          exceeds AGE * τ (slow drifts that sit just under τ for many frames).

Each clip is read and encoded once; every variant and threshold is decoded with hold-fill and scored.
The table gives PSNR interpolated at fixed token rates, so the curves compare at equal rate.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from adaptok_cli.core.masking import Selector, change
from bench.clips import CHUNK, codec, reconstruct, unit
from bench.rd import at_rate
from experiments import dev_clips

BORDER = 0.5
AGE = 4.0
RATES = (0.57, 0.60, 0.69)


class VariantSelector(Selector):
    """The threshold rule with one of the variants above (encoder side only)."""

    def __init__(self, scale, threshold, variant):
        super().__init__(scale, threshold=threshold)
        self.variant, self.age_sum = variant, None

    def _by_threshold(self, z, zq, threshold, fixed=None):
        t, _, h, w = z.shape
        keys = self._keyframes(t)
        mask = torch.ones(t, h, w, dtype=torch.bool)
        c_sel = self.c_sel
        acc = torch.zeros(h, w) if self.age_sum is None else self.age_sum
        for i in range(t):
            if keys[i]:
                c_sel, acc = zq[i].clone(), torch.zeros(h, w)
                continue
            if self.variant == "rms":
                d = (((z[i] - c_sel) / self.scale[:, None, None]) ** 2).mean(0).sqrt()
            else:
                d = change(z[i], c_sel, self.scale)
            m = d > threshold
            if self.variant == "border":
                near = F.max_pool2d(m[None, None].float(), 3, 1, 1)[0, 0] > 0
                m = m | (near & (d > BORDER * threshold))
            elif self.variant == "age":
                m = m | (acc + d > AGE * threshold)
            mask[i] = m
            acc = torch.where(m, torch.zeros(()), acc + d)
            c_sel = torch.where(m[None], zq[i], c_sel)
        self.age_sum = acc
        return mask, None, c_sel


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="mean,rms,border,age")
    dev_clips.add_options(ap, "0.15,0.2,0.25,0.3,0.35")
    args = ap.parse_args()
    tok, clips, thresholds = dev_clips.load(args)
    print(f"{len(clips)} clips, {sum(c.frames for c in clips)} frames, chunks of {CHUNK}", flush=True)
    curves = {}
    for variant in args.variants.split(","):
        for tau in thresholds:
            per_clip = []
            for c in clips:
                enc = codec(tok, tau).encoder(VariantSelector(unit(tok), tau, variant))
                per_clip.append(reconstruct(tok, c, [enc.encode_latents(z) for z in c.z]))
            row = {"variant": variant, "threshold": tau,
                   "token_rate": float(np.mean([r["token_rate"] for r in per_clip])),
                   "psnr": float(np.mean([r["psnr"] for r in per_clip])),
                   "psnr_per_clip": [round(r["psnr"], 3) for r in per_clip]}
            curves.setdefault(variant, []).append(row)
            print(json.dumps(row), flush=True)
    print("\n| variant | " + " | ".join(f"PSNR at rate {r}" for r in RATES) + " |")
    print("|---|" + "---|" * len(RATES))
    for variant, rows in curves.items():
        cells = [at_rate(rows, r) for r in RATES]
        print(f"| {variant} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |")


if __name__ == "__main__":
    main()
