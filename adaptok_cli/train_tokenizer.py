"""Train the built-in tokeniser (TinyTok) on real clips, on the CPU, resumably.

    python -m adaptok_cli.train_tokenizer --out runs/tinytok --steps 40000
    python -m adaptok_cli.train_tokenizer --out runs/tinytok --export adaptok_cli/weights/tinytok.safetensors

Clips are decoded once into a frame cache (uint8 .npy, memory-mapped); each step samples random
crops of random time windows. A checkpoint (weights, EMA weights, optimiser, RNG state, step) is
written every few minutes, so killing and re-running the same command resumes where it stopped.
Only ../shared/data/train/ may train shipped weights: dev/ is refused.

A fine-tune starts from existing weights (--init) and can add two rate terms: --temporal-l1 pulls
small frame-to-frame latent changes to zero (fewer positions cross the masking threshold), and
--hold-weight also decodes latents dropped by the real rule and hold-filled (what decompression sees).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .outputs import atomic_path
from .masking import change
from .tinytok import TinyTok, TinyTokConfig
from .video import VideoReader, VIDEO_EXTENSIONS

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "train"


def read_i420(path, width=320, height=240):
    """Headerless planar I420 (the libvpl sample) -> (T, H, W, 3) uint8, BT.601 limited range."""
    raw = np.fromfile(path, np.uint8)
    fs = width * height * 3 // 2
    out = []
    for i in range(len(raw) // fs):
        f = raw[i * fs:(i + 1) * fs]
        y = f[:width * height].reshape(height, width).astype(np.float32)
        u = f[width * height:width * height * 5 // 4].reshape(height // 2, width // 2).repeat(2, 0).repeat(2, 1)
        v = f[width * height * 5 // 4:].reshape(height // 2, width // 2).repeat(2, 0).repeat(2, 1)
        y, u, v = 1.164 * (y - 16), u.astype(np.float32) - 128, v.astype(np.float32) - 128
        rgb = np.stack([y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u], -1)
        out.append(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    return np.stack(out)


FRAME_CACHE = Path(".cache/tokenizer-frames")   # decoded training clips, shared with train_lit


def build_cache(data: Path, cache: Path, sizes=(256, 400)):
    """Decode every clip in data at each short side once; returns memory-mapped arrays."""
    if "dev" in data.resolve().parts:
        raise SystemExit("refusing to train on dev/: it is for evaluation only")
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS | {".i420"})
    for path in files:
        for s in sizes:
            dst = cache / f"{path.stem}_{s}.npy"
            if not dst.exists():
                if path.suffix == ".i420":
                    frames = read_i420(path)
                    t = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
                    h, w = frames.shape[1:3]
                    size = (s, round(w * s / h)) if h < w else (round(h * s / w), s)
                    frames = F.interpolate(t, size=size, mode="area").round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
                else:
                    with VideoReader(path, short_side=s) as r:
                        frames = np.stack(list(r))
                with atomic_path(dst) as tmp, open(tmp, "wb") as f:
                    np.save(f, frames)
                print(f"cached {dst.name} {frames.shape}", flush=True)
            clips.append(np.load(dst, mmap_mode="r"))
    return clips


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
        if rng.random() < 0.5:
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
    return (y - x).abs().mean() + (y - x).pow(2).mean() + 0.5 * gradient_l1(y, x)


def loss_fn(model, x, temporal_l1=0.0, cap=0.4, hold_weight=0.0, hold_range=(0.1, 0.4)):
    """Reconstruction, plus optional rate terms: the capped latent change, and decoding hold-filled latents."""
    z, _ = model.encode(x)
    y, _ = model.decode(z)
    loss = pixel_loss(y, x) + 1e-3 * z.pow(2).mean()
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
def latent_scale(model, clips, rng, n=32):
    """Per-channel std of latents over random training windows: the masking threshold's unit."""
    zs = []
    for _ in range(n):
        z, _ = model.encode(sample_batch(clips, rng, 1, 256, 9))
        zs.append(z.transpose(0, 2).reshape(z.shape[2], -1))
    return torch.cat(zs, 1).std(1).clamp_min(1e-4)


def export(ckpt_path: Path, dst: Path, clips):
    from .tokenizer import save_tinytok
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    cfg = TinyTokConfig(**ck["config"])
    model = TinyTok(cfg)
    model.load_state_dict(ck["ema"])
    model.eval()
    scale = latent_scale(model, clips, np.random.default_rng(0))
    save_tinytok(model, scale, dst, {"step": str(ck["step"]), "train": json.dumps(ck.get("args", {}))})
    print(f"exported step {ck['step']} to {dst} ({dst.stat().st_size / 1e6:.1f} MB); scale {scale.numpy().round(3)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
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
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    clips = build_cache(args.data, args.cache, tuple(int(s) for s in args.sizes.split(",")))
    ckpt = args.out / "last.pt"
    if args.export:
        return export(ckpt, args.export, clips)

    torch.manual_seed(args.seed)
    cfg = TinyTokConfig()
    model = TinyTok(cfg)
    if args.init:
        from .tokenizer import TinyTokTokenizer
        model = TinyTokTokenizer(args.init).model.train()
        cfg = model.cfg
    ema = TinyTok(cfg)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    step = 0
    if ckpt.exists():
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"]), ema.load_state_dict(ck["ema"]), opt.load_state_dict(ck["opt"])
        rng.bit_generator.state, step = ck["rng"], ck["step"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed from step {step}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "log.jsonl", "a")
    last_ckpt, t0 = time.time(), time.time()
    end = min(args.steps, args.stop_at or args.steps)
    while step < end:
        lr = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        x = sample_batch(clips, rng, args.batch, args.crop, args.frames)
        loss, stats = loss_fn(model, x, args.temporal_l1, args.temporal_cap, args.hold_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            d = min(0.999, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        if step % 50 == 0:
            rec = {"step": step, "loss": round(loss.item(), 5), "lr": lr, "s_per_step": round((time.time() - t0) / 50, 3),
                   **{k: round(v, 4) for k, v in stats.items()}}
            print(json.dumps(rec), file=log, flush=True)
            print(json.dumps(rec), flush=True)
            t0 = time.time()
        if time.time() - last_ckpt > args.ckpt_every or step == end:
            with atomic_path(ckpt) as tmp:
                torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                            "config": cfg.to_dict(), "args": {k: str(v) for k, v in vars(args).items()}}, tmp)
            last_ckpt = time.time()


if __name__ == "__main__":
    main()
