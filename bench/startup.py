"""Benchmark section `startup`: how long the CLI takes to reach its first frame with a published VAE.

    python -m bench.bench --sections startup [--startup-runs 3]

Builds Wan 2.1's published architecture (`AutoencoderKLWan()`, random weights, 508 MB of
safetensors) with `save_pretrained`, and times fresh processes on the CPU:
- load alone: `python -c "import torch, diffusers; diffusers.AutoencoderKLWan.from_pretrained(FOLDER)"`
  until the load returns, what any program that uses this VAE pays (interpreter, imports, weights);
- `adaptok compress`'s time to its first frame: from starting the process until it reaches the
  stage "models" (adaptok_cli/running/stages.py: models loaded, nothing read or written yet), with an empty
  cache, as every run was before the cache (cache.py), hashing the weights and probing the factors;
  and with the cache the run before it filled.
Runs alternate between the three; the table gives the fastest and the median of each.
"""
from __future__ import annotations

import os
import select
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

LOAD = ("import sys, torch, diffusers; "
        "diffusers.AutoencoderKLWan.from_pretrained(sys.argv[1], use_safetensors=True, torch_dtype=torch.float32); "
        "print('loaded', flush=True)")


def add_arguments(ap):
    ap.add_argument("--startup-runs", type=int, default=3, help="startup section: runs of each command")


def run(args, tmp, log) -> list[dict]:
    try:
        import diffusers
    except ImportError:
        log({"startup": "skipped: diffusers is not installed (pip install 'adaptok[diffusers]')"})
        return []
    import numpy as np
    import torch

    from adaptok_cli.models import calibration
    from adaptok_cli.models.tokenizer import spec_fingerprint
    from adaptok_cli.running.video import VideoWriter

    from .families import cache_folder
    tmp = Path(tmp)
    folder, clip = tmp / "wan2.1", tmp / "one.mkv"
    torch.manual_seed(0)
    model = diffusers.AutoencoderKLWan() if not args.quick else diffusers.AutoencoderKLWan(base_dim=8, z_dim=4)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    w = VideoWriter(clip, 16, 16, 25)
    w.write(np.full((16, 16, 3), 128, np.uint8))
    w.close()
    seeded = tmp / "cache-seed"            # compress needs a calibration; its values change no timing
    with cache_folder(seeded):
        fp = spec_fingerprint(str(folder))
        ones = torch.ones(4 if args.quick else 16)
        calibration.save(calibration.Calibration(ones, ones.clone(), fp), calibration.store_dir() / f"{fp}.safetensors")
    shutil.rmtree(seeded / "fingerprints", ignore_errors=True)
    warm = tmp / "cache-warm"
    shutil.copytree(seeded, warm)
    compress = [sys.executable, "-m", "adaptok_cli", "compress", str(clip), "-o", str(tmp / "one.atok"), "-f", "-q",
                "--tokenizer", str(folder), "--device", "cpu"]
    _timed(compress, warm)                              # fills the warm cache
    times = {"load alone": [], "adaptok, empty cache": [], "adaptok, cache filled": []}
    for _ in range(1 if args.quick else args.startup_runs):
        times["load alone"].append(_to_loaded([sys.executable, "-c", LOAD, str(folder)], seeded))
        cold = tmp / "cache-cold"
        shutil.rmtree(cold, ignore_errors=True)
        shutil.copytree(seeded, cold)
        times["adaptok, empty cache"].append(_to_first_frame(compress, cold, tmp / f"pause-{len(times['load alone'])}c"))
        times["adaptok, cache filled"].append(_to_first_frame(compress, warm, tmp / f"pause-{len(times['load alone'])}w"))
    base = min(times["load alone"])
    rows = [{"command": k, "runs": len(v), "fastest_s": min(v), "median_s": statistics.median(v),
             "over_load_alone": min(v) / base, "load_avg": os.getloadavg()[0]} for k, v in times.items()]
    for r in rows:
        log(r)
    return rows


def _timed(cmd, cache) -> float:
    """Wall seconds of a whole run."""
    env = {**os.environ, "ADAPTOK_CACHE": str(cache)}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr[-2000:]}")
    return time.perf_counter() - t0


def _to_loaded(cmd, cache) -> float:
    """Seconds from starting LOAD until it says the weights are loaded (its exit is not counted)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env={**os.environ, "ADAPTOK_CACHE": str(cache)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    seconds = time.perf_counter() - t0
    out, err = p.communicate()
    if p.returncode or line.strip() != "loaded":
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {err[-2000:]}")
    return seconds


def _to_first_frame(cmd, cache, folder: Path) -> float:
    """Seconds from starting the process until it reaches stage "models" (adaptok_cli/running/stages.py:
    models loaded, no output opened, no frame read yet); then it is let go and must end well."""
    folder.mkdir()
    for name in ("reached", "go"):
        os.mkfifo(folder / name)
    read = os.open(folder / "reached", os.O_RDONLY | os.O_NONBLOCK)
    keep = os.open(folder / "reached", os.O_WRONLY)           # always a writer: no end-of-file to spin on
    env = {**os.environ, "ADAPTOK_CACHE": str(cache), "ADAPTOK_PAUSE_AT": f"models:1:{folder}"}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    gone = os.pidfd_open(p.pid)
    try:
        ready, _, _ = select.select([read, gone], [], [])
        seconds = time.perf_counter() - t0
        if read in ready:
            go = os.open(folder / "go", os.O_WRONLY)
            os.write(go, b"go")
            os.close(go)
    finally:
        for fd in (read, keep, gone):
            os.close(fd)
    err = p.communicate()[1]
    if p.returncode or read not in ready:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode} before its first frame: {err[-2000:]}")
    return seconds


def markdown(r, ran, table) -> list[str]:
    if not r.get("startup"):
        return []
    return ["## Start-up with a published VAE", "", ran(r, "startup"), "",
            "Fresh processes on the CPU with Wan 2.1's published architecture (random weights, 508 MB of "
            "safetensors; bench/startup.py). `load alone`: the interpreter, `import torch, diffusers` and "
            "`from_pretrained`. `adaptok`: `adaptok compress` from its start until it reaches the stage `models` "
            "(models loaded, no frame read yet; adaptok_cli/running/stages.py); `empty cache` is every run "
            "before the cache (it hashes the weights and probes the factors each time), `cache filled` every "
            "run after the first. Target: the time to the first frame at most 1.5x the load alone. `load_avg`: "
            "the machine's 1-minute load average at the end (a shared machine slows all three alike).", "",
            table(r["startup"], ["command", "runs", "fastest_s", "median_s", "over_load_alone", "load_avg"],
                  {"fastest_s": "{:.1f}", "median_s": "{:.1f}", "over_load_alone": "{:.2f}x", "load_avg": "{:.1f}"}), ""]
