"""Train the Latent Inpainting Transformer (LIT) for a frozen tokeniser, on the CPU, resumably.

    python -m adaptok_cli.training.lit --out runs/lit
    python -m adaptok_cli.training.lit --out runs/lit --export adaptok_cli/weights/lit-tinytok.safetensors

1. Latents of every train clip are encoded once with the frozen tokeniser and cached (data.py).
2. Each sample is a window of latent frames, int8-quantised as the container stores them, masked by the
   real rule (a threshold drawn log-uniformly over the useful range, or a keep-ratio budget) and filled
   as the decoder fills them (codec.drop_and_fill). LIT is told the threshold (or that it was a budget),
   and its correction is bounded by the threshold's L1 ball, exactly as at decompression. A few warm-up
   frames run first so the window starts mid-stream; the previous chunk's filled frames are given as
   C_fill context (or none, as for a stream's first chunk).
3. The loss is the MSE on dropped positions only, in units of the tokeniser's per-channel scale, each
   channel weighted by how much it moves the frozen decoder's pixels (decoder_channel_weights), divided
   by each sample's fill MSE: every threshold counts alike, not just the coarse ones whose errors
   are largest.
4. The last --val-clips clips are held out: every --val-every steps the EMA weights are scored on a
   fixed set of their windows, and the best so far is kept in best.pt, which --export ships.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from adaptok_cli.core.codec import LATENT_FILLS, Rule, drop_and_fill
from adaptok_cli.core.lit import LIT, LITConfig, bounded, load_lit, rate_features, save_lit
from adaptok_cli.models.tokenizer import load_tokenizer
from adaptok_cli.models.calibration import decoder_sensitivity, probe_windows, rule_unit
from adaptok_cli.defaults import UNITS
from adaptok_cli.training.data import FRAME_CACHE, LATENT_CACHE, TRAIN, train_latents
from adaptok_cli.training.loop import LoopConfig, Trainer, args_of

CHUNK = 8                      # latent frames per sample (the default chunk)
FIRST_CHUNK_SHARE = 0.2        # samples that start a stream (no C_fill yet)
WARM_UP = (1, 5)               # latent frames run before a mid-stream window, beside the context
TAU_RANGE = (0.05, 0.8)        # thresholds are drawn log-uniformly from here ...
THRESHOLD_SHARE = 0.75         # ... for this share of samples; the rest are keep-ratio budgets
KEEP_RATIO_RANGE = (0.05, 0.9)
HOLD_FLOOR = 1e-6              # per dropped value, keeps the loss finite where the fill is exact
VAL_SEED, VAL_BATCHES = 12345, 6


def load_ema(path) -> tuple[LIT, dict]:
    """A training checkpoint (best.pt or last.pt) -> (LIT with its EMA weights, the checkpoint)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = LIT(LITConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["ema"])
    return model, ck


def sample_one(z_all, rng, tok, crop, context, threshold="draw", base="hold", spread=None, unit=None):
    """One training window -> (held, mask, context flag, target, threshold or None), in units of the
    spread (None: tok.scale), context + CHUNK frames. threshold: a τ, None for a keep-ratio budget, or
    "draw" to pick either. unit: the rule's unit (None: tok.scale), as the container will record it."""
    first_chunk = rng.random() < FIRST_CHUNK_SHARE          # a stream's first chunk: its first frame is kept whole
    warm = 0 if first_chunk else context + int(rng.integers(*WARM_UP))
    length = warm + CHUNK
    t0 = int(rng.integers(0, max(1, len(z_all) - length + 1)))
    z = torch.from_numpy(np.asarray(z_all[t0:t0 + length], np.float32))
    if len(z) < length:                       # a short clip: a still tail
        z = torch.cat([z, z[-1:].expand(length - len(z), -1, -1, -1)])
    h, w = z.shape[2:]
    y0, x0 = int(rng.integers(0, h - min(crop, h) + 1)), int(rng.integers(0, w - min(crop, w) + 1))
    z = z[:, :, y0:y0 + crop, x0:x0 + crop]
    if z.shape[2:] != (crop, crop):
        z = torch.nn.functional.pad(z, (0, crop - z.shape[3], 0, crop - z.shape[2]), mode="replicate")
    tau = threshold
    if tau == "draw":
        tau = float(math.exp(rng.uniform(*np.log(TAU_RANGE)))) if rng.random() < THRESHOLD_SHARE else None
    rule = (Rule(threshold=tau, unit=unit) if tau is not None
            else Rule(keep_ratio=float(rng.uniform(*KEEP_RATIO_RANGE)), unit=unit))
    m, zq, filled = drop_and_fill(tok, z, rule, fill=base)
    if first_chunk:
        ctx = zq[:1].expand(context, -1, -1, -1)          # what Inpainter uses before any C_fill exists
    else:
        # C_fill at decompression is LIT's output for the previous chunk, a small step from hold-fill. Never
        # the truth: a model shown true context learns to lean on it and then fails at decompression.
        ctx = filled[warm - context:warm]
    held = torch.cat([ctx, filled[warm:]])
    target = torch.cat([ctx, z[warm:]])
    mask = torch.cat([torch.ones(context, crop, crop), m[warm:].float()])
    flag = torch.cat([torch.ones(context, crop, crop), torch.zeros(CHUNK, crop, crop)])
    sc = (tok.scale if spread is None else spread).view(1, -1, 1, 1)
    return held / sc, mask, flag, target / sc, tau


