"""Train the Latent Inpainting Transformer (LIT) for a frozen tokeniser, on the CPU, resumably.

    python -m adaptok_cli.train_lit --out runs/lit
    python -m adaptok_cli.train_lit --out runs/lit --export adaptok_cli/weights/lit-tinytok.safetensors

1. Latents of every clip in ../shared/data/train/ (dev/ is refused) are encoded once with the frozen
   tokeniser and cached on disk (float16 .npy per clip, under --cache/<tokeniser fingerprint>/).
2. Each sample is a window of latent frames, int8-quantised as the container stores them, masked by the
   real rule (Selector against C_sel; a threshold drawn log-uniformly over the useful range, or a
   keep-ratio budget), hold-filled as the decoder does. LIT is told the threshold (or that it was a
   budget), and its correction is bounded by the threshold's L1 ball, exactly as at decompression. A few warm-up frames run first so the window
   starts mid-stream; the previous chunk's frames are given as C_fill context (or none, as for a
   stream's first chunk).
3. The loss is the MSE on dropped positions only, in units of the tokeniser's per-channel scale, each
   channel weighted by how much it moves the frozen decoder's pixels (decoder_channel_weights), divided
   by each sample's hold-fill MSE: every threshold counts alike, not just the coarse ones whose errors
   are largest.
4. The last --val-clips clips of train/ are held out: every --val-every steps the EMA weights are scored
   on a fixed set of their windows, and the best so far is kept in best.pt, which --export ships
   (training longer fits the few training clips better and held-out clips worse).
A checkpoint (weights, EMA, optimiser, RNG, step) is written every few minutes; re-running resumes.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from .outputs import atomic_path
from .lit import LIT, LITConfig, load_lit, project_l1, rate_features, save_lit
from .masking import HoldFill, Selector, dequantise, quantise
from .tokenizer import load_tokenizer, pad_frames
from .train_tokenizer import DEFAULT_DATA, FRAME_CACHE, build_cache

CHUNK = 8   # target latent frames per sample (the default chunk)
LATENT_CACHE = Path(".cache/lit-latents")


@torch.no_grad()
def latent_cache(tok, clips, folder: Path) -> list[np.ndarray]:
    """Encode each cached clip once, streaming chunk by chunk as compress does -> float16 (T, C, h, w)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, frames in enumerate(clips):
        dst = folder / f"clip{i:03d}_{frames.shape[1]}x{frames.shape[2]}.npy"
        if not dst.exists():
            n = 1 + (len(frames) - 1) // tok.time_factor * tok.time_factor     # whole latent frames only
            zs, state, a = [], None, 0
            while a < n:
                b = min(n, a + tok.frames_for(CHUNK, a == 0))
                x = torch.from_numpy(np.asarray(frames[a:b])).permute(0, 3, 1, 2).float() / 127.5 - 1
                z, state = tok.encode(pad_frames(x, tok.pad_multiple), state)
                zs.append(z)
                a = b
            z = torch.cat(zs).half().numpy()
            with atomic_path(dst) as tmp, open(tmp, "wb") as f:
                np.save(f, z)
            print(f"cached latents {dst.name} {z.shape}", flush=True)
        out.append(np.load(dst, mmap_mode="r"))
    return out


def train_latents(tok, data=DEFAULT_DATA, frame_cache=FRAME_CACHE, cache=LATENT_CACHE, sizes=(256,)):
    """Latents of every clip of data at each short side, cached under cache/<tokeniser fingerprint>."""
    return latent_cache(tok, build_cache(data, frame_cache, sizes), cache / tok.fingerprint)


