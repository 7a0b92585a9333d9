"""Does a model trained on adaptok latents learn as well as one trained on full latents? (issue 30)

    nohup nice -n 5 python -m experiments.latent_ab > runs/latent_ab/log 2>&1 &
    python -m experiments.latent_ab --summary-only          # the table and figure from the runs so far

The same small next-latent-frame predictor (given latent frames t-k..t-1, predict t) is trained on
TinyTok latents of the train clips from five sources (and a diagnostic arm), and every one is evaluated on the dev clips'
full-rate fp32 latents (held out; nothing trains on them):

    fp32    the latents as the tokeniser gives them (one safetensors file per clip)
    bf16    the same, stored as bf16 safetensors (what most caches hold)
    hold    .atok at the threshold, read dense with hold-fill (AtokDataset, mode="dense")
    lit     .atok at the threshold, read dense with LIT filling dropped positions (fill="lit")
    sparse  .atok read sparse (mode="sparse"): the model sees only kept tokens (zeros and a mask
            channel elsewhere) and its loss counts only kept target positions
    hold-kept  (a diagnostic) hold's inputs with sparse's loss: which of the two makes sparse differ

Every arm gets the same model, initial weights and windows for a seed, so arms differ only in their
data. Latents are encoded once per clip and the .atok files written once with `adaptok_cli.compress`
(cached under --out/cache); each (arm, seed) result is saved as it finishes and skipped on a rerun.
Times: each arm's one pass over the train set through its reader ("load", measured when the cache is
built), every step's wall and CPU time, and each arm's batch assembly timed with the arms interleaved
(the sparse arm builds its dense input from tokens and mask each step); summarise() puts the arms at
equal time from these parts, since on a shared machine the runs' own wall times follow other users' load.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

import adaptok_cli as atk
from adaptok_cli.core.codec import Codec, Rule
from adaptok_cli.defaults import DEFAULT_CHUNK, DEFAULT_THRESHOLD
from adaptok_cli.running.outputs import atomic_path
from adaptok_cli.models.tokenizer import load_tokenizer
from adaptok_cli.training.data import DATA
from adaptok_cli.running.video import VideoReader, is_video_path

ARMS = ("fp32", "bf16", "hold", "lit", "sparse", "hold-kept")
MASKED = ("sparse", "hold-kept")     # arms whose loss counts only the positions the container kept


# --- the cache: latents encoded once, .atok written once ---------------------------------------------

@torch.no_grad()
def encode(tok, path: Path, short_side: int | None) -> torch.Tensor:
    """A clip's full-rate fp32 latents (T, C, h, w), chunk by chunk with the tokeniser's state, as compress reads it."""
    enc = Codec(tok, Rule(threshold=0.0)).encoder()
    with VideoReader(path, short_side=short_side) as r:
        return torch.cat([z for z, _ in enc.latent_chunks(r, DEFAULT_CHUNK)]).float()


def save_latents(z: torch.Tensor, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        save_file({"z": z.contiguous()}, str(tmp))


def clips_in(folder: Path, limit: int = 0) -> tuple[list[Path], list[Path]]:
    """-> (the videos compress can read, the files skipped)."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    videos = [p for p in files if is_video_path(p)]
    return videos[:limit or None], [p for p in files if not is_video_path(p)]


def cache_dir(args) -> Path:
    return Path(args.out) / "cache" / f"s{args.short_side}-t{args.threshold:g}{f'-n{args.clips}' if args.clips else ''}"


def build_cache(args, tok) -> dict:
    """Encode every train and dev clip once, write the train .atok files once; -> the cache's metadata
    (clip names, token rates, latent error of each arm's data against fp32, each arm's load time)."""
    cache = cache_dir(args)
    meta_path = cache / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else make_files(args, tok, cache)
    todo = [a for a in ARMS if a not in meta["load"]]
    for arm in todo:            # one timed pass over the train set through each arm's reader
        w0, c0 = time.perf_counter(), time.process_time()
        data = load_arm(arm, cache, meta["train"], lit_cached=False)
        meta["load"][arm] = {"wall_s": round(time.perf_counter() - w0, 3), "cpu_s": round(time.process_time() - c0, 3)}
        if arm == "lit":        # LIT runs once; the runs read its output
            for name, c in zip(meta["train"], data):
                save_latents(c.z, cache / "train-lit" / f"{name}.safetensors")
        print(f"loaded {arm}: {meta['load'][arm]}", flush=True)
    if todo:
        meta["data"] = data_error(cache, meta["train"], tok.scale)
        with atomic_path(meta_path) as tmp:
            Path(tmp).write_text(json.dumps(meta, indent=1))
    return meta


