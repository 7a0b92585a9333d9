"""Fuzz the .atok reader: mutated, truncated and forged containers must give a clean ContainerError
(or read back, when a mutation happens to leave the file valid) — never another exception, a hang,
or a memory blow-up.

    python scripts/fuzz_container.py --iterations 100000 --seed 1

Prints one JSON line: counts per outcome and mutation kind, the slowest case, peak RSS.
The test suite runs a short version of the same loop (tests/test_reliability.py).
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import struct
import tempfile
import time
import zlib
from pathlib import Path

import msgpack
import torch

from adaptok_cli.container import PRELUDE, TRAILER, AtokReader, ContainerError, write_bytes
from adaptok_cli.errors import InputError

HOSTILE = [0, -1, 1 << 31, 1 << 40, 10 ** 12, 100000, 2 ** 64 - 1, "x", None, [], 1.5, {"a": 1}]


def base_containers(seed=0) -> list[bytes]:
    """Small valid containers: int8 and fp16, one and several chunks."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for quant, ts in (("int8", (4, 2)), ("fp16", (3,)), ("int8", (1, 4, 4))):
        chunks = []
        for t in ts:
            mask = torch.rand(t, 2, 3, generator=g) > 0.5
            n = int(mask.sum())
            codes = (torch.randint(-127, 128, (4, n), generator=g, dtype=torch.int8) if quant == "int8"
                     else torch.randn(4, n, generator=g).half())
            chunks.append((mask, codes, torch.rand(4, generator=g) if quant == "int8" else None))
        header = {"width": 24, "height": 16, "latent_width": 3, "latent_height": 2, "channels": 4, "fps_num": 25,
                  "fps_den": 1, "tokenizer": {"name": "t", "fingerprint": "f", "time_factor": 4, "space_factor": 8,
                                              "channels": 4, "source": "builtin", "stateful": True},
                  "lit": None, "threshold": 0.1, "keep_ratio": None, "keyframe_interval": 0, "quant": quant,
                  "chunk": 4, "level": 3}
        frames = 1 + 4 * (sum(ts) - 1)
        out.append(write_bytes(header, chunks, frames, level=3))
    return out


def forge_header(data: bytes, rng: random.Random) -> bytes:
    """Replace one header field (or one tokeniser field) with a hostile value; checksums made valid."""
    _, version, flags, hlen, _ = PRELUDE.unpack_from(data)
    h = msgpack.unpackb(data[PRELUDE.size:PRELUDE.size + hlen], raw=False)
    target = h["tokenizer"] if rng.random() < 0.3 else h
    target[rng.choice(sorted(target))] = rng.choice(HOSTILE)
    raw = msgpack.packb(h, use_bin_type=True)
    body = data[PRELUDE.size + hlen:]
    return PRELUDE.pack(data[:8], version, flags, len(raw), zlib.crc32(raw)) + raw + body


def forge_index(data: bytes, rng: random.Random) -> bytes:
    """Rewrite the index with hostile frame counts or chunk entries; index checksum and trailer valid."""
    ioff, ilen, _, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    index = msgpack.unpackb(data[ioff:ioff + ilen], raw=False)
    if rng.random() < 0.3:
        index["frames"] = rng.choice(HOSTILE)
    else:
        entry = rng.choice(index["chunks"])
        entry[rng.randrange(len(entry))] = rng.choice(HOSTILE)
        if rng.random() < 0.2:
            index["chunks"] = index["chunks"] * rng.choice([2, 1000, 100000])
    raw = msgpack.packb(index, use_bin_type=True)
    return data[:ioff] + raw + TRAILER.pack(ioff, len(raw), zlib.crc32(raw), end)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["bitflip", "bytes", "truncate", "append", "insert", "delete", "header", "index"])
    b = bytearray(data)
    n = len(b)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "bytes":
        i = rng.randrange(n)
        b[i:i + rng.randint(1, 16)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "truncate":
        del b[rng.randrange(n):]
    elif kind == "append":
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "insert":
        i = rng.randrange(n)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "delete":
        i = rng.randrange(n)
        del b[i:i + rng.randint(1, 16)]
    elif kind == "header":
        return kind, forge_header(data, rng)
    else:
        return kind, forge_index(data, rng)
    return kind, bytes(b)


def read_all(path, partial=False):
    with AtokReader(path, partial=partial) as r:
        for i in range(len(r.chunks)):
            r.read_chunk(i)


def fuzz(iterations: int, seed: int = 0, folder: Path | None = None) -> dict:
    rng = random.Random(seed)
    bases = base_containers(seed)
    stats = {"iterations": iterations, "seed": seed, "outcomes": {}, "kinds": {}, "crashes": [],
             "slowest_s": 0.0}
    tmp = tempfile.TemporaryDirectory() if folder is None else None
    path = Path(folder or tmp.name) / "fuzz.atok"
    t_start = time.perf_counter()
    for it in range(iterations):
        kind, data = mutate(rng.choice(bases), rng)
        path.write_bytes(data)
        stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
        for partial in (False, True) if kind == "truncate" else (False,):
            t0 = time.perf_counter()
            try:
                read_all(path, partial)
                outcome = "valid"
            except (ContainerError, InputError):
                outcome = "clean error"
            except Exception as e:  # anything else is a bug in the reader
                outcome = "crash"
                stats["crashes"].append({"iteration": it, "kind": kind, "error": f"{type(e).__name__}: {e}"[:200]})
            dt = time.perf_counter() - t0
            stats["slowest_s"] = max(stats["slowest_s"], dt)
            key = outcome + (" (partial)" if partial else "")
            stats["outcomes"][key] = stats["outcomes"].get(key, 0) + 1
    stats["seconds"] = round(time.perf_counter() - t_start, 1)
    stats["slowest_s"] = round(stats["slowest_s"], 4)
    stats["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if tmp:
        tmp.cleanup()
    return stats


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    s = fuzz(a.iterations, a.seed)
    print(json.dumps(s))
    raise SystemExit(1 if s["crashes"] else 0)
