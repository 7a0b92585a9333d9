"""How much LIT improves on hold-fill, in latent MSE on dropped positions, threshold by threshold.

    python -m experiments.lit_gain                       # shipped LIT; held-out train/ clips and dev/ clips
    python -m experiments.lit_gain --lit runs/lit/best.pt

Windows are drawn exactly as training.lit draws them (streams' first chunks included), but at each fixed
threshold, from the clips training.lit holds out of training and from the dev clips (evaluation only:
nothing here trains). Telling these apart says whether LIT's weakness is the model or the data.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from adaptok_cli.models.matching import shipped_lit
from adaptok_cli.models.tokenizer import load_tokenizer
from adaptok_cli.training.data import DEV, latent_cache, train_latents
from adaptok_cli.training.lit import load_ema, loss_fn, sample
from adaptok_cli.running.video import VideoReader, is_video_path


def dev_frames(short_side: int) -> list[np.ndarray]:
    files = sorted(p for p in DEV.iterdir() if is_video_path(p))
    out = []
    for path in files:
        with VideoReader(path, short_side=short_side) as r:
            out.append(np.stack(list(r)))
    return out


def gains(model, latents, tok, thresholds, windows, crop, seed=0) -> dict:
    """threshold -> (hold MSE / LIT MSE over all dropped positions, share of positions dropped)."""
    res, batches = {}, windows // 16
    for tau in thresholds:
        rng = np.random.default_rng(seed)
        err = hold = dropped = 0.0
        with torch.no_grad():
            for _ in range(batches):
                s = loss_fn(model, *sample(latents, rng, tok, 16, crop, model.cfg.context, tau, model.cfg.base))[1]
                err, hold, dropped = err + s["mse"] * s["dropped"], hold + s["hold_mse"] * s["dropped"], dropped + s["dropped"]
        res[tau] = (round(hold / max(err, 1e-12), 3), round(dropped / batches, 3))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lit", help="a best.pt/last.pt checkpoint (EMA weights); default: the shipped LIT")
    ap.add_argument("--thresholds", default="0.05,0.1,0.15,0.25,0.4,0.6")
    ap.add_argument("--windows", type=int, default=192)
    ap.add_argument("--crop", type=int, default=16)
    ap.add_argument("--val-clips", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = load_tokenizer("tinytok")
    model = (load_ema(args.lit)[0] if args.lit else shipped_lit(tok).load_lit()).eval()
    taus = [float(t) for t in args.thresholds.split(",")]
    train = train_latents(tok)
    held_out = train[len(train) - args.val_clips:]
    dev = latent_cache(tok, dev_frames(256), Path(".cache/lit-gain-dev") / tok.fingerprint)
    rows = {"held-out train": gains(model, held_out, tok, taus, args.windows, args.crop),
            "dev": gains(model, dev, tok, taus, args.windows, args.crop)}
    print("threshold  " + "  ".join(f"{k:>22}" for k in rows))
    for tau in taus:
        print(f"{tau:9.2f}  " + "  ".join(f"gain {rows[k][tau][0]:5.3f} dropped {rows[k][tau][1]:4.2f}" for k in rows))
    print(json.dumps({k: {str(t): v for t, v in r.items()} for k, r in rows.items()}))


if __name__ == "__main__":
    main()