def make_files(args, tok, cache: Path) -> dict:
    """The latents and containers, each made once -> the cache's metadata without load times."""
    train, skipped = clips_in(Path(args.data) / "train", args.clips)
    dev, _ = clips_in(Path(args.data) / "dev", args.clips)
    for p in skipped:
        print(f"skipped {p.name}: not a video file compress reads", flush=True)
    for split, paths in (("train", train), ("dev", dev)):
        for p in paths:
            dst = cache / f"{split}-fp32" / f"{p.stem}.safetensors"
            if not dst.exists():
                t0 = time.perf_counter()
                z = encode(tok, p, args.short_side)
                save_latents(z, dst)
                if split == "train":
                    save_latents(z.bfloat16(), cache / "train-bf16" / dst.name)
                print(f"encoded {split}/{p.name} {tuple(z.shape)} in {time.perf_counter() - t0:.1f} s", flush=True)
    for p in train:
        dst = cache / "train-atok" / f"{p.stem}.atok"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            r = atk.compress(p, dst, threshold=args.threshold, short_side=args.short_side, loaded_tokenizer=tok)
            print(f"compressed {p.name}: token rate {r.token_rate:.3f}, {r.bytes_out} bytes", flush=True)
    rates = {}
    for p in train:
        with atk.open(cache / "train-atok" / f"{p.stem}.atok") as f:
            rates[p.stem] = f.token_rate
    size = lambda sub, ext: sum(f.stat().st_size for f in (cache / sub).glob(f"*.{ext}"))
    return {"train": [p.stem for p in train], "dev": [p.stem for p in dev], "skipped": [p.name for p in skipped],
            "short_side": args.short_side, "threshold": args.threshold, "token_rates": rates,
            "bytes": {"fp32": size("train-fp32", "safetensors"), "bf16": size("train-bf16", "safetensors"),
                      "atok": size("train-atok", "atok")}, "load": {}}


# --- each arm's training data -------------------------------------------------------------------------

@dataclass
class Clip:
    """One train clip as an arm holds it: dense latents z (T, C, h, w), or for the sparse arm the kept
    tokens (kept, C); idx (T, h, w), each kept position's row in tokens and -1 where dropped, where the
    arm knows which positions were kept."""
    z: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    idx: torch.Tensor | None = None

    @property
    def shape(self):
        if self.z is not None:
            return tuple(self.z.shape)
        t, h, w = self.idx.shape
        return (t, self.tokens.shape[1], h, w)


def sparse_clip(mask: torch.Tensor, tokens: torch.Tensor) -> Clip:
    idx = torch.full(mask.shape, -1, dtype=torch.long)
    idx[mask] = torch.arange(int(mask.sum()))
    return Clip(tokens=tokens, idx=idx)


def load_arm(arm: str, cache: Path, names: list[str], lit_cached: bool = True) -> list[Clip]:
    """The train clips as the arm's reader gives them, in the order of names (LIT's output from the
    cache once build_cache has written it, unless lit_cached is False)."""
    if arm in ("fp32", "bf16"):     # cloned: read into memory now, as the containers' items are
        return [Clip(z=load_file(str(cache / f"train-{arm}" / f"{n}.safetensors"))["z"].clone()) for n in names]
    if arm == "lit" and lit_cached:
        return [Clip(z=load_file(str(cache / "train-lit" / f"{n}.safetensors"))["z"].clone()) for n in names]
    ds = atk.AtokDataset(cache / "train-atok", mode="sparse" if arm == "sparse" else "dense",
                         fill="lit" if arm == "lit" else "hold")
    items = {Path(ds.files[i]).stem: ds[i] for i in range(len(ds))}
    if arm == "sparse":
        return [sparse_clip(items[n]["mask"], items[n]["tokens"]) for n in names]
    if arm == "hold-kept":
        kept = load_arm("sparse", cache, names)
        return [Clip(z=items[n]["latents"], idx=k.idx) for n, k in zip(names, kept)]
    return [Clip(z=items[n]["latents"]) for n in names]


