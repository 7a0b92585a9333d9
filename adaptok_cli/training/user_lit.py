"""`adaptok train-lit`: a LIT for any calibrated tokeniser, trained on the user's own clips, resumable
(and `adaptok calibrate`, the step before it: calibrate_files).

The recipe is the shipped LIT's (training/lit.py: windows masked by the real rule at drawn thresholds,
filled as the decoder fills them, loss on dropped positions weighted by the decoder's sensitivity),
with what the tokeniser's calibration gives: the spread LIT works in, the rule's unit its correction is
bounded in, and the channel weights. Everything lives in OUTPUT.run/ (latents, checkpoints, log), so a
rerun of the same command resumes; the best step on held-out clips is exported to OUTPUT.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaptok_cli.format import safejson
from adaptok_cli.models.calibration import Tally, clip_latents, find, pixels_to_read
from adaptok_cli.errors import ModelUnavailableError, UsageError
from adaptok_cli.core.lit import LIT, LITConfig, save_lit
from adaptok_cli.running.outputs import atomic_path
from adaptok_cli.training.lit import CHUNK, VAL_BATCHES, VAL_SEED, load_ema, loss_fn, sample
from adaptok_cli.training.loop import LoopConfig, Trainer

MIN_VAL_FRAMES = 3 * CHUNK      # latent frames a single clip must have to hold some of them out


@dataclass
class TrainLitOptions:
    steps: int = 2000
    batch: int = 16
    crop: int = 16               # latent positions per side of a sample
    lr: float = 1e-3
    val_clips: int = 1           # clips held out to choose the step (one clip: its last quarter)
    val_every: int = 100
    short_side: int | None = 256
    max_frames: int = 256        # frames read from each clip
    seed: int = 0


@dataclass
class TrainLitReport:
    output: str
    steps: int
    best_step: int
    clips: int
    held_out: str
    hold_mse: float              # decoder-weighted latent MSE on held-out dropped positions
    lit_mse: float
    gain_db: float = field(default=0.0)   # 10 log10(hold / LIT): LIT's gain over hold-fill


def run_dir(output: Path) -> Path:
    return Path(str(output) + ".run")


def check_output(output) -> Path:
    """train-lit writes safetensors (weights that cannot run code): the name must say so."""
    output = Path(output)
    if output.suffix != ".safetensors":
        raise UsageError(f"{output}: train-lit writes a .safetensors file: name the output LIT.safetensors")
    return output


def _manifest(path: Path):
    """A run folder's manifest, or None when it is not one (then the run is refused, not mixed)."""
    try:
        return safejson.read(path, 1 << 20)
    except (safejson.JSONError, OSError):
        return None



def cached_latents(tok, clips, run: Path, opts: TrainLitOptions, progress=None) -> list[np.ndarray]:
    """Each clip's latents, encoded once into run/latents (a rerun with other clips or another
    tokeniser is refused rather than mixed). progress(done, total): pixels encoded."""
    folder = run / "latents"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"tokenizer": tok.fingerprint, "clips": [str(c) for c in clips], "short_side": opts.short_side,
                "max_frames": opts.max_frames}
    mf = folder / "manifest.json"
    if mf.exists() and _manifest(mf) != manifest:
        raise UsageError(f"{run}: made with other clips, tokeniser or sizes; remove it to start over")
    mf.write_text(json.dumps(manifest))
    out, todo = [], [c for i, c in enumerate(clips) if not (folder / f"{i:05d}.npy").exists()]
    tally = Tally(progress, pixels_to_read(todo, opts.short_side, opts.max_frames)) if progress and todo else None
    for i, clip in enumerate(clips):
        dst = folder / f"{i:05d}.npy"
        if not dst.exists():
            z = torch.cat(list(clip_latents(tok, [clip], opts.short_side, opts.max_frames, progress=tally))).half().numpy()
            with atomic_path(dst) as tmp, open(tmp, "wb") as f:
                np.save(f, z)
        out.append(np.load(dst, mmap_mode="r", allow_pickle=False))
    return out


def split(latents, n_val: int):
    """-> (train, held out, what was held out): whole clips, or one clip's last quarter."""
    if len(latents) > n_val >= 1:
        return latents[:-n_val], latents[-n_val:], f"last {n_val} clip(s)"
    z = latents[0]
    if len(latents) == 1 and len(z) >= MIN_VAL_FRAMES:
        cut = len(z) * 3 // 4
        return [z[:cut]], [z[cut:]], "last quarter of the clip"
    raise UsageError(f"train-lit needs at least {n_val + 1} clips, or one of {MIN_VAL_FRAMES * 4}+ frames, "
                     f"to hold some out for choosing the step")