def sample(latents, rng, tok, batch, crop, context, threshold="draw", base="hold", spread=None, unit=None):
    """-> held (B, T, C, h, w), mask, context flag (B, T, h, w), target (B, T, C, h, w), rate features
    (B, 2), the threshold that bounds the correction (B,) (inf for budget masks)."""
    items = [sample_one(latents[rng.integers(len(latents))], rng, tok, crop, context, threshold, base, spread, unit)
             for _ in range(batch)]
    *parts, taus = zip(*items)
    rate = torch.tensor([rate_features(t) for t in taus])
    tau = torch.tensor([math.inf if t is None else t for t in taus])
    return (*(torch.stack(p) for p in parts), rate, tau)


def decoder_channel_weights(tok, latents, clips=4, frames=5) -> torch.Tensor:
    """How much the frozen decoder's pixels move per unit (scale units, squared) of change in each latent
    channel (calibration.decoder_sensitivity on a few cached clips) -> (C,), mean 1. The latent MSE
    weighted by it is the decoder's pixel MSE, linearised and kept diagonal: a pixel term through the
    frozen decoder at no cost per step. (TinyTok's channels differ 40-fold.)"""
    return decoder_sensitivity(tok, probe_windows(latents, clips, frames), tok.scale)


def loss_fn(model, held, mask, ctx, target, rate, tau, weights=None, to_unit=None):
    """Per sample, MSE on dropped target positions (context frames excluded) over the hold-fill MSE
    there, averaged over the batch; the plain MSEs are returned for the log. weights: (C,) per-channel
    weights of the squared error (decoder_channel_weights), or None for all alike. to_unit: (C,) spread
    over the rule's unit, where the correction is bounded (None: they are the same)."""
    delta = model(held, mask, ctx, rate)
    delta = bounded(delta, tau.view(-1, 1, 1, 1, 1), 1 if to_unit is None else to_unit.view(-1, 1, 1))
    pred = held + delta
    dropped = ((mask < 0.5) & (ctx < 0.5)).unsqueeze(2).expand_as(pred).float()
    if weights is not None:
        dropped = dropped * weights.view(1, 1, -1, 1, 1)
    err = (((pred - target) ** 2) * dropped).sum((1, 2, 3, 4))
    hold = (((held - target) ** 2) * dropped).sum((1, 2, 3, 4))
    n = dropped.sum().clamp_min(1)
    loss = (err / (hold + HOLD_FLOOR * dropped.sum((1, 2, 3, 4)) + 1e-9)).mean()
    return loss, {"loss": loss.item(), "mse": (err.sum() / n).item(), "hold_mse": (hold.sum() / n).item(),
                  "dropped": dropped.mean().item()}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=TRAIN)
    ap.add_argument("--tokenizer", default="tinytok")
    ap.add_argument("--frame-cache", type=Path, default=FRAME_CACHE)
    ap.add_argument("--cache", type=Path, default=LATENT_CACHE)
    ap.add_argument("--out", type=Path, default=Path("runs/lit"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--stop-at", type=int, help="save and stop at this step (the schedule still follows --steps)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=16, help="latent positions per side of a sample")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="256", help="short sides of the clips the latents are taken at")
    ap.add_argument("--ckpt-every", type=float, default=180, help="seconds between checkpoints")
    ap.add_argument("--val-clips", type=int, default=2, help="clips held out to pick the best step")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--channel-weights", choices=("flat", "decoder"), default="decoder",
                    help="weigh each latent channel's error alike, or by how much it moves the decoded pixels")
    ap.add_argument("--base", choices=LATENT_FILLS, default="hold", help="the fill LIT learns to correct")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--export", type=Path, help="write the best (else the last) EMA weights here and exit")
    ap.add_argument("--init", type=Path, help="start from these LIT weights (a fine-tune)")
    ap.add_argument("--unit", choices=UNITS, default="spread",
                    help="the rule's unit the masks are drawn with and the correction is bounded in "
                         "(decoder: what compress uses by default since format 4)")
    return ap.parse_args(argv)