def data_error(cache: Path, names: list[str], scale: torch.Tensor) -> dict:
    """Each arm's train latents against fp32, in the tokeniser's scale: MSE over all positions and the
    share of positions the sparse arm keeps (what its loss sees)."""
    ref = load_arm("fp32", cache, names)
    out = {}
    for arm in ARMS[1:]:
        err = n = kept = 0.0
        for r, c in zip(ref, load_arm(arm, cache, names)):
            zr = r.z / scale[:, None, None]
            kept += zr[:, 0].numel() if c.idx is None else int((c.idx >= 0).sum())
            if c.z is not None:
                err += float(((c.z.float() / scale[:, None, None] - zr) ** 2).sum())
                n += zr.numel()
            else:
                zk = c.tokens / scale
                err += float(((zk - zr.permute(0, 2, 3, 1)[c.idx >= 0]) ** 2).sum())
                n += zk.numel()
        total = sum(r.z[:, 0].numel() for r in ref)
        out[arm] = {"mse": err / n, "positions_seen": kept / total}
    return out


def window(c: Clip, t: int, y: int, x: int, k: int, size: tuple[int, int]):
    """Latent frames t..t+k (the last is the target) of a crop -> (z (k+1, C, s, s) float32, known (k+1, s, s):
    1 where z holds a value (all of a dense clip), kept (k+1, s, s): 1 where the container kept the
    position (all where the arm does not know))."""
    sh, sw = size
    ix = None if c.idx is None else c.idx[t:t + k + 1, y:y + sh, x:x + sw]
    kept = torch.ones(k + 1, sh, sw) if ix is None else (ix >= 0).float()
    if c.z is not None:
        return c.z[t:t + k + 1, :, y:y + sh, x:x + sw].float(), torch.ones(k + 1, sh, sw), kept
    z = c.tokens[ix.clamp(min=0)] * kept[..., None]
    return z.permute(0, 3, 1, 2), kept, kept


# --- the model -------------------------------------------------------------------------------------------