def load_ema(path) -> tuple[LIT, dict]:
    """A training checkpoint (best.pt or last.pt) -> (LIT with its EMA weights, the checkpoint)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = LIT(LITConfig(**ck["config"]))
    model.load_state_dict(ck["ema"])
    return model, ck


def sample_one(z_all, rng, scale, crop, context, threshold="draw"):
    """One training window -> (held, mask, context flag, target, threshold or None), in scale units,
    context + CHUNK frames. threshold: a τ, None for a keep-ratio budget, or "draw" to pick either."""
    first_chunk = rng.random() < 0.2           # a stream's first chunk: its first frame is kept whole
    warm = 0 if first_chunk else context + int(rng.integers(1, 5))
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
        tau = float(math.exp(rng.uniform(math.log(0.05), math.log(0.8)))) if rng.random() < 0.75 else None
    if tau is not None:
        sel = Selector(scale, threshold=tau)
    else:
        sel = Selector(scale, keep_ratio=float(rng.uniform(0.05, 0.9)))
    codes, qscale = quantise(z, "int8")
    zq = dequantise(codes, qscale)
    m = sel.select(z, zq)
    filled = HoldFill().fill(zq.permute(1, 0, 2, 3)[:, m], m)
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
    sc = scale.view(1, -1, 1, 1)
    return held / sc, mask, flag, target / sc, tau


def sample(latents, rng, scale, batch, crop, context, threshold="draw"):
    """-> held (B, T, C, h, w), mask, context flag (B, T, h, w), target (B, T, C, h, w), rate features
    (B, 2), L1 radius of the allowed correction (B,) (inf for budget masks)."""
    items = [sample_one(latents[rng.integers(len(latents))], rng, scale, crop, context, threshold)
             for _ in range(batch)]
    *parts, taus = zip(*items)
    rate = torch.tensor([rate_features(t) for t in taus])
    radius = torch.tensor([math.inf if t is None else t * latents[0].shape[1] for t in taus])
    return (*(torch.stack(p) for p in parts), rate, radius)


@torch.no_grad()
def decoder_channel_weights(tok, latents, clips=4, frames=5, nudge=0.1) -> torch.Tensor:
    """How much the frozen decoder's pixels move per unit (scale units, squared) of change in each latent
    channel, measured by nudging one channel at a time with noise on a few cached clips -> (C,), mean 1.
    The latent MSE weighted by it is the decoder's pixel MSE, linearised and kept diagonal: a pixel
    term through the frozen decoder at no cost per step. (TinyTok's channels differ 40-fold.)"""
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(tok.channels)
    for z_all in latents[::max(1, len(latents) // clips)][:clips]:
        z = torch.from_numpy(np.asarray(z_all[:frames], np.float32))
        base, _ = tok.decode(z)
        for c in range(tok.channels):
            nudged = z.clone()
            nudged[:, c] += nudge * float(tok.scale[c]) * torch.randn(nudged[:, c].shape, generator=g)
            total[c] += ((tok.decode(nudged)[0] - base) ** 2).mean() / nudge ** 2
    return total / total.mean()


def loss_fn(model, held, mask, ctx, target, rate, radius, weights=None):
    """Per sample, MSE on dropped target positions (context frames excluded) over the hold-fill MSE
    there, averaged over the batch; the plain MSEs are returned for the log. weights: (C,) per-channel
    weights of the squared error (decoder_channel_weights), or None for all alike."""
    delta = model(held, mask, ctx, rate)
    delta = project_l1(delta.movedim(2, -1), radius.view(-1, 1, 1, 1, 1)).movedim(-1, 2)
    pred = held + delta
    dropped = ((mask < 0.5) & (ctx < 0.5)).unsqueeze(2).expand_as(pred).float()
    if weights is not None:
        dropped = dropped * weights.view(1, 1, -1, 1, 1)
    err = (((pred - target) ** 2) * dropped).sum((1, 2, 3, 4))
    hold = (((held - target) ** 2) * dropped).sum((1, 2, 3, 4))
    n = dropped.sum().clamp_min(1)
    loss = (err / (hold + 1e-6 * dropped.sum((1, 2, 3, 4)) + 1e-9)).mean()
    return loss, {"loss": loss.item(), "mse": (err.sum() / n).item(), "hold_mse": (hold.sum() / n).item(),
                  "dropped": dropped.mean().item()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
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
    ap.add_argument("--val-clips", type=int, default=2, help="clips of --data held out to pick the best step")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--channel-weights", choices=("flat", "decoder"), default="decoder",
                    help="weigh each latent channel's error alike, or by how much it moves the decoded pixels")
    ap.add_argument("--export", type=Path, help="write the best (else the last) EMA weights here and exit")
    ap.add_argument("--init", type=Path,
                    help="start from these LIT weights (a fine-tune, e.g. after the tokeniser was fine-tuned)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.tokenizer)
    ckpt = args.out / "last.pt"
    cfg = LITConfig(channels=tok.channels, pos_period=args.crop, span=CHUNK)
    if args.export:
        best = args.out / "best.pt"
        model, ck = load_ema(best if best.exists() else ckpt)
        save_lit(model, args.export, tok.fingerprint, {"step": str(ck["step"]), "train": json.dumps(ck["args"])})
        print(f"exported step {ck['step']} to {args.export} ({args.export.stat().st_size / 1e3:.0f} KB)")
        return
    latents = train_latents(tok, args.data, args.frame_cache, args.cache, tuple(int(s) for s in args.sizes.split(",")))
    n_val = min(args.val_clips, len(latents) - 1)
    train, held_out = latents[:len(latents) - n_val], latents[len(latents) - n_val:]
    weights = decoder_channel_weights(tok, latents) if args.channel_weights == "decoder" else None
    if weights is not None:
        print("decoder channel weights " + " ".join(f"{w:.2f}" for w in weights), flush=True)
    val_rng = np.random.default_rng(12345)
    val = [sample(held_out, val_rng, tok.scale, args.batch, args.crop, cfg.context) for _ in range(6)] if n_val else []

    torch.manual_seed(args.seed)
    model, ema = LIT(cfg), LIT(cfg)
    if args.init:
        model.load_state_dict(load_lit(args.init)[0].state_dict())
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    step, best_val = 0, math.inf
    if ckpt.exists():
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"]), ema.load_state_dict(ck["ema"]), opt.load_state_dict(ck["opt"])
        rng.bit_generator.state, step = ck["rng"], ck["step"]
        best_val = ck.get("best_val", math.inf)
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed from step {step}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "log.jsonl", "a")
    end = min(args.steps, args.stop_at or args.steps)
    last_ckpt, t0, acc = time.time(), time.time(), []
    while step < end:
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = sample(train, rng, tok.scale, args.batch, args.crop, cfg.context)
        loss, stats = loss_fn(model, *batch, weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        acc.append(stats)
        with torch.no_grad():
            d = min(0.998, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        if step % 25 == 0 or step == end:
            rec = {"step": step, "lr": lr, "s_per_step": round((time.time() - t0) / len(acc), 3),
                   **{k: round(float(np.mean([a[k] for a in acc])), 5) for k in acc[0]}}
            rec["gain_vs_hold"] = round(rec["hold_mse"] / max(rec["mse"], 1e-9), 3)
            if val and (step % args.val_every == 0 or step == end):
                with torch.no_grad():
                    vs = [loss_fn(ema, *b, weights=weights)[1] for b in val]
                rec["val_loss"] = round(float(np.mean([v["loss"] for v in vs])), 5)
                rec["val_gain_vs_hold"] = round(sum(v["hold_mse"] for v in vs) / max(sum(v["mse"] for v in vs), 1e-9), 3)
                if rec["val_loss"] < best_val:
                    best_val = rec["val_loss"]
                    with atomic_path(args.out / "best.pt") as tmp:
                        torch.save({"ema": ema.state_dict(), "step": step, "val_loss": best_val, "config": cfg.to_dict(),
                                    "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
            print(json.dumps(rec), file=log, flush=True)
            print(json.dumps(rec), flush=True)
            t0, acc = time.time(), []
        if time.time() - last_ckpt > args.ckpt_every or step == end:
            with atomic_path(ckpt) as tmp:
                torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                            "best_val": best_val, "config": cfg.to_dict(),
                            "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
            last_ckpt = time.time()


if __name__ == "__main__":
    main()
