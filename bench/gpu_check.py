"""One command for whoever has a GPU: issue 28's figures for the pipeline, as JSON and as a table.

    PYTHONPATH=. python bench/gpu_check.py --out gpu-check.json          # about 3-4 minutes on one H200
    PYTHONPATH=. python bench/gpu_check.py --quick --device cpu --out x.json    # the code path, on a CPU

Runs from the repository root with nothing installed but its dependencies (torch, av, zstandard;
diffusers for the families check) and no network. Each check is independent: one that fails is
recorded with its error in the JSON, and the others go on. Checks:

1. throughput: TinyTok on 96 frames of footage (generated, or --clip scaled) at 456x256, 854x480 and
   1920x1080, in process with the model loaded and warmed up: compress fps, decompress fps (to .y4m),
   pipelined and serial (pipelined=False); the network share (encode + mask, or fill + LIT + decode,
   over the wall time); every stage's share; the device work alone (encode + mask of frames already on
   the device; fill + LIT + decode of chunks already read) and the pipeline's speed over it (goals at
   1080p: compress >= 0.9x, decompress >= 0.8x); peak GPU memory.
2. agreement: a clip at 854x480 compressed on the GPU and on the CPU: token rates, the PSNR of each
   decode against the source, and the GPU's container decoded on the CPU against its GPU decode (dB).
3. workers: 16 clips of 96 frames at 456x256 through `adaptok compress -j 1` and `-j 4` on the device.
4. families (when bench/families.py is there and diffusers installed): the Wan 2.1 architecture in
   bf16, adaptok against the VAE alone (goal >= 0.95x).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIZES = [(456, 256), (854, 480), (1920, 1080)]
QUICK_SIZES = [(128, 96), (256, 144)]
GOALS = {"compress": 0.9, "decompress": 0.8}        # pipeline over device work, at 1080p


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device):
    return torch.cuda.max_memory_allocated() / 2**20 if torch.device(device).type == "cuda" else None


def make_clip(path: Path, width: int, height: int, frames: int, clip: Path | None) -> Path:
    """frames of footage at width x height as x264: generated (a panning texture and a moving square),
    or --clip scaled to the size and played back and forth until there are enough frames."""
    if clip is None:
        from bench.common import moving_video
        return moving_video(path, width, height, frames)
    import av
    with av.open(str(clip)) as c:
        src = [f.to_ndarray(width=width, height=height, format="rgb24") for f in c.decode(video=0)]
    loop = src + src[-2:0:-1] if len(src) > 2 else src
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "fast", "crf": "16"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            c.mux(s.encode(av.VideoFrame.from_ndarray(loop[i % len(loop)], format="rgb24")))
        c.mux(s.encode())
    return path


def timed_run(fn, device):
    sync(device)
    reset_peak(device)
    t0 = time.perf_counter()
    res = fn()
    sync(device)
    return res, time.perf_counter() - t0, peak_mb(device)


def decode_all(atok: Path, device: str, keep=False):
    """fill + LIT + decode of every chunk, the chunks read beforehand -> (seconds, frames or None)."""
    from adaptok_cli.core.codec import Codec
    from adaptok_cli.format.container import AtokReader
    from adaptok_cli.models.matching import models_for
    with AtokReader(atok) as r:
        h = r.header
        chunks = [(r.read_chunk(i), r.entry(i).frames) for i in range(len(r.chunks))]
        tok, inpainter, _ = models_for(h, atok, None, True, torch.device(device))
    dec = Codec(tok, None).decoder(inpainter)
    out = []
    sync(device)
    t0 = time.perf_counter()
    for chunk, n in chunks:
        for _, frames in dec.decode_chunk(chunk, n, h.height, h.width):
            if keep:
                out.append(frames.copy())
    sync(device)
    return time.perf_counter() - t0, (np.concatenate(out) if keep else None)


def encode_all(tok, src: Path, device: str) -> float:
    """encode + mask of every frame, the frames already on the device -> seconds."""
    from adaptok_cli.core.codec import Codec, staged
    from adaptok_cli.running.options import CompressOptions
    from adaptok_cli.running.video import VideoReader
    opts = CompressOptions().check()
    with VideoReader(src) as r:
        frames = list(staged(list(r), device))
    enc = Codec(tok, opts.rule(tok), opts.quant).encoder()
    sync(device)
    t0 = time.perf_counter()
    for _ in enc.chunks(frames, opts.chunk):
        pass
    sync(device)
    return time.perf_counter() - t0


def throughput(tok, src: Path, n: int, tmp: Path, device: str) -> dict:
    import adaptok_cli as atk
    atok, y4m = tmp / "t.atok", tmp / "t.y4m"

    def compress(pipelined=True):
        return atk.compress(src, atok, loaded_tokenizer=tok, force=True, pipelined=pipelined)

    def decompress(pipelined=True):
        return atk.decompress(atok, y4m, device=device, force=True, pipelined=pipelined, loaded_tokenizer=tok)
    compress(), decompress()                      # warm-up: kernels chosen for this shape, caches filled
    row = {}
    for pipelined in (True, False):
        tag = "" if pipelined else "_serial"
        c, tc, pc = timed_run(lambda: compress(pipelined), device)
        d, td, pd = timed_run(lambda: decompress(pipelined), device)
        row[f"compress_fps{tag}"], row[f"decompress_fps{tag}"] = n / tc, n / td
        if pipelined:
            row.update(compress_network_share=(c.timing["encode"] + c.timing["mask"]) / tc,
                       decompress_network_share=(d.timing["fill"] + d.timing["lit"] + d.timing["decode"]) / td,
                       compress_shares={k: v / tc for k, v in c.timing.items()},
                       decompress_shares={k: v / td for k, v in d.timing.items()},
                       compress_peak_mb=pc, decompress_peak_mb=pd, token_rate=c.token_rate)
    encode_all(tok, src, device)                  # warm-up of the same work, alone
    row["device_compress_fps"] = n / encode_all(tok, src, device)
    decode_all(atok, device)
    row["device_decompress_fps"] = n / decode_all(atok, device)[0]
    row["compress_vs_device"] = row["compress_fps"] / row["device_compress_fps"]
    row["decompress_vs_device"] = row["decompress_fps"] / row["device_decompress_fps"]
    return row


def agreement(src: Path, tmp: Path, device: str) -> dict:
    """The same clip through the device and the CPU."""
    import adaptok_cli as atk
    from adaptok_cli.measure.metrics import psnr
    from adaptok_cli.models.matching import cached_tokenizer
    from adaptok_cli.running.video import read_frames
    ref = read_frames(src)
    row = {}
    frames = {}
    for dev in (device, "cpu"):
        path = tmp / f"agree-{torch.device(dev).type}.atok"
        res = atk.compress(src, path, loaded_tokenizer=cached_tokenizer("tinytok", dev), force=True)
        frames[dev] = decode_all(path, dev, keep=True)[1]
        row[f"token_rate_{torch.device(dev).type}"] = res.token_rate
        row[f"psnr_{torch.device(dev).type}"] = psnr(ref, frames[dev])
    made_here = tmp / f"agree-{torch.device(device).type}.atok"
    row["same_bytes"] = made_here.read_bytes() == (tmp / "agree-cpu.atok").read_bytes()
    cross = decode_all(made_here, "cpu", keep=True)[1]
    row["device_container_on_cpu_vs_device_db"] = psnr(frames[device], cross)
    row["device_container_on_cpu_identical"] = bool(np.array_equal(frames[device], cross))
    return row


def workers(src: Path, tmp: Path, device: str, clips: int) -> dict:
    """`adaptok compress FOLDER -o OUT -j N --device D`, wall time as a user sees it (process start included)."""
    folder = tmp / "clips"
    folder.mkdir()
    for i in range(clips):
        shutil.copy(src, folder / f"c{i:02d}.mp4")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    row = {"clips": clips}
    for j in (1, 4):
        out = tmp / f"out-j{j}"
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "adaptok_cli", "compress", str(folder), "-o", str(out), "-j", str(j),
                            "--device", device, "-q", "-f"], capture_output=True, text=True, env=env, timeout=300)
        row[f"j{j}_s"] = time.perf_counter() - t0
        if p.returncode:
            raise RuntimeError(f"-j {j} exited {p.returncode}: {p.stderr[-500:]}")
    row["j4_speedup"] = row["j1_s"] / row["j4_s"]
    row["same_bytes"] = all((tmp / "out-j1" / f.name).read_bytes() == f.read_bytes() for f in (tmp / "out-j4").iterdir())
    return row


def families(quick: bool, tmp: Path, device: str, log) -> list:
    try:
        from bench import families as fam
    except ImportError:
        return [{"skipped": "bench/families.py is not in this checkout"}]
    from bench.common import moving_video
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    fam.add_arguments(ap)
    args = ap.parse_args(["--families", "wan2.1", "--family-frames", "97", "--device", device, "--dtype", "auto",
                          *(["--quick"] if quick else [])])
    return fam.run(args, tmp, log, moving_video)


def environment(device: str) -> dict:
    import av
    import zstandard
    env = {"python": platform.python_version(), "torch": torch.__version__, "av": av.__version__,
           "zstandard": zstandard.__version__, "cpu_count": os.cpu_count(), "device": device, "platform": platform.platform()}
    if torch.device(device).type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(), gpus=torch.cuda.device_count())
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                                       timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="where the JSON results go")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to try the code path")
    ap.add_argument("--quick", action="store_true", help="small sizes, few frames: the code path in a minute")
    ap.add_argument("--clip", type=Path, help="footage to scale to each size (default: generated)")
    ap.add_argument("--frames", type=int, help="frames per clip (default 96; 16 with --quick)")
    ap.add_argument("--budget", type=float, default=330, help="seconds; checks that would start later are skipped")
    ap.add_argument("--skip", default="", help="checks to leave out: throughput,agreement,workers,families")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    start = time.perf_counter()
    n = args.frames or (16 if args.quick else 96)
    sizes = QUICK_SIZES if args.quick else SIZES
    device = args.device
    results = {"command": " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
               "frames": n, "environment": None, "throughput": [], "errors": []}
    skip = set(filter(None, args.skip.split(",")))

    def save():
        args.out.write_text(json.dumps(results, indent=1, default=float))

    def check(name, fn):
        """Run one check, recording its result or its error; never raises."""
        if name.split(":")[0] in skip:
            return None
        if time.perf_counter() - start > args.budget:
            results["errors"].append({"check": name, "error": f"skipped: past the {args.budget:g} s budget"})
            return None
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:     # noqa: BLE001  (one failed check must not end the others)
            results["errors"].append({"check": name, "error": f"{type(e).__name__}: {e}",
                                      "traceback": traceback.format_exc()[-3000:]})
            print(f"[{name}] FAILED: {type(e).__name__}: {e}", flush=True)
            out = None
        print(f"[{name}] {time.perf_counter() - t0:.1f} s", flush=True)
        save()
        return out

    results["environment"] = check("environment", lambda: environment(device))
    from adaptok_cli.models.matching import cached_tokenizer
    from adaptok_cli.models.tokenizer import pick_device
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = check("load", lambda: cached_tokenizer("tinytok", str(pick_device(device))))
        clips = {}
        for w, h in sizes:
            clips[(w, h)] = check(f"footage:{w}x{h}", lambda w=w, h=h: make_clip(tmp / f"in{w}x{h}.mp4", w, h, n, args.clip))
        for (w, h), src in clips.items():
            if tok is None or src is None:
                continue
            row = check(f"throughput:{w}x{h}", lambda src=src: throughput(tok, src, n, tmp, device))
            if row:
                results["throughput"].append({"size": f"{w}x{h}", "frames": n, **row})
        mid = clips.get(sizes[min(1, len(sizes) - 1)])
        if mid is not None:
            results["agreement"] = check("agreement", lambda: agreement(mid, tmp, device))
        small = clips.get(sizes[0])
        if small is not None:
            results["workers"] = check("workers", lambda: workers(small, tmp, device, 4 if args.quick else 16))
        results["families"] = check("families", lambda: families(args.quick, tmp, device, lambda r: print(r, flush=True)))
    results["seconds"] = time.perf_counter() - start
    save()
    print_report(results)
    print(f"wrote {args.out} ({results['seconds']:.0f} s)")


def print_report(r: dict):
    from bench.common import table
    print("\n== throughput (frames/s; shares of the wall time) ==")
    cols = ["size", "compress_fps", "decompress_fps", "compress_network_share", "decompress_network_share",
            "compress_fps_serial", "decompress_fps_serial", "device_compress_fps", "device_decompress_fps",
            "compress_vs_device", "decompress_vs_device", "compress_peak_mb", "decompress_peak_mb", "token_rate"]
    print(table(r["throughput"], cols, dict.fromkeys(cols, "{:.3g}")))
    for x in r["throughput"]:
        print(f"{x['size']} stage shares: compress " + ", ".join(f"{k} {v:.0%}" for k, v in x["compress_shares"].items())
              + "; decompress " + ", ".join(f"{k} {v:.0%}" for k, v in x["decompress_shares"].items()))
    big = next((x for x in r["throughput"] if x["size"] == "1920x1080"), None)
    if big:
        for what, goal in GOALS.items():
            got = big[f"{what}_vs_device"]
            print(f"goal at 1080p: {what} >= {goal}x the device work: {got:.2f}x {'met' if got >= goal else 'NOT met'}")
    for name in ("agreement", "workers"):
        if r.get(name):
            print(f"\n== {name} ==\n" + "\n".join(f"{k}: {v}" for k, v in r[name].items()))
    if r.get("families"):
        print("\n== families ==")
        for x in r["families"]:
            print(json.dumps(x, default=float))
    if r["errors"]:
        print("\n== errors ==")
        for e in r["errors"]:
            print(f"{e['check']}: {e['error']}")


if __name__ == "__main__":
    main()