class NextFrame(nn.Module):
    """Latent frames t-k..t-1 (each C channels plus a mask channel: 1 where the value is known) -> frame t,
    as a correction to frame t-1. A plain conv stack: small enough to train 15 times on two cores."""

    def __init__(self, channels: int, context: int, width: int, depth: int):
        super().__init__()
        layers, cin = [], context * (channels + 1)
        for _ in range(depth - 1):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.GELU()]
            cin = width
        layers.append(nn.Conv2d(cin, channels, 3, padding=1))
        self.net, self.channels = nn.Sequential(*layers), channels

    def forward(self, z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """z (B, k, C, h, w) in scale units, m (B, k, h, w) -> predicted frame (B, C, h, w)."""
        x = torch.cat([z, m[:, :, None]], 2).flatten(1, 2)
        return z[:, -1] + self.net(x)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where m is 1 (pred, target (B, C, h, w), m (B, h, w))."""
    return (((pred - target) ** 2) * m[:, None]).sum() / (m.sum() * pred.shape[1]).clamp(min=1)


# --- training and evaluation ---------------------------------------------------------------------------------

def draw_windows(g: torch.Generator, shapes: list[tuple], batch: int, k: int, crop: int) -> list[tuple]:
    """batch windows (clip, t, y, x): clips in proportion to their windows, so every window is as likely."""
    counts = torch.tensor([(s[0] - k) * max(1, s[2] - crop + 1) * max(1, s[3] - crop + 1) for s in shapes], dtype=torch.float)
    out = []
    for i in torch.multinomial(counts, batch, replacement=True, generator=g).tolist():
        t, _, h, w = shapes[i]
        out.append((i, int(torch.randint(t - k, (), generator=g)), int(torch.randint(max(1, h - crop + 1), (), generator=g)),
                    int(torch.randint(max(1, w - crop + 1), (), generator=g))))
    return out


def batch_of(clips: list[Clip], wins: list[tuple], k: int, crop: int, scale: torch.Tensor, masked: bool):
    """-> (inputs z (B, k, C, s, s), their mask (B, k, s, s), target (B, C, s, s), loss mask (B, s, s))."""
    zs, ms, ks = zip(*(window(clips[i], t, y, x, k, (min(crop, clips[i].shape[2]), min(crop, clips[i].shape[3])))
                   for i, t, y, x in wins))
    z = torch.stack(zs) / scale[:, None, None]
    m, kept = torch.stack(ms), torch.stack(ks)
    return z[:, :k], m[:, :k], z[:, k], (kept[:, k] if masked else torch.ones_like(kept[:, k]))


@torch.no_grad()
def evaluate(model: NextFrame, dev: list[torch.Tensor], k: int, scale: torch.Tensor, every: int = 1) -> float:
    """Mean squared error per position and channel over dev windows (full frames, all positions kept;
    every=N takes every Nth target frame of each clip)."""
    model.eval()
    err = n = 0.0
    for z in dev:
        z = z / scale[:, None, None]
        for t0 in range(k, len(z), 64 * every):
            ts = list(range(t0, min(len(z), t0 + 64 * every), every))
            ctx = torch.stack([z[t - k:t] for t in ts])
            pred = model(ctx, torch.ones(ctx.shape[0], k, *ctx.shape[-2:]))
            err += float(((pred - z[ts]) ** 2).sum())
            n += pred.numel()
    model.train()
    return err / n


def copy_baseline(dev: list[torch.Tensor], k: int, scale: torch.Tensor) -> float:
    """The error of predicting frame t as frame t-1: what the model starts from."""
    err = n = 0.0
    for z in dev:
        z = z / scale[:, None, None]
        err += float(((z[k:] - z[k - 1:-1]) ** 2).sum())
        n += z[k:].numel()
    return err / n


def schedule(i: int, steps: int) -> float:
    """The learning rate's factor at step i: a linear warm-up over the first 5%, then a cosine to 0."""
    warm = max(1, steps // 20)
    return (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))


def train_one(arm: str, seed: int, clips: list[Clip], dev: list[torch.Tensor], args, scale: torch.Tensor) -> dict:
    k = args.context
    torch.manual_seed(seed)
    model = NextFrame(clips[0].shape[1], k, args.width, args.depth)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: schedule(i, args.steps))
    g = torch.Generator().manual_seed(seed)
    shapes = [c.shape for c in clips]
    curve, walls, cpus, datas = [], [], [], []
    wall = cpu = 0.0
    curve.append({"step": 0, "loss": evaluate(model, dev, k, scale, args.eval_stride), "wall_s": 0.0, "cpu_s": 0.0})
    for step in range(1, args.steps + 1):
        wins = draw_windows(g, shapes, args.batch, k, args.crop)
        w0, c0 = time.perf_counter(), time.process_time()
        z, m, target, lm = batch_of(clips, wins, k, args.crop, scale, masked=arm in MASKED)
        datas.append(time.perf_counter() - w0)
        loss = masked_mse(model(z, m), target, lm)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        wall, cpu = wall + walls[-1], cpu + cpus[-1]
        if step % args.eval_every == 0 or step == args.steps:
            curve.append({"step": step, "loss": evaluate(model, dev, k, scale, args.eval_stride), "train_loss": loss.item(),
                          "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
            print(f"{arm} seed {seed} step {step}: dev {curve[-1]['loss']:.5f} train {loss.item():.5f} "
                  f"({wall / step * 1000:.0f} ms/step)", flush=True)
    srt = sorted(walls)
    return {"arm": arm, "seed": seed, "steps": args.steps, "params": sum(p.numel() for p in model.parameters()),
            "final_loss": evaluate(model, dev, k, scale), "curve": curve,
            "step_wall_s": {"mean": wall / args.steps, "median": srt[len(srt) // 2]},
            "step_cpu_s": {"mean": cpu / args.steps}, "data_wall_s": {"mean": sum(datas) / len(datas)}}


def assembly_ms(data: dict[str, list[Clip]], args, scale: torch.Tensor, rounds: int = 1000) -> dict:
    """Median wall time (ms) to assemble one batch per arm, the arms interleaved batch by batch on the
    same windows, so that the machine's other load falls on all of them alike."""
    g = torch.Generator().manual_seed(0)
    shapes = [c.shape for c in next(iter(data.values()))]
    times: dict[str, list[float]] = {a: [] for a in data}
    for _ in range(rounds):
        wins = draw_windows(g, shapes, args.batch, args.context, args.crop)
        for a, clips in data.items():
            t0 = time.perf_counter()
            batch_of(clips, wins, args.context, args.crop, scale, masked=a in MASKED)
            times[a].append(time.perf_counter() - t0)
    return {a: round(1000 * sorted(ts)[len(ts) // 2], 3) for a, ts in times.items()}


# --- the summary ---------------------------------------------------------------------------------------------

def _mean_std(xs: list[float]) -> tuple[float, float]:
    t = torch.tensor(xs, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(xs) > 1 else 0.0


def loss_at(curve: list[dict], key: str, x: float) -> float:
    """A run's curve loss interpolated linearly at x (a step or a time)."""
    pts = [(p[key], p["loss"]) for p in curve]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-12)
    return pts[-1][1]


def summarise(runs: list[dict], meta: dict, config: dict, copy_loss: float, assembly: dict) -> dict:
    """Per arm: final held-out loss (mean, std over seeds), the paired difference with fp32 seed by seed,
    step and load times, and the curve loss at equal time.

    Equal time: an arm's cost is its one load pass plus its steps, each step the model's (the fp32 runs'
    mean CPU time per step: the same model on the same shapes in every arm) plus what assembling its
    batch costs beyond fp32's (measured interleaved, assembly_ms). The runs' own per-step times are
    kept too, but they follow the load other users put on the machine while each ran."""
    by_arm = {a: sorted((r for r in runs if r["arm"] == a), key=lambda r: r["seed"]) for a in ARMS}
    by_arm = {a: rs for a, rs in by_arm.items() if rs}
    fp32 = {r["seed"]: r["final_loss"] for r in by_arm.get("fp32", [])}
    ref = by_arm.get("fp32") or runs
    step_s = sum(r["step_cpu_s"]["mean"] for r in ref) / len(ref)
    base = assembly.get("fp32", min(assembly.values()))
    cost = {a: step_s + (assembly[a] - base) / 1000 for a in by_arm}
    budget = min(meta["load"][a]["cpu_s"] + rs[0]["steps"] * cost[a] for a, rs in by_arm.items())
    fp32_time = {r["seed"]: loss_at(r["curve"], "step", (budget - meta["load"]["fp32"]["cpu_s"]) / cost["fp32"])
                 for r in by_arm.get("fp32", [])}
    arms = {}
    for a, rs in by_arm.items():
        final = [r["final_loss"] for r in rs]
        diff = [r["final_loss"] - fp32[r["seed"]] for r in rs if r["seed"] in fp32]
        steps_at = (budget - meta["load"][a]["cpu_s"]) / cost[a]
        at_time = [loss_at(r["curve"], "step", steps_at) for r in rs]
        diff_time = [t - fp32_time[r["seed"]] for t, r in zip(at_time, rs) if r["seed"] in fp32_time]
        arms[a] = {"seeds": [r["seed"] for r in rs], "final_loss": _mean_std(final), "final_losses": final,
                   "minus_fp32": _mean_std(diff) if diff else None,
                   "curve_loss_end": _mean_std([r["curve"][-1]["loss"] for r in rs]),
                   "curve_loss_equal_time": _mean_std(at_time),
                   "curve_minus_fp32_equal_time": _mean_std(diff_time) if diff_time else None, "steps_by_equal_time": round(steps_at),
                   "modelled_step_ms": 1000 * cost[a],
                   "step_wall_ms": _mean_std([1000 * r["step_wall_s"]["median"] for r in rs]),
                   "step_cpu_ms": _mean_std([1000 * r["step_cpu_s"]["mean"] for r in rs]),
                   "data_ms": _mean_std([1000 * r["data_wall_s"]["mean"] for r in rs]),
                   "batch_assembly_ms_interleaved": assembly.get(a),
                   "load": meta["load"][a], "train_data": meta["data"].get(a)}
    return {"config": config, "copy_baseline_loss": copy_loss, "equal_time_budget_cpu_s": budget,
            "model_step_cpu_ms": 1000 * step_s,
            "train_clips": meta["train"], "dev_clips": meta["dev"], "skipped": meta["skipped"],
            "train_token_rates": meta["token_rates"], "train_bytes": meta["bytes"], "load_note":
            "one pass over the train set through each arm's reader, warm page cache, one thread",
            "params": runs[0]["params"], "arms": arms}


def plot(runs: list[dict], summary: dict, dst: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1, 1, 0.7]})
    for a in summary["arms"]:
        rs = [r for r in runs if r["arm"] == a]
        s = summary["arms"][a]
        for ax, scale, off in ((axes[0], 1.0, 0.0), (axes[1], s["modelled_step_ms"] / 1000, s["load"]["cpu_s"])):
            xs = [p["step"] * scale + off for p in rs[0]["curve"]]
            ys = torch.tensor([[p["loss"] for p in r["curve"]] for r in rs], dtype=torch.float64)
            mean, std = ys.mean(0), (ys.std(0) if len(rs) > 1 else torch.zeros(ys.shape[1]))
            ax.plot(xs[1:], mean[1:], label=f"{a} ({len(rs)} seeds)")
            ax.fill_between(xs[1:], (mean - std)[1:], (mean + std)[1:], alpha=0.2)
    top = min(summary["copy_baseline_loss"], 0.62)
    for ax, xl in ((axes[0], "training step"), (axes[1], "CPU seconds, one thread: a load pass of the train set + steps")):
        ax.set_ylim(top=top)
        ax.plot([], [], " ", label=f"copying frame t-1: {summary['copy_baseline_loss']:.3f}")
        ax.set_xlabel(xl)
        ax.set_ylabel(f"held-out MSE (dev, 1 target frame in {summary['config']['eval_stride']}; scale units)")
        ax.grid(alpha=0.3)
    axes[1].axvline(summary["equal_time_budget_cpu_s"], color="k", lw=0.8, ls="--")
    axes[0].legend()
    names = list(summary["arms"])
    for i, a in enumerate(names):           # the final losses, seed by seed
        s = summary["arms"][a]
        axes[2].plot([i] * len(s["final_losses"]), s["final_losses"], "o", color=f"C{i}", alpha=0.6)
        axes[2].errorbar(i + 0.15, s["final_loss"][0], yerr=s["final_loss"][1], fmt="s", color=f"C{i}", capsize=4)
    axes[2].set_xticks(range(len(names)), names)
    axes[2].set_ylabel("final held-out MSE, all dev windows")
    axes[2].set_title("after the last step: seeds (dots), mean ± std", fontsize=9)
    axes[2].grid(alpha=0.3)
    fig.suptitle("Next-latent-frame prediction trained on each data source, evaluated on dev (mean ± std over seeds)")
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# --- the command ---------------------------------------------------------------------------------------------

def config_of(args) -> dict:
    keys = ("short_side", "threshold", "context", "width", "depth", "batch", "crop", "lr", "steps", "eval_every",
            "eval_stride", "clips")
    return {k: getattr(args, k) for k in keys}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("ADAPTOK_DATA", str(DATA)),
                    help="folder with train/ and dev/ clips (default: $ADAPTOK_DATA, else the project's data folder)")
    ap.add_argument("--out", default="runs/latent_ab", help="cache and per-run results")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=16, help="latent positions per side of a training window")
    ap.add_argument("--context", type=int, default=3, help="latent frames the model sees (k)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--eval-stride", type=int, default=3, help="curve points use every Nth dev target frame")
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--clips", type=int, default=0, help="only the first N train and dev clips (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default="experiments/results/latent_ab.json", help="the summary (JSON)")
    ap.add_argument("--plot", default="docs/latent_ab.png")
    ap.add_argument("--summary-only", action="store_true", help="summarise the finished runs; train nothing")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if not (Path(args.data) / "train").is_dir() or not (Path(args.data) / "dev").is_dir():
        print(f"skipped: no train/ and dev/ clips under {args.data} (set --data or ADAPTOK_DATA)")
        return 0
    arms = args.arms.split(",")
    if bad := [a for a in arms if a not in ARMS]:
        print(f"error: unknown arm(s) {', '.join(bad)} (choose from {', '.join(ARMS)})", file=sys.stderr)
        return 64
    torch.set_num_threads(args.threads)
    tok = load_tokenizer("tinytok")
    meta = build_cache(args, tok)
    cache = cache_dir(args)
    config = config_of(args)
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = Path(args.out) / "runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    dev = [load_file(str(cache / "dev-fp32" / f"{n}.safetensors"))["z"] for n in meta["dev"]]
    scale = tok.scale.float()
    ref_shapes = [c.shape for c in load_arm("fp32", cache, meta["train"])]
    loaded: dict[str, list[Clip]] = {}
    for seed in range(args.seeds):          # seed by seed, so a run cut short still compares every arm
        for arm in arms:
            dst = run_dir / f"{arm}-s{seed}.json"
            if dst.exists() or args.summary_only:
                continue
            if arm not in loaded:
                loaded[arm] = load_arm(arm, cache, meta["train"])
                shapes = [c.shape for c in loaded[arm]]
                assert shapes == ref_shapes, f"{arm}'s clips differ in shape from fp32's: {shapes} {ref_shapes}"
            res = train_one(arm, seed, loaded[arm], dev, args, scale)
            with atomic_path(dst) as tmp:
                Path(tmp).write_text(json.dumps(res))
            print(f"done {arm} seed {seed}: final dev loss {res['final_loss']:.5f}", flush=True)
    runs = [json.loads(p.read_text()) for p in sorted(run_dir.glob("*-s*.json"))]
    runs = [r for r in runs if r["arm"] in arms]
    if not runs:
        print("no finished runs to summarise")
        return 0
    done_arms = [a for a in arms if any(r["arm"] == a for r in runs)]
    assembly = assembly_ms({a: loaded.get(a) or load_arm(a, cache, meta["train"]) for a in done_arms}, args, scale)
    summary = summarise(runs, meta, config, copy_baseline(dev, args.context, scale), assembly)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(args.results)) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1))
    plot(runs, summary, Path(args.plot))
    print_table(summary)
    return 0