def train_lit(tok, clips, output, opts: TrainLitOptions = TrainLitOptions(), progress=None) -> TrainLitReport:
    """Train (or resume) a LIT for `tok` on `clips`, export the best held-out step to `output`.
    progress(stage, done, total, note): stage "encode" (pixels of the clips, encoded once), then
    "train" (steps; note: the running loss and the last held-out gain over hold-fill)."""
    output = check_output(output)
    cal = find(tok)
    if cal is None:
        spec = getattr(tok, "spec", tok.name)
        raise ModelUnavailableError(f"tokeniser {tok.name} is not calibrated: run 'adaptok calibrate --tokenizer "
                                    f"{spec} CLIP...' first")
    run = run_dir(output)
    latents = cached_latents(tok, clips, run, opts, progress and (lambda done, total: progress("encode", done, total, "")))
    train, held_out, held_what = split(latents, opts.val_clips)
    spread, unit, weights = cal.spread, cal.unit("decoder"), cal.sensitivity
    to_unit = spread / unit
    cfg = LITConfig(channels=tok.channels, pos_period=opts.crop, span=CHUNK)
    draw = dict(tok=tok, batch=opts.batch, crop=opts.crop, context=cfg.context, spread=spread, unit=unit)
    val_rng = np.random.default_rng(VAL_SEED)
    val = [sample(held_out, val_rng, **draw) for _ in range(VAL_BATCHES)]
    torch.manual_seed(opts.seed)
    loop = LoopConfig(run, opts.steps, opts.lr, warmup=min(200, opts.steps // 10), min_lr=0.05, ema=0.998,
                      seed=opts.seed, ckpt_every=120, log_every=25)
    t = Trainer(loop, LIT(cfg), {"config": cfg.to_dict(), "args": {k: str(v) for k, v in vars(opts).items()}})
    t.extra.setdefault("best_val", math.inf)
    live = {}           # what the progress note shows: the running loss, the last held-out gain

    def score(model):
        with torch.no_grad():
            vs = [loss_fn(model, *b, weights=weights, to_unit=to_unit)[1] for b in val]
        return float(np.mean([v["loss"] for v in vs])), sum(v["hold_mse"] for v in vs), sum(v["mse"] for v in vs)

    def on_log(rec):
        if t.step % opts.val_every == 0 or t.step == opts.steps:
            rec["val_loss"], hold, lit = score(t.ema)
            rec["val_gain_db"] = live["gain"] = gain_db(hold, lit)
            if rec["val_loss"] < t.extra["best_val"]:
                t.extra["best_val"] = rec["val_loss"]
                t.save(run / "best.pt", ema_only=True, val_loss=rec["val_loss"])

    def step():
        loss, stats = loss_fn(t.model, *sample(train, t.rng, **draw), weights=weights, to_unit=to_unit)
        live["loss"] = stats.pop("loss") if "loss" not in live else 0.9 * live["loss"] + 0.1 * stats.pop("loss")
        return loss, stats

    def note():
        gain = f", held-out gain {live['gain']:+.2f} dB" if "gain" in live else ""
        return f"loss {live['loss']:.3f}{gain}" if "loss" in live else ""

    t.run(step, on_log, progress=progress and (lambda done, end: progress("train", done, end, note())), echo=False)
    best = run / "best.pt" if (run / "best.pt").exists() else run / "last.pt"
    model, ck = load_ema(best)
    _, hold, lit = score(model)
    save_lit(model, output, tok.fingerprint, {"step": str(ck["step"]), "scale": json.dumps(spread.tolist()),
                                              "train": json.dumps(ck["args"])})
    return TrainLitReport(str(output), t.step, int(ck["step"]), len(clips), held_what, hold, lit, gain_db(hold, lit))


def gain_db(hold_mse: float, lit_mse: float) -> float:
    """LIT's gain over hold-fill: 10 log10(hold / LIT), positive where LIT helps."""
    return 10 * math.log10(max(hold_mse, 1e-12) / max(lit_mse, 1e-12))


def train_lit_files(inputs: list, output: str, tokenizer: str, opts: TrainLitOptions = TrainLitOptions(),
                    force: bool = False, device: str = "auto", dtype: str = "auto", quiet: bool = False,
                    as_json: bool = False) -> TrainLitReport:
    """`adaptok train-lit`: a LIT trained on the clips of inputs (files, folders, globs), written to output
    and reported (a JSON object, or a line on stderr; a warning when it does no better than hold-fill)."""
    import sys
    from dataclasses import asdict

    from adaptok_cli.running.batch import expand_inputs, want_video
    from adaptok_cli.cli.printing import Reporter, say
    from adaptok_cli.errors import OutputExistsError
    from adaptok_cli.running.options import check_common
    from adaptok_cli.models.tokenizer import load_tokenizer, pick_device
    check_common(None, device, as_json, False, dtype)
    if opts.steps < 1 or opts.val_clips < 0 or opts.max_frames < 1 or (opts.short_side or 0) < 0:
        raise UsageError("--steps and --max-frames must be 1 or more, --val-clips and --short-side 0 or more")
    dst = check_output(output)
    if dst.exists() and not force and not run_dir(dst).exists():
        raise OutputExistsError(f"{dst}: exists (use -f to replace it)")
    clips = [f for f, _ in expand_inputs(inputs, want_video)]
    tok = load_tokenizer(tokenizer, pick_device(device), dtype)
    labels = {"encode": ("train-lit: encoding clips", "Mpx"), "train": (f"train-lit {dst.name}", "steps")}
    with Reporter(quiet, as_json).stages() as update:
        report = train_lit(tok, clips, dst, opts, progress=lambda stage, done, total, note:
                           update(labels[stage][0], done, total, labels[stage][1], note))
    if as_json:
        print(json.dumps(asdict(report)))
    elif not quiet:
        print(f"{dst}: step {report.best_step} of {report.steps} (best on the {report.held_out}); "
              f"LIT {report.gain_db:+.2f} dB over hold-fill on held-out dropped latents "
              f"(decoder-weighted MSE {report.lit_mse:.4g} vs {report.hold_mse:.4g})", file=sys.stderr)
    if report.gain_db <= 0 and not quiet:
        say(f"warning: this LIT does no better than hold-fill on the held-out latents ({report.gain_db:+.2f} dB): "
            f"train longer or on more clips, or decompress with --no-lit")
    return report


def calibrate_files(inputs: list, tokenizer: str, output: str | None = None, force: bool = False,
                    short_side: int = 256, max_frames: int = 64, device: str = "auto", dtype: str = "auto",
                    quiet: bool = False, as_json: bool = False):
    """`adaptok calibrate`: the tokeniser calibrated on the clips of inputs, saved to output (default: the
    store compress finds it in), and reported (a JSON object, or a line on stderr)."""
    import sys

    from adaptok_cli.running.batch import check_file_output, expand_inputs, want_video
    from adaptok_cli.cli.printing import Reporter, plural
    from adaptok_cli.models.calibration import calibrate, save, stored_path
    from adaptok_cli.errors import OutputExistsError
    from adaptok_cli.running.options import check_common
    from adaptok_cli.models.tokenizer import load_tokenizer, pick_device
    check_common(None, device, as_json, False, dtype)
    if max_frames < 1 or short_side < 0:
        raise UsageError("--max-frames must be 1 or more and --short-side 0 or more")
    if output is not None:
        check_file_output(output, (".safetensors",), "calibrate writes a .safetensors file", folders=False)
    clips = [f for f, _ in expand_inputs(inputs, want_video)]
    tok = load_tokenizer(tokenizer, pick_device(device), dtype)
    dst = Path(output) if output else stored_path(tok)
    if dst.exists() and not force:
        raise OutputExistsError(f"{dst}: exists (use -f to replace it)")
    with Reporter(quiet, as_json).stages() as update:
        cal = calibrate(tok, clips, short_side or None, max_frames,
                        lambda done, total: update(f"calibrate {tok.name}", done, total, "Mpx"))
    save(cal, dst)
    if as_json:
        print(json.dumps({"tokenizer": tok.name, "fingerprint": tok.fingerprint, "clips": len(clips),
                          "output": str(dst), "spread": cal.spread.tolist(),
                          "sensitivity": cal.sensitivity.tolist(), "unit": cal.unit("decoder").tolist()}))
    elif not quiet:
        print(f"calibrated {tok.name} on {plural(len(clips), 'clip')}: {dst}", file=sys.stderr)
