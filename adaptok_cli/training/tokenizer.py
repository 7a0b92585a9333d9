"""Train the built-in tokeniser (TinyTok) on the train clips, on the CPU, resumably.

    python -m adaptok_cli.training.tokenizer --out runs/tinytok --steps 40000
    python -m adaptok_cli.training.tokenizer --out runs/tinytok --export adaptok_cli/weights/tinytok.safetensors

Each step samples random crops of random time windows from the frame cache (data.py). A fine-tune
starts from existing weights (--init) and can add two rate terms: --temporal-l1 pulls small
frame-to-frame latent changes to zero (fewer positions cross the masking threshold), and
--hold-weight also decodes latents dropped by the real rule and hold-filled (what decompression sees).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from adaptok_cli.core.masking import change
from adaptok_cli.models.tinytok import TinyTok, TinyTokConfig
from adaptok_cli.models.tokenizer import TinyTokTokenizer, save_tinytok
from adaptok_cli.training.data import FRAME_CACHE, TRAIN, build_cache
from adaptok_cli.training.loop import LoopConfig, Trainer, args_of

LATENT_L2 = 1e-3            # keeps the latents near zero (their scale is measured after training)
GRADIENT_WEIGHT = 0.5       # of the edge term in the pixel loss
FLIP = 0.5                  # chance of a horizontal flip per sample
SCALE_WINDOWS = 32          # windows the exported per-channel scale is measured on


def sample_batch(clips, rng: np.random.Generator, batch, crop, frames):
    """Random crops of random windows (stride 1-2, random flip) -> (B, T, 3, crop, crop) in [-1, 1]."""
    weights = np.array([len(c) for c in clips], np.float64)
    out = []
    for _ in range(batch):
        c = clips[rng.choice(len(clips), p=weights / weights.sum())]
        stride = int(rng.integers(1, 3))
        while stride > 1 and (frames - 1) * stride + 1 > len(c):
            stride -= 1
        span = (frames - 1) * stride + 1
        t0 = int(rng.integers(0, max(1, len(c) - span + 1)))
        idx = np.minimum(np.arange(t0, t0 + span, stride), len(c) - 1)
        h, w = c.shape[1:3]
        ch, cw = min(crop, h), min(crop, w)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        x = np.asarray(c[idx, y0:y0 + ch, x0:x0 + cw])
        if ch < crop or cw < crop:
            x = np.pad(x, ((0, 0), (0, crop - ch), (0, crop - cw), (0, 0)), mode="edge")
        if rng.random() < FLIP:
            x = x[:, :, ::-1]
        out.append(np.ascontiguousarray(x))
    x = torch.from_numpy(np.stack(out)).permute(0, 1, 4, 2, 3).float()
    return x / 127.5 - 1


def gradient_l1(a, b):
    """L1 between horizontal and vertical finite differences: keeps edges sharp."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def channel_spread(z):
    """Per-channel std of (B, G, C, h, w) latents over the batch: the unit of the masking rule."""
    return z.transpose(1, 2).reshape(z.shape[0], z.shape[2], -1).std(dim=(0, 2)).clamp_min(1e-4)


def temporal_change(z, cap):
    """The masking rule's change between consecutive latent frames, capped: a rate proxy.

    Change is the mean over channels of |z_t - z_t-1| in units of each channel's spread in the batch
    (so shrinking the latents cannot lower it). Capped at `cap`: positions that change more are kept
    at any useful threshold, and pulling them down would only cost quality.
    """
    return change(z[:, 1:], z[:, :-1], channel_spread(z)).clamp(max=cap).mean()


def hold_filled(z, thresholds):
    """The real dropping rule against C_sel, then hold-fill: what the decoder sees at those thresholds.

    thresholds: (B,) one per sample. The mask is not differentiable; the held values are.
    """
    unit = channel_spread(z).detach()
    c_sel, out = z[:, 0], [z[:, 0]]
    for t in range(1, z.shape[1]):
        with torch.no_grad():
            keep = change(z[:, t], c_sel, unit) > thresholds[:, None, None]
        c_sel = torch.where(keep[:, None], z[:, t], c_sel)
        out.append(c_sel)
    return torch.stack(out, 1)