def print_table(s: dict):
    print(f"copy-previous-frame baseline: {s['copy_baseline_loss']:.5f}; model step {s['model_step_cpu_ms']:.1f} CPU ms; "
          f"equal-time budget {s['equal_time_budget_cpu_s']:.1f} CPU s")
    print("| arm | final dev MSE | minus fp32 (paired) | curve MSE at equal time (steps) | ms/step wall (run) | "
          "ms/step CPU (run) | batch assembly ms | load pass CPU s | train data MSE vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for a, r in s["arms"].items():
        d, td = r["minus_fp32"], r["train_data"]
        diff = "" if d is None else f"{d[0]:+.5f} ± {d[1]:.5f}"
        data = "" if td is None else f"{td['mse']:.5f} ({td['positions_seen']:.2f} of positions)"
        print(f"| {a} | {r['final_loss'][0]:.5f} ± {r['final_loss'][1]:.5f} | "
              f"{diff} | {r['curve_loss_equal_time'][0]:.5f} ± {r['curve_loss_equal_time'][1]:.5f} ({r['steps_by_equal_time']}; "
              f"{r['curve_minus_fp32_equal_time'][0]:+.5f} ± {r['curve_minus_fp32_equal_time'][1]:.5f}) | "
              f"{r['step_wall_ms'][0]:.1f} | {r['step_cpu_ms'][0]:.1f} | {r['batch_assembly_ms_interleaved']} | {r['load']['cpu_s']:.1f} | "
              f"{data} |")


if __name__ == "__main__":
    sys.exit(main())
