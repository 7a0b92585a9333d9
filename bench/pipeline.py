"""Bench section `pipeline`: what the overlapping stages buy, with the network taken out.

    python -m bench.bench --sections pipeline

A fake tokeniser with no network (`FakeTokenizer`: latents from a fixed pool of noise, frames from a
fixed picture) leaves only reading, staging, masking, zstd and writing: the pipeline's own ceiling in
frames/s. Each size is compressed and decompressed (to .y4m) serially (pipelined=False, the stages
one after another in one thread, as before issue 28) and pipelined, alternating, in one run; the
fastest of the rounds counts. With a time per call (`FakeTokenizer(seconds=...)`) it stands for a
device of known speed (tests/test_overlap.py).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from adaptok_cli.core import layout
from adaptok_cli.models.tokenizer import Tokenizer, host_frames

SIZES = [(854, 480, 64), (1920, 1080, 48)]
QUICK_SIZES = [(128, 96, 9)]


class FakeTokenizer(Tokenizer):
    """A stateful 4x8x8 tokeniser with 16 channels and no network: each call costs `seconds` (slept,
    so the CPU is free meanwhile, as while a GPU works) and nothing else. Its latents move a little from
    one latent frame to the next, more in some places than others, so the rule keeps a part of them."""

    name, source, fingerprint = "fake", "file", "fa4e" * 4
    time_factor, space_factor, pad_multiple, channels, stateful = 4, 8, 8, 16, True

    def __init__(self, seconds: float = 0.0, device="cpu"):
        self.seconds, self.device = seconds, torch.device(device)
        self.scale = torch.ones(self.channels)
        self.calls = 0
        self._latents: dict = {}
        self._frames: dict = {}

    def _pool(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._latents:
            g = torch.Generator().manual_seed(0)
            base = torch.randn(self.channels, h, w, generator=g)
            spread = torch.linspace(0, 0.3, w).expand(h, w)        # still on the left, busy on the right
            self._latents[(h, w)] = base + spread * torch.randn(8, self.channels, h, w, generator=g)
        return self._latents[(h, w)]

    def encode(self, frames, state=None):
        t = self.latents_for(len(frames), state is None)
        start = state or 0
        pool = self._pool(*(layout.latent_side(s, self.pad_multiple, self.space_factor) for s in frames.shape[2:]))
        z = pool[torch.arange(start, start + t) % len(pool)]
        self._spend()
        return z, start + t

    def decode(self, latents, state=None, uint8=False):
        n = layout.frames_for(len(latents), self.time_factor, state is None)
        key = tuple(layout.pixels_for(s, self.space_factor) for s in latents.shape[2:])
        if key not in self._frames:    # one picture, (3, H, W) as a network makes it
            x = torch.arange(3 * key[0] * key[1], dtype=torch.int64).remainder(251).to(torch.uint8)
            self._frames[key] = x.view(1, 3, *key)
        x = self._frames[key].expand(n, -1, -1, -1)
        self._spend()
        # to the host as every tokeniser's frames go (on a CPU the layout is a copy, counted as decode)
        return host_frames(x if uint8 else x.float() / 127.5 - 1, uint8), (state or 0) + len(latents)

    def _spend(self):
        self.calls += 1
        if self.seconds:
            time.sleep(self.seconds)


def run(tmp, quick: bool, log, rounds: int = 3) -> list[dict]:
    """Serial against pipelined compress and decompress with the fake tokeniser, alternating."""
    import adaptok_cli as atk
    from bench.bench import moving_video
    rows = []
    tok = FakeTokenizer()
    for w, h, n in QUICK_SIZES if quick else SIZES:
        src = moving_video(Path(tmp) / f"p{w}x{h}.mp4", w, h, n)
        atok, y4m = Path(tmp) / f"p{w}.atok", Path(tmp) / f"p{w}.y4m"
        best: dict = {}
        for _ in range(1 if quick else rounds):
            for pipelined in (False, True):
                key = "pipelined" if pipelined else "serial"
                t0 = time.perf_counter()
                c = atk.compress(src, atok, loaded_tokenizer=tok, force=True, unit="spread", pipelined=pipelined)
                tc = time.perf_counter() - t0
                t0 = time.perf_counter()
                d = atk.decompress(atok, y4m, use_lit=False, force=True, pipelined=pipelined, loaded_tokenizer=tok)
                td = time.perf_counter() - t0
                old = best.get(key)
                best[key] = {"compress_s": min(tc, old["compress_s"]) if old else tc,
                             "decompress_s": min(td, old["decompress_s"]) if old else td,
                             "compress_shares": {k: v / tc for k, v in c.timing.items()} if not old or tc < old["compress_s"]
                             else old["compress_shares"],
                             "decompress_shares": {k: v / td for k, v in d.timing.items()} if not old or td < old["decompress_s"]
                             else old["decompress_shares"],
                             "token_rate": c.token_rate}
        s, p = best["serial"], best["pipelined"]
        row = {"size": f"{w}x{h}", "frames": n, "token_rate": p["token_rate"], "load_average": os.getloadavg()[0],
               "compress_fps_serial": n / s["compress_s"], "compress_fps_pipelined": n / p["compress_s"],
               "compress_speedup": s["compress_s"] / p["compress_s"],
               "decompress_fps_serial": n / s["decompress_s"], "decompress_fps_pipelined": n / p["decompress_s"],
               "decompress_speedup": s["decompress_s"] / p["decompress_s"],
               "compress_shares_pipelined": p["compress_shares"], "decompress_shares_pipelined": p["decompress_shares"]}
        rows.append(row)
        log(row)
        for f in (src, atok, y4m):
            f.unlink(missing_ok=True)
    return rows


GPU_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "gpu-check.json"


def markdown(r: dict, ran, table) -> list[str]:
    """The sections of docs/BENCHMARKS.md (ran and table: bench/common.py's): the ceiling, and the GPU check."""
    return (ceiling_markdown(r, ran, table) if "pipeline" in r else []) + gpu_markdown(table)


def gpu_markdown(table, path: Path = GPU_RESULTS) -> list[str]:
    """How to run bench/gpu_check.py, and its figures when docs/gpu-check.json holds a run."""
    lines = ["## On a GPU: bench/gpu_check.py", "",
             "One command measures what a CPU cannot: issue 28's throughput table (compress and decompress to .y4m "
             "with TinyTok on 96 frames of generated footage, or `--clip FILE` scaled, at 456x256, 854x480 and "
             "1920x1080), each stage's share, the device work alone and the pipeline's speed over it (goals at "
             "1080p: compress >= 0.9x, decompress >= 0.8x), peak GPU memory, CPU/GPU agreement, `-j 1` against "
             "`-j 4` on one GPU, and, where bench/families.py is present, the Wan 2.1 architecture in bf16 against "
             "the VAE alone (goal >= 0.95x). From the repository root, nothing installed but the dependencies, no "
             "network; about 3 to 4 minutes on one H200 with 16 cores (`--budget` seconds, default 330, after which "
             "checks are skipped, not started):", "",
             "```sh", "PYTHONPATH=. python bench/gpu_check.py --out docs/gpu-check.json",
             "python -m bench.bench --plots-only          # this file again, with the tables below", "```", "",
             "A check that fails is recorded with its error in the JSON and the others go on. "
             "`--quick --device cpu` runs the code path on a CPU in a few minutes (small sizes, 16 frames).", ""]
    if not path.is_file():
        return lines + ["No GPU run is recorded here yet.", ""]
    import json
    g = json.loads(path.read_text())
    env = g.get("environment") or {}
    lines += [f"Recorded run: `{g.get('command')}`, {env.get('gpu', env.get('device'))}, {env.get('cpu_count')} cores, "
              f"torch {env.get('torch')}, {g.get('frames')} frames per clip, {g.get('seconds', 0):.0f} s.", ""]
    if g.get("throughput"):
        f1, f2 = "{:.1f}", "{:.2f}"
        cols = ["size", "compress_fps", "decompress_fps", "compress_network_share", "decompress_network_share",
                "device_compress_fps", "device_decompress_fps", "compress_vs_device", "decompress_vs_device",
                "compress_fps_serial", "decompress_fps_serial", "compress_peak_mb", "decompress_peak_mb"]
        lines += [table(g["throughput"], cols, {c: f1 for c in cols if "fps" in c or "mb" in c}
                        | {c: f2 for c in cols if "share" in c or "vs" in c}), "",
                  "Stage shares (busy time over wall time; stages overlap):", ""]
        lines += [f"- {x['size']}: compress " + ", ".join(f"{k} {v:.0%}" for k, v in x["compress_shares"].items())
                  + "; decompress " + ", ".join(f"{k} {v:.0%}" for k, v in x["decompress_shares"].items())
                  for x in g["throughput"]]
        lines.append("")
    for name in ("agreement", "workers"):
        if g.get(name):
            lines += [f"{name}: " + ", ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in g[name].items()), ""]
    for x in g.get("families") or []:
        lines += ["families: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in x.items()), ""]
    for e in g.get("errors") or []:
        lines += [f"error in {e['check']}: {e['error']}", ""]
    return lines


def ceiling_markdown(r: dict, ran, table) -> list[str]:
    """The pipeline's own ceiling: serial against pipelined with the FakeTokenizer."""
    f1, f2 = "{:.1f}", "{:.2f}x"
    rows = [{**x, "compress stage shares (pipelined)": ", ".join(f"{k} {v:.0%}" for k, v in x["compress_shares_pipelined"].items()),
             "decompress stage shares (pipelined)": ", ".join(f"{k} {v:.0%}" for k, v in x["decompress_shares_pipelined"].items())}
            for x in r["pipeline"]]
    cols = ["size", "frames", "compress_fps_serial", "compress_fps_pipelined", "compress_speedup", "decompress_fps_serial",
            "decompress_fps_pipelined", "decompress_speedup", "compress stage shares (pipelined)",
            "decompress stage shares (pipelined)"]
    loads = [f"{x['size']} {x['load_average']:.1f}" for x in r["pipeline"] if "load_average" in x]
    load = (" The machine's load average (1 minute) after each size: " + ", ".join(loads) + "; other work on a "
            "shared machine moves these figures by tens of percent from run to run.") if loads else ""
    return ["## The pipeline's own ceiling", "", ran(r, "pipeline"), "",
            "`adaptok_cli.compress` and `decompress` (to .y4m) of a generated clip with a tokeniser that costs nothing "
            "(bench/pipeline.py `FakeTokenizer`), so only reading and decoding the video, staging, the mask, zstd, "
            "unpacking, the fill and writing remain. `serial`: `pipelined=False`, every stage in one thread one "
            "after another (the program before issue 28, with this run's faster frame conversion); `pipelined`: the "
            "stages in threads joined by bounded queues (adaptok_cli/running/overlap.py). Serial and pipelined alternate, "
            "the fastest of three rounds counts. A stage share is its busy time over the wall time: the shares "
            "add up to more than 100% when stages overlap; the largest is the stage the others wait for." + load, "",
            table(rows, cols, {c: f1 for c in cols if "fps" in c} | {"compress_speedup": f2, "decompress_speedup": f2}),
            ""]