def export(args, tok):
    best, last = args.out / "best.pt", args.out / "last.pt"
    model, ck = load_ema(best if best.exists() else last)
    save_lit(model, args.export, tok.fingerprint, {"step": str(ck["step"]), "train": json.dumps(ck["args"])})
    print(f"exported step {ck['step']} to {args.export} ({args.export.stat().st_size / 1e3:.0f} KB)")


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.tokenizer)
    if args.export:
        return export(args, tok)
    cfg = LITConfig(channels=tok.channels, pos_period=args.crop, span=CHUNK, layers=args.layers, base=args.base)
    latents = train_latents(tok, args.data, args.frame_cache, args.cache, tuple(int(s) for s in args.sizes.split(",")))
    n_val = min(args.val_clips, len(latents) - 1)
    train, held_out = latents[:len(latents) - n_val], latents[len(latents) - n_val:]
    weights = decoder_channel_weights(tok, latents) if args.channel_weights == "decoder" else None
    if weights is not None:
        print("decoder channel weights " + " ".join(f"{w:.2f}" for w in weights), flush=True)
    unit = rule_unit(tok, args.unit)[1]
    to_unit = tok.scale / unit
    draw = dict(tok=tok, batch=args.batch, crop=args.crop, context=cfg.context, base=cfg.base, unit=unit)
    val_rng = np.random.default_rng(VAL_SEED)
    val = [sample(held_out, val_rng, **draw) for _ in range(VAL_BATCHES)] if n_val else []
    torch.manual_seed(args.seed)
    model = LIT(cfg)
    if args.init:
        missing, unexpected = model.load_state_dict(load_lit(args.init)[0].state_dict(), strict=False)
        if unexpected or missing:
            raise SystemExit(f"--init {args.init}: weights do not fit this LIT ({(missing + unexpected)[:3]})")
    loop = LoopConfig(args.out, args.steps, args.lr, args.stop_at, warmup=200, min_lr=0.05, ema=0.998,
                      seed=args.seed, ckpt_every=args.ckpt_every, log_every=25)
    t = Trainer(loop, model, {"config": cfg.to_dict(), "args": args_of(args)})
    t.extra.setdefault("best_val", math.inf)

    def on_log(rec):
        rec["gain_vs_hold"] = round(rec["hold_mse"] / max(rec["mse"], 1e-9), 3)
        if val and (t.step % args.val_every == 0 or t.step == min(args.steps, args.stop_at or args.steps)):
            with torch.no_grad():
                vs = [loss_fn(t.ema, *b, weights=weights, to_unit=to_unit)[1] for b in val]
            rec["val_loss"] = round(float(np.mean([v["loss"] for v in vs])), 5)
            rec["val_gain_vs_hold"] = round(sum(v["hold_mse"] for v in vs) / max(sum(v["mse"] for v in vs), 1e-9), 3)
            if rec["val_loss"] < t.extra["best_val"]:
                t.extra["best_val"] = rec["val_loss"]
                t.save(args.out / "best.pt", ema_only=True, val_loss=rec["val_loss"])

    def step():
        loss, stats = loss_fn(model, *sample(train, t.rng, **draw), weights=weights, to_unit=to_unit)
        stats.pop("loss")
        return loss, stats

    t.run(step, on_log)


if __name__ == "__main__":
    main()
