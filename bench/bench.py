"""`make bench`: adaptok side by side with its baselines and with ordinary codecs.

    python -m bench.bench                  # every dev clip (not distributed) at short side 256 -> docs/
    python -m bench.bench --quick          # smoke test on generated clips -> bench-out/ (< 1 minute)
    python -m bench.bench --readme         # copy the headline of docs/bench-results.json into README.md

Each clip is read and encoded by the tokeniser once; every method below then only differs in which
latent positions it keeps and how it fills the rest, so the comparisons isolate the allocator:

1. rate-distortion: threshold sweep (LIT and hold-fill), --keep-ratio and uniform random dropping at
   the same mean token rates, and the full-rate tokeniser;
2. allocation cost: our single pass against an ElasticTok-style search allocator and an
   InfoTok-style probe allocator, tuned to the same mean PSNR (within 0.2 dB);
3. libx264 / libx265 / libsvtav1 at adaptok's bits per pixel;
4. throughput of compress/decompress at 256x256 and 480p with stage shares, and peak memory for a long video;
5. the published diffusers VAEs at 854x480 against their own encode/decode (bench/families.py), and the
   CLI's time to its first frame with one of them (bench/startup.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adaptok_cli.models.calibration import DEFAULT_UNIT, UNITS
from adaptok_cli.models.matching import ModelRef, shipped_lit
from adaptok_cli.models.tokenizer import load_tokenizer
from adaptok_cli.training.data import DEV

from . import alloc, cache, clips, families, lit_cost, loss_maps, memory, ray_batch, rd, scaling, startup, targets
from . import pipeline as pipeline_bench
from . import throughput as throughput_bench
from . import video_codecs
from .common import ROOT, machine, moving_video, ran, table, video_paths


SECTIONS = ("rd", "loss_maps", "lit_cost", "codecs", "alloc", "throughput", "memory", "scaling", "ray", "families",
            "startup", "pipeline", "cache")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test on generated clips, under a minute")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("ADAPTOK_BENCH_DATA", DEV)),
                    help="the dev clips (default: $ADAPTOK_BENCH_DATA or the project's dev folder)")
    ap.add_argument("--out", type=Path, help="folder for BENCHMARKS.md, bench-results.json and plots "
                                             "(docs/; bench-out/ with --quick)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="which parts to run; the others are kept from an earlier bench-results.json")
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--alloc-frames", type=int, default=48, help="frames per clip in the allocator comparison")
    ap.add_argument("--long-seconds", default="10,600", help="video lengths for the memory figure")
    ap.add_argument("--long-fps", type=float, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plots-only", action="store_true",
                    help="redraw the figures and BENCHMARKS.md from the saved bench-results.json (no measuring)")
    ap.add_argument("--unit", choices=UNITS, default=DEFAULT_UNIT, help="the rule's unit of change")
    ap.add_argument("--lit", type=Path, help="a LIT .safetensors to measure instead of the shipped one")
    ap.add_argument("--readme", action="store_true",
                    help="write the headline of the saved docs/bench-results.json into README.md (no measuring)")
    families.add_arguments(ap)
    startup.add_arguments(ap)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.readme:
        return targets.update_readme(json.loads((ROOT / "docs" / "bench-results.json").read_text()))
    torch.set_num_threads(args.threads)
    clips.UNIT = args.unit
    sections = [x for x in args.sections.split(",") if x]
    if not set(sections) <= set(SECTIONS):
        sys.exit(f"bench: --sections takes {','.join(SECTIONS)}")
    out = args.out or ROOT / ("bench-out" if args.quick else "docs")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "bench-results.json"
    if args.plots_only:
        return redraw(json.loads(results_path.read_text()), out)
    results = json.loads(results_path.read_text()) if results_path.exists() and set(sections) != set(SECTIONS) else {}
    command = " ".join(["python -m bench.bench", *(argv if argv is not None else sys.argv[1:])])
    with open(out / "bench-log.jsonl", "a") as log_file:
        def log(row):
            print(json.dumps(row, default=float), flush=True)
            log_file.write(json.dumps(row, default=float) + "\n")
        if not run_sections(args, sections, results, results_path, command, log):
            return
    pngs = rd.plots(results["rd"], out, results.get("codecs"), results.get("threshold")) if "rd" in results else []
    write_markdown(results, pngs, out / "BENCHMARKS.md")
    print(f"wrote {out / 'BENCHMARKS.md'}")


def redraw(saved: dict, out: Path):
    """--plots-only: the figures and BENCHMARKS.md from saved results, nothing measured."""
    pngs = rd.plots(saved["rd"], out, saved.get("codecs"), saved.get("threshold")) if "rd" in saved else []
    if (out / "loss_maps.npz").exists():
        loss_maps.draw(loss_maps.load(out / "loss_maps.npz"), saved["threshold"], saved.get("lit", True),
                       out / "loss_maps.png")
    write_markdown(saved, pngs, out / "BENCHMARKS.md")
    print("wrote", *pngs, *(["loss_maps.png"] if (out / "loss_maps.npz").exists() else []), out / "BENCHMARKS.md")


@dataclass
class Run:
    """What every section of one benchmark run shares."""
    args: argparse.Namespace
    tok: object
    lit: object
    tmp: str
    out: Path
    log: object
    paths: list = field(default_factory=list)
    thresholds: list = field(default_factory=list)
    short_side: int | None = None
    clips: list | None = None       # the clips, read and encoded once by the first section that needs them


def run_sections(args, sections, results, results_path, command, log) -> bool:
    """Run each section, saving the results after each (a later run keeps the sections it does not
    rerun) -> False when there was nothing to measure."""
    tok = load_tokenizer("tinytok")
    lit = ModelRef(args.lit) if args.lit else shipped_lit(tok)
    results.update(machine=machine(), lit=bool(lit), unit=clips.UNIT)
    runs = results.setdefault("runs", {})
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(args, tok, lit, tmp, results_path.parent, log)
        if args.quick:
            run.paths = [moving_video(Path(tmp) / f"q{i}.mp4", 128, 96, 21, seed=i) for i in range(2)]
            run.thresholds = [0.1, 0.3]
        else:
            if not args.data.is_dir() and sections == ["cache"]:
                print(f"bench: {args.data} not found: section cache skipped")
                return False
            if not args.data.is_dir():
                sys.exit(f"bench: {args.data} not found (use --quick for generated clips)")
            run.paths = video_paths(args.data)
            run.thresholds, run.short_side = rd.THRESHOLDS, args.short_side
        for section in sections:
            started = time.time()
            run_section(section, run, results)
            runs[section] = {"command": command, "date": time.strftime("%Y-%m-%d"),
                             "minutes": (time.time() - started) / 60}
            results_path.write_text(json.dumps(results, indent=1, default=float))
    return True


def run_section(section, run: Run, results):
    """One section's measurements into results."""
    args, tok, lit, log, tmp, quick = run.args, run.tok, run.lit, run.log, run.tmp, run.args.quick
    if section in ("rd", "loss_maps", "lit_cost", "codecs") and run.clips is None:
        run.clips = [clips.load_clip(p, tok, run.short_side) for p in run.paths]
        results["clips"] = [(c.name, c.width, c.height, c.frames) for c in run.clips]
        log({"clips": results["clips"]})
    loaded = run.clips
    if section == "rd":
        rows, per_clip = rd.rate_distortion(tok, loaded, lit, run.thresholds, log)
        tau = rd.choose_threshold(rows, rows[0]["psnr"])
        log({"chosen_threshold": tau})
        results.update(rd=rows, threshold=tau, per_clip={c.name: per_clip[(tau, c.name)] for c in loaded})
    elif section == "loss_maps":
        results["loss_maps"], maps = loss_maps.measure(tok, loaded, lit, results["threshold"],
                                                       clips.threshold_chunks, clips.full_rate,
                                                       clips.new_inpainter)
        loss_maps.save(maps, run.out / "loss_maps.npz")
        loss_maps.draw(maps, results["threshold"], bool(lit), run.out / "loss_maps.png")
        log({"loss_maps": results["loss_maps"]})
    elif section == "lit_cost":
        results["lit_cost"] = lit_cost.lit_cost(tok, loaded, lit, [results["threshold"], 0.25, 0.4], log)
    elif section == "codecs":
        results["codecs"] = video_codecs.codecs(loaded, {k: v["lit"] for k, v in results["per_clip"].items()}, log)
    elif section == "alloc":
        alloc_clips = [clips.load_clip(p, tok, run.short_side, 16 if quick else args.alloc_frames) for p in run.paths]
        results["allocators"] = alloc.allocation_cost(tok, alloc_clips, lit, results["threshold"], log)
        results["alloc_frames"] = [c.frames for c in alloc_clips]
    elif section == "throughput":
        # the default threshold, and 0.4 where decompression runs LIT (matching.LIT_FROM_THRESHOLD)
        sizes = [(64, 64, None), (64, 64, 0.4)] if quick else [
            (256, 256, None), (256, 256, 0.4), (854, 480, None), (854, 480, 0.4)]
        results["throughput"] = throughput_bench.throughput(tok, sizes, 9 if quick else 97, tmp, log)
    elif section == "scaling":
        results["scaling"] = scaling.scaling(tmp, [(64, 64, 9), (96, 64, 5)] if quick else scaling.SIZES, log)
    elif section == "memory":
        longs = [float(x) for x in ("1,2" if quick else args.long_seconds).split(",")]
        results["memory"] = memory.long_video_memory(tmp, longs, args.long_fps, log, *((64, 48) if quick else (854, 480)))
    elif section == "ray":
        results["ray"] = ray_batch.ray_against_local(run.paths, tmp, 1 if quick else 3, log)
    elif section == "families":
        results["families"] = families.run(args, tmp, log, moving_video)
    elif section == "startup":
        results["startup"] = startup.run(args, tmp, log)
    elif section == "pipeline":
        results["pipeline"] = pipeline_bench.run(tmp, quick, log)
    elif section == "cache":
        results["cache"] = {**cache.run(tok, run.paths, run.short_side, log, quick), "machine": machine()}


def write_markdown(r, pngs, path):
    """BENCHMARKS.md from bench-results.json; each section says which command produced it and when."""
    lines = ["# Benchmarks", "",
             f"Written by `make bench` (`python -m bench.bench`; sections can be rerun alone with `--sections`). "
             f"Machine: {r['machine']}. LIT {'installed' if r['lit'] else 'not installed (hold-fill only)'}.", ""]
    if "clips" in r:
        lines += clips.markdown(r)
    if "rd" in r:
        lines += rd.markdown(r, pngs)
    if "lit_cost" in r:
        lines += lit_cost.markdown(r)
    if "allocators" in r:
        lines += alloc.markdown(r)
    if "codecs" in r:
        lines += video_codecs.markdown(r)
    if "throughput" in r:
        lines += throughput_bench.markdown(r)
    if "memory" in r:
        lines += memory.markdown(r)
    if r.get("ray") and "engine_ray_s" in r["ray"][0]:
        lines += ray_batch.markdown(r)
    if "scaling" in r:
        lines += scaling.markdown(r)
    lines += families.markdown(r, ran, table) + startup.markdown(r, ran, table) + pipeline_bench.markdown(r, ran, table)
    lines += cache.markdown(r, ran, table)
    lines += targets.markdown(r)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