def pixel_loss(y, x):
    return (y - x).abs().mean() + (y - x).pow(2).mean() + GRADIENT_WEIGHT * gradient_l1(y, x)


def loss_fn(model, x, temporal_l1=0.0, cap=0.4, hold_weight=0.0, hold_range=(0.1, 0.4)):
    """Reconstruction, plus optional rate terms: the capped latent change, and decoding hold-filled latents."""
    z, _ = model.encode(x)
    y, _ = model.decode(z)
    loss = pixel_loss(y, x) + LATENT_L2 * z.pow(2).mean()
    moved = temporal_change(z, cap)
    loss = loss + temporal_l1 * moved
    if hold_weight:
        tau = torch.empty(z.shape[0]).uniform_(*hold_range)
        y_hold, _ = model.decode(hold_filled(z, tau))
        loss = loss + hold_weight * pixel_loss(y_hold, x)
    return loss, {"l1": (y - x).abs().mean().item(),
                  "psnr": (10 * math.log10(4 / max((y - x).pow(2).mean().item(), 1e-10))),
                  "z_std": z.std().item(), "change": moved.item()}


@torch.no_grad()
def latent_scale(model, clips, rng, n=SCALE_WINDOWS):
    """Per-channel std of latents over random training windows: the masking threshold's unit."""
    zs = []
    for _ in range(n):
        z, _ = model.encode(sample_batch(clips, rng, 1, 256, 9))
        zs.append(z.transpose(0, 2).reshape(z.shape[2], -1))
    return torch.cat(zs, 1).std(1).clamp_min(1e-4)


def export(ckpt_path: Path, dst: Path, clips):
    """The EMA weights of a checkpoint, with the per-channel scale measured on the train clips."""
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model = TinyTok(TinyTokConfig(**ck["config"]))
    model.load_state_dict(ck["ema"])
    model.eval()
    scale = latent_scale(model, clips, np.random.default_rng(0))
    save_tinytok(model, scale, dst, {"step": str(ck["step"]), "train": json.dumps(ck.get("args", {}))})
    print(f"exported step {ck['step']} to {dst} ({dst.stat().st_size / 1e6:.1f} MB); scale {scale.numpy().round(3)}")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=TRAIN)
    ap.add_argument("--cache", type=Path, default=FRAME_CACHE)
    ap.add_argument("--out", type=Path, default=Path("runs/tinytok"))
    ap.add_argument("--steps", type=int, default=40000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--frames", type=int, default=13, help="1 + 4k frames per sample")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="256,400", help="short sides the clips are cached at")
    ap.add_argument("--stop-at", type=int, help="save and stop at this step (the schedule still follows --steps)")
    ap.add_argument("--ckpt-every", type=float, default=300, help="seconds between checkpoints")
    ap.add_argument("--export", type=Path, help="write the EMA weights of the last checkpoint here and exit")
    ap.add_argument("--init", type=Path, help="start from these tinytok weights (a fine-tune) instead of random ones")
    ap.add_argument("--temporal-l1", type=float, default=0.0,
                    help="weight of the capped frame-to-frame latent change (a rate term: 0 = off)")
    ap.add_argument("--temporal-cap", type=float, default=0.4, help="cap of that change, in latent spreads")
    ap.add_argument("--hold-weight", type=float, default=0.0,
                    help="weight of a second reconstruction from latents dropped at a random threshold and hold-filled")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    clips = build_cache(args.data, args.cache, tuple(int(s) for s in args.sizes.split(",")))
    if args.export:
        return export(args.out / "last.pt", args.export, clips)
    torch.manual_seed(args.seed)
    model = TinyTokTokenizer(args.init).model.train() if args.init else TinyTok(TinyTokConfig())
    cfg = LoopConfig(args.out, args.steps, args.lr, args.stop_at, min_lr=0.02, ema=0.999, seed=args.seed,
                     ckpt_every=args.ckpt_every, log_every=50)
    t = Trainer(cfg, model, {"config": model.cfg.to_dict(), "args": args_of(args)})
    t.run(lambda: loss_fn(model, sample_batch(clips, t.rng, args.batch, args.crop, args.frames),
                          args.temporal_l1, args.temporal_cap, args.hold_weight))


if __name__ == "__main__":
    main()
