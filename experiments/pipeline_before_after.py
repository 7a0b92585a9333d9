"""What did issue 28's staged pipeline buy over the code before it, with the network taken out?

    git worktree add ../adaptok-before 8c23edf        # the commit before issue 28's pipeline
    python -m experiments.pipeline_before_after --old ../adaptok-before

Each measurement is its own process on the same generated clip: the old checkout's compress and
decompress (to .y4m), then this checkout's, serial (pipelined=False) and pipelined, alternating for a
few rounds; the fastest of each counts. The tokeniser is a no-network fake (latents from a pool of
noise, frames from a fixed picture) made to match each checkout's own tokenisers: frames come back
(T, 3, H, W) before, laid out channels last after (tokenizer.host_frames). Prints one JSON line per
size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
import torch
import adaptok_cli as atk
from adaptok_cli.core import layout
from adaptok_cli.running import pipeline
from adaptok_cli.models.tokenizer import Tokenizer
try:
    from adaptok_cli.models.tokenizer import host_frames
except ImportError:               # before issue 28: frames came back (T, 3, H, W)
    def host_frames(x, uint8):
        return x.contiguous().cpu()

class Fake(Tokenizer):
    name, source, fingerprint = "fake", "file", "fa4e" * 4
    time_factor, space_factor, pad_multiple, channels, stateful = 4, 8, 8, 16, True
    device = torch.device("cpu")
    def __init__(self):
        self.scale, self.pool, self.pics = torch.ones(16), {}, {}
    def encode(self, frames, state=None):
        h, w = frames.shape[2] // 8, frames.shape[3] // 8
        if (h, w) not in self.pool:
            g = torch.Generator().manual_seed(0)
            base = torch.randn(16, h, w, generator=g)
            self.pool[(h, w)] = base + torch.linspace(0, 0.3, w).expand(h, w) * torch.randn(8, 16, h, w, generator=g)
        t, start = self.latents_for(len(frames), state is None), state or 0
        return self.pool[(h, w)][torch.arange(start, start + t) % 8], start + t
    def decode(self, latents, state=None, uint8=False):
        n = layout.frames_for(len(latents), 4, state is None)
        key = (latents.shape[2] * 8, latents.shape[3] * 8)
        if key not in self.pics:
            self.pics[key] = torch.arange(3 * key[0] * key[1]).remainder(251).to(torch.uint8).view(1, 3, *key)
        return host_frames(self.pics[key].expand(n, -1, -1, -1), True), (state or 0) + len(latents)

src, tmp, mode = sys.argv[1], sys.argv[2], sys.argv[3]
tok = Fake()
pipeline.models_for = lambda *a, **k: (tok, None, None)        # decompress without looking up a model
kw = {} if mode == "old" else {"pipelined": mode == "pipelined"}
t0 = time.perf_counter()
atk.compress(src, tmp + "/x.atok", loaded_tokenizer=tok, force=True, unit="spread", **kw)
tc = time.perf_counter() - t0
t0 = time.perf_counter()
atk.decompress(tmp + "/x.atok", tmp + "/x.y4m", use_lit=False, force=True, **kw)
td = time.perf_counter() - t0
print(json.dumps({"compress_s": tc, "decompress_s": td}))
'''


def measure(checkout: Path, src: Path, tmp: str, mode: str, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run([sys.executable, "-c", CHILD, str(src), tmp, mode], capture_output=True, text=True, env=env,
                       cwd=tmp)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    return json.loads(p.stdout.splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="a checkout of the code before the pipeline")
    ap.add_argument("--sizes", default="854x480:64,1920x1080:48", help="WxH:frames, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each process")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.common import moving_video
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes.split(","):
            size, n = spec.split(":")
            w, h = map(int, size.split("x"))
            src = moving_video(Path(tmp) / f"{size}.mp4", w, h, int(n))
            best: dict = {}
            for _ in range(args.rounds):
                for mode, checkout in (("old", args.old), ("serial", ROOT), ("pipelined", ROOT)):
                    got = measure(checkout, src, tmp, mode, args.threads)
                    for k, v in got.items():
                        best[f"{mode}_{k}"] = min(v, best.get(f"{mode}_{k}", v))
            row = {"size": size, "frames": int(n)}
            for mode in ("old", "serial", "pipelined"):
                row[f"{mode}_compress_fps"] = int(n) / best[f"{mode}_compress_s"]
                row[f"{mode}_decompress_fps"] = int(n) / best[f"{mode}_decompress_s"]
            for cmd in ("compress", "decompress"):
                row[f"{cmd}_pipelined_over_old"] = row[f"pipelined_{cmd}_fps"] / row[f"old_{cmd}_fps"]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
