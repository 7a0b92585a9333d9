"""Fuzz the .atok reader and decoder: mutated, truncated and forged containers must give a clean
AdaptokError (or decode, when a mutation happens to leave the file valid) — never another exception,
a hang, or a memory blow-up.

    python tests/fuzz_container.py --iterations 100000 --seed 1            # the reader alone
    python tests/fuzz_container.py --decode --iterations 100000 --seed 1   # full decompress
    python tests/fuzz_container.py --shards --iterations 20000 --seed 1    # tar shards, as verify reads them
    python tests/fuzz_container.py --audio --iterations 5000 --seed 1      # audio headers and packets

The reader loop starts from small forged containers of every kind this adaptok writes (int8 and
fp16; version 5, and version 6 with a log-variance block), and also rewrites chunk payloads with
their checksums fixed ("payload": masks, scales, values, sizes, the log-variance's bounds).

--decode starts from real containers of the built-in tokeniser (tiny generated clips) and runs every
mutant through pipeline.decompress with the built-in tokeniser and LIT; its mutations know the
format (header fields set to plausible wrong values, chunk payloads rewritten with bad masks, scales
or values and their checksums fixed). Each case runs under an alarm (a hang) and the process under
an address-space limit (a memory blow-up becomes a MemoryError, counted as a crash).

--shards builds tars of real containers and mutates their members (order, names, duplicates, deep
or large JSON, corrupt containers, orphans) or their headers (sizes, types, GNU sparse maps, pax
records, checksums, cuts); each is read as `verify` reads it, and the memory the reader holds is
traced. --audio sets the audio header's fields (codec, rate, layout, time base, setup bytes) to
values FFmpeg may or may not take, or forges packets, and runs each through verify's checks and the
whole decompress into .mkv or .mp4 (where PyAV is handed every field).

Prints one JSON line: counts per outcome and mutation kind, the slowest case, peak RSS.
The test suite runs short versions of every loop (tests/test_reliability.py).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import resource
import struct
import tempfile
import time
import zlib
from pathlib import Path

import msgpack
import numpy as np
import signal
import tarfile
import torch
import zstandard

from adaptok_cli.format.container import (PAYLOAD, PRELUDE, QUANT_BYTES, RECORD, TRAILER, AtokReader, ContainerError,
                                          header_crc, write_bytes)
from adaptok_cli.errors import AdaptokError, InputError

HOSTILE = [0, -1, 1 << 31, 1 << 40, 10 ** 12, 100000, 2 ** 64 - 1, "x", None, [], 1.5, {"a": 1}]


def base_containers(seed=0) -> list[bytes]:
    """Small valid containers: int8 and fp16, one and several chunks."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for quant, ts in (("int8", (4, 2)), ("fp16", (3,)), ("int8", (1, 4, 4))):
        chunks = []
        for t in ts:
            mask = torch.rand(t, 2, 3, generator=g) > 0.5
            if not chunks:
                mask[0] = True      # the stream's first latent frame is kept whole
            n = int(mask.sum())
            codes = (torch.randint(-127, 128, (4, n), generator=g, dtype=torch.int8) if quant == "int8"
                     else torch.randn(4, n, generator=g).half())
            chunks.append((mask, codes, torch.rand(4, generator=g) if quant == "int8" else None,
                           4 * t - (3 if not chunks else 0)))
        header = {"width": 24, "height": 16, "latent_width": 3, "latent_height": 2, "channels": 4, "fps_num": 25,
                  "fps_den": 1, "tokenizer": {"name": "t", "fingerprint": "f", "time_factor": 4, "space_factor": 8,
                                              "channels": 4, "source": "builtin", "stateful": True},
                  "lit": None, "threshold": 0.1, "keep_ratio": None, "keyframe_interval": 0, "quant": quant,
                  "chunk": 4, "level": 3}
        frames = 1 + 4 * (sum(ts) - 1)
        out.append(write_bytes(header, chunks, frames, level=3))
        if quant == "int8" and len(ts) == 2:      # the same with the log-variance: version 6
            logvars = [(*ch, torch.rand(4, ch[1].shape[1], generator=g) * 8 - 6) for ch in chunks]
            out.append(write_bytes({**header, "logvar": "uint8"}, logvars, frames, level=3))
    return out


def with_header(data: bytes, h: dict) -> bytes:
    """data with its header replaced by h: header CRC, chunk offsets in the index, index CRC and
    trailer all moved along, so the file is valid apart from what h itself says."""
    _, version, flags, hlen, _ = PRELUDE.unpack_from(data)
    raw = msgpack.packb(h, use_bin_type=True)
    delta = len(raw) - hlen
    ioff, ilen, _, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    index = msgpack.unpackb(data[ioff:ioff + ilen], raw=False)
    for e in index["chunks"] + index.get("audio", []):
        e[0] += delta
    iraw = msgpack.packb(index, use_bin_type=True)
    return (PRELUDE.pack(data[:8], version, flags, len(raw), header_crc(version, flags, raw)) + raw + data[PRELUDE.size + hlen:ioff]
            + iraw + TRAILER.pack(ioff + delta, len(iraw), zlib.crc32(iraw), end))


def forge_header(data: bytes, rng: random.Random) -> bytes:
    """Replace one header field (or one tokeniser field) with a hostile value; checksums made valid."""
    _, version, flags, hlen, _ = PRELUDE.unpack_from(data)
    h = msgpack.unpackb(data[PRELUDE.size:PRELUDE.size + hlen], raw=False)
    target = h["tokenizer"] if rng.random() < 0.3 else h
    target[rng.choice(sorted(target))] = rng.choice(HOSTILE)
    return with_header(data, h)


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
    kind = rng.choice(["bitflip", "bytes", "truncate", "append", "insert", "delete", "header", "index", "payload"])
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
    elif kind == "payload":
        return kind, forge_payload(data, rng)
    else:
        return kind, forge_index(data, rng)
    return kind, bytes(b)


def read_all(path, partial=False):
    """Every chunk through read_chunk; a whole file also through the datasets' and AtokFile's faster
    paths (read_kept: dense hold, crops, sparse tokens), which must refuse what read_chunk refuses."""
    with AtokReader(path, partial=partial) as r:
        for i in range(len(r.chunks)):
            r.read_chunk(i)
    if not partial:
        read_items(path)


def read_items(path):
    from adaptok_cli.format.atokfile import AtokFile, dataset_item
    with AtokFile(path) as f:
        f.dense()
        f.dense(f.num_chunks - 1, layout="CTHW", dtype=torch.bfloat16)
        for i in range(f.num_chunks):
            f.sparse(i)
        for mode, crop in (("dense", 2), ("sparse", None), ("sparse", 3)):
            dataset_item(f, mode, crop)


def fuzz(iterations: int, seed: int = 0, folder: Path | None = None) -> dict:
    rng = random.Random(seed)
    bases = base_containers(seed)
    stats = {"iterations": iterations, "seed": seed, "outcomes": {}, "kinds": {}, "versions": {}, "crashes": [],
             "slowest_s": 0.0}
    tmp = tempfile.TemporaryDirectory() if folder is None else None
    path = Path(folder or tmp.name) / "fuzz.atok"
    t_start = time.perf_counter()
    for it in range(iterations):
        base = rng.choice(bases)
        kind, data = mutate(base, rng)
        path.write_bytes(data)
        stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
        version = PRELUDE.unpack_from(base)[1]     # 6: a base with the log-variance
        stats["versions"][version] = stats["versions"].get(version, 0) + 1
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


# --- through decompress -------------------------------------------------------------------------

def decode_bases(folder: Path) -> list[tuple[bytes, str]]:
    """Real containers of the built-in tokeniser: odd sizes, one frame, several chunks, both modes, and
    one with an audio track (decoded to .mkv, so its packets are muxed back) -> [(bytes, output suffix)]."""
    import av
    from adaptok_cli.running.pipeline import CompressOptions, compress
    from adaptok_cli.running.video import VideoWriter
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h, t, opts) in enumerate([(24, 16, 9, dict(threshold=0.2, chunk=2)),
                                         (21, 13, 6, dict(keep_ratio=0.5, chunk=1, quant="fp16")),
                                         (16, 16, 1, dict(threshold=0.15)),
                                         (40, 24, 17, dict(threshold=0.3, chunk=2, keyframe_interval=3))]):
        video = folder / f"base{i}.mkv"
        writer = VideoWriter(video, w, h, 25)
        base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for k in range(t):
            frame = base.copy()
            frame[:, k % w] = 255
            writer.write(frame)
        writer.close()
        compress(video, folder / f"base{i}.atok", CompressOptions(device="cpu", **opts), force=True)
        out.append(((folder / f"base{i}.atok").read_bytes(), ".y4m"))
    with av.open(str(folder / "talk.mkv"), "w") as c:          # 0.5 s of video with a PCM tone
        v, a = c.add_stream("ffv1", rate=25), c.add_stream("pcm_s16le", rate=8000, layout="mono")
        v.width, v.height, v.pix_fmt = 24, 16, "yuv420p"
        for k in range(12):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), format="rgb24")
            f = f.reformat(format="yuv420p")
            f.pts = k
            c.mux(v.encode(f))
        tone = (3000 * np.sin(np.arange(4000) / 3)).astype(np.int16)[None]
        for k in range(0, 4000, 500):
            af = av.AudioFrame.from_ndarray(tone[:, k:k + 500], format="s16", layout="mono")
            af.sample_rate, af.pts = 8000, k
            c.mux(a.encode(af))
        c.mux(v.encode(None))
        c.mux(a.encode(None))
    compress(folder / "talk.mkv", folder / "talk.atok", CompressOptions(device="cpu", threshold=0.2, chunk=1), force=True)
    out.append(((folder / "talk.atok").read_bytes(), ".mkv"))
    return out


PLAUSIBLE = {"width": [1, 7, 16, 25, 64, 4097, 16384], "height": [1, 9, 16, 17, 4097, 16384],
             "latent_width": [1, 2, 3, 4, 8, 2048], "latent_height": [1, 2, 3, 4, 2048], "channels": [1, 8, 15, 17, 64],
             "fps_num": [1, 30000, 1 << 30], "fps_den": [1, 1001, 1 << 30], "chunk": [1, 2, 1024],
             "keyframe_interval": [0, 1, 2, 3], "quant": ["int8", "fp16"], "threshold": [None, 0.0, 0.15, 0.5, 100.0,
             float("nan"), float("inf"), -1.0, 1e9], "keep_ratio": [None, 0.0, 0.5, 1.0, 1.5],
             "lit": [None, {"name": "lit-tinytok", "fingerprint": "0" * 16}, {"fingerprint": 5}]}
PLAUSIBLE_TOKENIZER = {"name": ["tinytok", "/tmp", ".", "..", "x/y", "/etc/passwd", "a.safetensors", "cosmos:CV4x8x8"],
                       "fingerprint": ["0" * 16, ""], "time_factor": [1, 2, 3, 4, 8], "space_factor": [1, 4, 8, 16],
                       "channels": [1, 16, 17], "stateful": [True, False], "source": ["builtin", "file", "/tmp"]}


def forge_plausible(data: bytes, rng: random.Random) -> bytes:
    """Set one to three header fields to well-typed values that disagree with the rest; checksums valid."""
    _, version, flags, hlen, _ = PRELUDE.unpack_from(data)
    h = msgpack.unpackb(data[PRELUDE.size:PRELUDE.size + hlen], raw=False)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.35:
            key = rng.choice(sorted(PLAUSIBLE_TOKENIZER))
            h["tokenizer"][key] = rng.choice(PLAUSIBLE_TOKENIZER[key])
        else:
            key = rng.choice(sorted(PLAUSIBLE))
            h[key] = rng.choice(PLAUSIBLE[key])
    return with_header(data, h)


def forge_payload(data: bytes, rng: random.Random) -> bytes:
    """Rewrite one chunk's payload (mask bits, scales, values, t or kept) and make every checksum,
    size and offset agree again, so only the decoder's own checks stand in the way."""
    _, _, _, hlen, _ = PRELUDE.unpack_from(data)
    h = msgpack.unpackb(data[PRELUDE.size:PRELUDE.size + hlen], raw=False)
    ioff, ilen, _, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    index = msgpack.unpackb(data[ioff:ioff + ilen], raw=False)
    i = rng.randrange(len(index["chunks"]))
    off, length = index["chunks"][i][:2]
    raw = bytearray(zstandard.ZstdDecompressor().decompress(data[off + RECORD.size:off + RECORD.size + length]))
    c = h["channels"]
    o_mask = PAYLOAD.size + (4 * c if h["quant"] == "int8" else 0)
    what = rng.choice(["mask", "scale", "values", "t", "kept"] + (["logvar"] if h.get("logvar") else []))
    if what == "logvar":    # a version-6 block's lowest value or step (its codes follow the kept values)
        t, kept = PAYLOAD.unpack_from(raw)
        o_logvar = o_mask + -(-t * h["latent_height"] * h["latent_width"] // 8) + kept * c * QUANT_BYTES[h["quant"]]
        if o_logvar + 8 * c <= len(raw):
            struct.pack_into("<f", raw, o_logvar + 4 * rng.randrange(2 * c),
                             rng.choice([float("nan"), float("inf"), -1.0, 1e30, -1e30, 25.0, -40.0]))
    elif what == "mask":
        j = rng.randrange(o_mask, o_mask + max(1, (len(raw) - o_mask) // 4))
        raw[j] ^= 1 << rng.randrange(8)
    elif what == "scale" and h["quant"] == "int8":
        struct.pack_into("<f", raw, PAYLOAD.size + 4 * rng.randrange(c), rng.choice([float("nan"), float("inf"), 0.0, -1.0, 1e30]))
    elif what == "values" and len(raw) > o_mask + 2:
        j = rng.randrange(o_mask, len(raw) - 1)
        raw[j:j + 2] = rng.choice([b"\x00\x7c", b"\x00\x7e", b"\xff\xff", b"\x80\x80"])   # inf, nan (fp16), extremes
    elif what == "t":
        struct.pack_into("<I", raw, 0, rng.choice([0, 1, 2, 9, 1 << 20]))
    else:
        struct.pack_into("<I", raw, 4, rng.choice([0, 1, 10 ** 6]))
    comp = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True).compress(bytes(raw))
    t, kept = PAYLOAD.unpack_from(raw)
    delta = len(comp) - length
    body = bytearray(data[:ioff])
    body[off:off + RECORD.size + length] = RECORD.pack(len(comp)) + comp
    for k, e in enumerate(index["chunks"]):
        if k == i:
            e[1:6] = [len(comp), t, kept, len(raw), zlib.crc32(comp)]
        elif k > i:
            e[0] += delta
    for e in index.get("audio", []):      # audio records follow the chunks
        e[0] += delta
    iraw = msgpack.packb(index, use_bin_type=True)
    return bytes(body) + iraw + TRAILER.pack(ioff + delta, len(iraw), zlib.crc32(iraw), end)


def audio_record(data: bytes, i: int) -> list:
    """Audio record i's packets, as stored."""
    ioff, ilen, _, _ = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    off, length = msgpack.unpackb(data[ioff:ioff + ilen], raw=False)["audio"][i][:2]
    return msgpack.unpackb(zstandard.ZstdDecompressor().decompress(data[off + RECORD.size:off + RECORD.size + length]),
                           raw=False)


def with_audio_record(data: bytes, i: int, packets, extra: bytes = b"") -> bytes:
    """data with audio record i replaced by these packets (extra bytes after its zstd frame); sizes,
    offsets and every checksum valid."""
    ioff, ilen, _, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    index = msgpack.unpackb(data[ioff:ioff + ilen], raw=False)
    off, length = index["audio"][i][:2]
    raw = msgpack.packb(packets, use_bin_type=True)
    comp = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True).compress(raw) + extra
    delta = len(comp) - length
    index["audio"][i][1:4] = [len(comp), len(raw), zlib.crc32(comp)]
    for e in index["audio"][i + 1:]:
        e[0] += delta
    body = data[:off] + RECORD.pack(len(comp)) + comp + data[off + RECORD.size + length:ioff]
    iraw = msgpack.packb(index, use_bin_type=True)
    return body + iraw + TRAILER.pack(ioff + delta, len(iraw), zlib.crc32(iraw), end)


def forge_audio(data: bytes, rng: random.Random) -> bytes:
    """Rewrite one audio record's packets (timestamps, flags, data, shape) with every checksum valid."""
    ioff, ilen, _, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    index = msgpack.unpackb(data[ioff:ioff + ilen], raw=False)
    if not index.get("audio"):
        return data
    i = rng.randrange(len(index["audio"]))
    packets = audio_record(data, i)
    k = rng.randrange(len(packets))
    field = rng.randrange(6)
    if field < 3:
        packets[k][field] = rng.choice([-1, 0, 1 << 40, -(1 << 40), (1 << 62)])
    elif field == 3:
        packets[k][3] = rng.choice([True, False, 1, "x"])
    elif field == 4:
        packets[k][4] = rng.choice([b"", b"\xff" * 7, bytes(rng.randrange(256) for _ in range(50))])
    else:
        packets[k] = rng.choice([[], [1, 2], "x", None, packets[k] * 2])
    return with_audio_record(data, i, packets)


def mutate_for_decode(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["plausible", "plausible", "payload", "payload", "audio", "header", "index", "bitflip", "truncate"])
    if kind == "audio":
        return kind, forge_audio(data, rng)
    if kind == "plausible":
        return kind, forge_plausible(data, rng)
    if kind == "payload":
        return kind, forge_payload(data, rng)
    return _one(kind, data, rng)


def _one(kind, data, rng):
    """One of the reader's mutations, by name."""
    while True:
        k, out = mutate(data, rng)
        if k == kind:
            return k, out


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def alarmed(stats: dict, seconds: int, fn) -> Exception | None:
    """fn() under a per-case alarm (a hang raises Hang) -> the exception it raised, or None; the
    slowest case's time is kept in stats."""
    t0 = time.perf_counter()
    signal.alarm(seconds)
    try:
        fn()
        return None
    except Exception as e:
        return e
    finally:
        signal.alarm(0)
        stats["slowest_s"] = max(stats["slowest_s"], time.perf_counter() - t0)


def outcome_of(error: Exception | None, stats: dict, it: int, kind: str, ok: str) -> str:
    """A case's outcome: ok, a clean error (AdaptokError), a hang, or a crash (recorded in stats)."""
    if error is None:
        return ok
    if isinstance(error, AdaptokError):
        return "clean error"
    if isinstance(error, Hang):
        stats["hangs"] += 1
        return "hang"
    stats["crashes"].append({"iteration": it, "kind": kind, "error": f"{type(error).__name__}: {error}"[:300]})
    return "crash"


def finish(stats: dict, t_start: float) -> dict:
    """A fuzz run's closing figures: its time, its slowest case, the process's peak memory."""
    stats["seconds"] = round(time.perf_counter() - t_start, 1)
    stats["slowest_s"] = round(stats["slowest_s"], 4)
    stats["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return stats


def fuzz_decode(iterations: int, seed: int = 0, case_seconds: int = 20) -> dict:
    """Mutants of real containers through pipeline.decompress (built-in tokeniser and LIT)."""
    from adaptok_cli.running.pipeline import decompress
    rng = random.Random(seed)
    stats = {"iterations": iterations, "seed": seed, "mode": "decode", "outcomes": {}, "kinds": {}, "crashes": [],
             "hangs": 0, "slowest_s": 0.0}
    old = signal.signal(signal.SIGALRM, _alarm)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        bases = decode_bases(d)
        path = d / "fuzz.atok"
        for it in range(iterations):
            base, suffix = rng.choice(bases)
            out = d / f"out{suffix}"
            kind, data = mutate_for_decode(base, rng)
            path.write_bytes(data)
            stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
            for partial in (False, True) if kind == "truncate" else (False,):
                error = alarmed(stats, case_seconds,
                                lambda: decompress(path, out, force=True, device="cpu", partial=partial))
                key = outcome_of(error, stats, it, kind, "decoded") + (" (partial)" if partial else "")
                stats["outcomes"][key] = stats["outcomes"].get(key, 0) + 1
    signal.signal(signal.SIGALRM, old)
    return finish(stats, t_start)


# --- shards ---------------------------------------------------------------------------------------

TAR_TYPES = b"0123456LKSxgXDMNV\x00\xff"           # regular, links, devices, dir, fifo, GNU long names and
#                                                    sparse, pax headers, and types no tar has


def _tar_member(name: str, data: bytes) -> bytes:
    """One member as compress writes it (USTAR), or as PAX where USTAR cannot hold the name."""
    for fmt in (tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        try:
            with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
                end = t.offset
            return buf.getvalue()[:end]
        except ValueError:
            continue
    raise AssertionError(name)


def _header_fixed(block: bytearray) -> bytearray:
    """A tar header block with its checksum made right again, so that tarfile reads what we forged."""
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block[:512])
    return block


def shard_bases(atoks: list[bytes]) -> list[list[tuple[str, bytes]]]:
    """Shards as lists of (name, bytes) members: containers with their metadata, as compress writes them."""
    out = []
    for n in (1, 2, 3):
        members = []
        for i in range(n):
            members += [(f"clip{i}.atok", atoks[i % len(atoks)]), (f"clip{i}.json", json.dumps({"source": f"c{i}.mp4"}).encode())]
        out.append(members)
    return out


def mutate_shard(members: list[tuple[str, bytes]], rng: random.Random) -> tuple[str, bytes]:
    """A shard (tar bytes) with one hostile change: in its members (order, names, duplicates, deep or
    large JSON, corrupt containers) or in its tar headers (sizes, types, sparse maps, pax and GNU long
    headers, checksums, cuts)."""
    members = [list(m) for m in members]
    kind = rng.choice(["members", "members", "header", "header", "pax", "sparse", "bytes", "truncate"])
    if kind == "members":
        what = rng.randrange(6)
        if what == 0:
            rng.shuffle(members)
        elif what == 1:
            members.insert(rng.randrange(len(members) + 1), list(rng.choice(members)))       # a duplicate
        elif what == 2:
            m = rng.choice(members)
            m[0] = rng.choice(["../x.atok", "/abs.atok", "a/b/../c.atok", ".atok", "x.tar.atok", "k." * 60 + "atok",
                               "é.atok", "a\\b.json", "dir/", "x.json"])
        elif what == 3:
            depth = rng.choice([10, 40, 5000, 60000])
            members.append(("deep.json", b"[" * depth + b"]" * depth))
        elif what == 4:
            m = rng.choice(members)
            m[1] = mutate(m[1], rng)[1] if m[0].endswith(".atok") else bytes(rng.randrange(256) for _ in range(40))
        else:
            members += [(f"orphan{i}.atok", b"x" * rng.randrange(600)) for i in range(rng.choice([1, 10, 200]))]
        return kind, b"".join(_tar_member(n, d) for n, d in members) + b"\0" * 1024
    body = [bytearray(_tar_member(n, d)) for n, d in members]
    i = rng.randrange(len(body))
    block = body[i]
    if kind == "header":
        field = rng.choice([(124, 12), (156, 1), (0, 100), (148, 8), (257, 8)])     # size, type, name, checksum, magic
        if field == (124, 12):
            value = rng.choice([b"%011o\0" % rng.choice([0, 1, 511, 1 << 20, 1 << 33 - 1]), b"\x80" + b"\0" * 3 +
                                (1 << 62).to_bytes(8, "big"), b"\xff" * 12, b"zzzzzzzzzzz\0"])
        elif field == (156, 1):
            value = bytes([rng.choice(TAR_TYPES)])
        else:
            value = bytes(rng.randrange(256) for _ in range(field[1]))
        block[field[0]:field[0] + field[1]] = value
        if field != (148, 8):
            _header_fixed(block)
    elif kind == "pax":
        records = rng.choice([{"size": str(rng.choice([0, -1, 1 << 40, 1 << 62]))}, {"path": "../../etc/x.atok"},
                              {"GNU.sparse.size": str(1 << 31), "GNU.sparse.map": "0,512"},
                              {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": str(1 << 35)},
                              {"path": "x" * rng.choice([10, 5000, 200000])}, {"linkpath": "/etc/passwd"},
                              {"size": "9" * 5000}])
        head = tarfile.TarInfo("././@PaxHeader")
        raw = b"".join(f"{len(k) + len(v) + 3 + len(str(len(k) + len(v) + 3))} {k}={v}\n".encode()
                       for k, v in records.items())
        head.size, head.type = len(raw) if rng.random() < 0.8 else rng.choice([1 << 30, 3]), tarfile.XHDTYPE
        pax = head.tobuf(format=tarfile.USTAR_FORMAT) + raw + b"\0" * (-len(raw) % 512)
        body.insert(i, bytearray(pax))
    elif kind == "sparse":
        block[156:157] = tarfile.GNUTYPE_SPARSE
        block[386:410] = b"%011o\0%011o\0" % (rng.choice([0, 1 << 40]), rng.choice([0, 512, 1 << 33]))
        block[482:483] = bytes([rng.choice([0, 1])])          # an extended sparse map follows (or not)
        block[483:495] = b"%011o\0" % rng.choice([1 << 31, 1 << 33 - 1, 0])
        _header_fixed(block)
        if block[482]:
            body.insert(i + 1, bytearray(bytes(rng.randrange(256) for _ in range(511)) + b"\x01"))
    else:
        j = rng.randrange(len(block))
        block[j:j + 1] = bytes([rng.randrange(256)])
    data = b"".join(body) + b"\0" * 1024
    if kind == "truncate":
        data = data[:rng.randrange(len(data))]
    return kind, data


def read_shard(path, limits=None):
    """What verify does to a shard: every member listed and every container checked."""
    from adaptok_cli.format.container import DEFAULT_LIMITS
    from adaptok_cli.format.shards import members
    outcome = {"ok": 0, "refused": 0}
    for m in members(path, limits or DEFAULT_LIMITS):
        if m.error is not None:
            outcome["refused"] += 1
            continue
        try:
            with AtokReader(m.atok) as r:
                for i in range(len(r.chunks)):
                    r.check_chunk(i)
            outcome["ok"] += 1
        except (ContainerError, InputError):
            outcome["refused"] += 1
    return outcome


def fuzz_shards(iterations: int, seed: int = 0) -> dict:
    """Mutated shards read as verify reads them: only clean errors (per member or for the shard); the
    memory the tar reader holds (shards.members, traced) whatever the shard declares is reported."""
    import tracemalloc

    from adaptok_cli.format.shards import members
    rng = random.Random(seed)
    bases = shard_bases(base_containers(seed))
    stats = {"iterations": iterations, "seed": seed, "mode": "shards", "outcomes": {}, "kinds": {}, "crashes": [],
             "members_ok": 0, "members_refused": 0, "slowest_s": 0.0, "peak_reader_traced_mb": 0.0}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.tar"
        for it in range(iterations):
            kind, data = mutate_shard(rng.choice(bases), rng)
            path.write_bytes(data)
            stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
            t0 = time.perf_counter()
            tracemalloc.start()             # what the tar reader itself holds, whatever the shard declares
            try:
                list(members(path))
            except (ContainerError, InputError):
                pass
            except Exception:
                pass                        # read_shard below meets it again and counts it
            peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
            tracemalloc.stop()
            stats["peak_reader_traced_mb"] = max(stats["peak_reader_traced_mb"], round(peak, 3))
            try:
                got = read_shard(path)
                stats["members_ok"] += got["ok"]
                stats["members_refused"] += got["refused"]
                outcome = "read" if not got["refused"] else "members refused"
            except (ContainerError, InputError):
                outcome = "shard refused"
            except Exception as e:  # anything else is a bug
                outcome = "crash"
                stats["crashes"].append({"iteration": it, "kind": kind, "error": f"{type(e).__name__}: {e}"[:300]})
            stats["slowest_s"] = max(stats["slowest_s"], time.perf_counter() - t0)
            stats["outcomes"][outcome] = stats["outcomes"].get(outcome, 0) + 1
    return finish(stats, t_start)


# --- audio headers ----------------------------------------------------------------------------------

AUDIO_VALUES = {
    "codec": ["aac", "mp3", "mp2", "opus", "vorbis", "flac", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le",
              "pcm_f32le", "evil", "", 5, None],
    "sample_rate": [1, 7, 8000, 22050, 44100, 48000, 96000, 768000, 768001, 0, -1, "44100", 44100.0],
    "layout": ["mono", "stereo", "5.1", "7.1", "22.2", "hexadecagonal", "FL+FR", "FL+FL", "0x3", "0x0", "3 channels",
               "2c", "64c", "0c", "evil", "", "mono+stereo", "5.1(side)", "x" * 64, "x" * 65, 2, None],
    "time_base_num": [1, 2, 1000, 1 << 30, (1 << 30) + 1, 0, -1],
    "time_base_den": [1, 1000, 44100, 48000, 90000, 1 << 30, 0],
    "extradata": [b"", b"\x12\x10", b"\xff" * 100, b"OpusHead\x01\x01" + b"\0" * 9, b"OpusHead\x01\x02" + b"\0" * 9,
                  bytes(range(256)) * 4, "text", None],
}


def audio_bases(folder: Path) -> list[bytes]:
    """Real containers of the built-in tokeniser with an AAC, a PCM and an opus track (0.4 s of 24x16)."""
    import av
    from adaptok_cli.running.pipeline import CompressOptions, compress
    rng = np.random.default_rng(1)
    out = []
    for codec, rate in (("aac", 44100), ("pcm_s16le", 8000), ("opus", 48000)):
        src = folder / f"talk-{codec}.mkv"
        with av.open(str(src), "w") as c:
            v, a = c.add_stream("ffv1", rate=25), c.add_stream(codec, rate=rate, layout="mono")
            v.width, v.height, v.pix_fmt = 24, 16, "yuv420p"
            for k in range(10):
                f = av.VideoFrame.from_ndarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), format="rgb24")
                f = f.reformat(format="yuv420p")
                f.pts = k
                c.mux(v.encode(f))
            fmt = a.codec_context.format.name
            step = a.codec_context.frame_size or 512
            tone = (0.3 * np.sin(np.arange(int(0.4 * rate)) / 3)).astype(np.float32)[None]
            for k in range(0, tone.shape[1] - step + 1, step):
                chunk = tone[:, k:k + step]
                chunk = (chunk * 32767).astype(np.int16) if fmt == "s16" else chunk
                af = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
                af.sample_rate, af.pts = rate, k
                c.mux(a.encode(af))
            c.mux(v.encode(None))
            c.mux(a.encode(None))
        compress(src, folder / f"talk-{codec}.atok", CompressOptions(device="cpu", threshold=0.2, chunk=1), force=True)
        out.append((folder / f"talk-{codec}.atok").read_bytes())
    return out


def forge_audio_header(data: bytes, rng: random.Random) -> bytes:
    """One to three of the header's audio fields set to values FFmpeg may or may not take."""
    _, _, _, hlen, _ = PRELUDE.unpack_from(data)
    h = msgpack.unpackb(data[PRELUDE.size:PRELUDE.size + hlen], raw=False)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(sorted(AUDIO_VALUES))
        h["audio"][key] = rng.choice(AUDIO_VALUES[key])
    return with_header(data, h)


def fuzz_audio(iterations: int, seed: int = 0, case_seconds: int = 20) -> dict:
    """Audio tracks with hostile header fields or packets through verify's checks and the whole
    decompress (to .mkv or .mp4, where PyAV is handed every field): only AdaptokErrors."""
    from adaptok_cli.running.pipeline import decompress
    rng = random.Random(seed)
    stats = {"iterations": iterations, "seed": seed, "mode": "audio", "outcomes": {}, "kinds": {}, "crashes": [],
             "hangs": 0, "slowest_s": 0.0}
    old = signal.signal(signal.SIGALRM, _alarm)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        bases = audio_bases(d)
        path = d / "fuzz.atok"
        for it in range(iterations):
            kind = rng.choice(["header", "header", "packets"])
            data = rng.choice(bases)
            data = forge_audio_header(data, rng) if kind == "header" else forge_audio(data, rng)
            path.write_bytes(data)
            stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
            out = d / f"out{rng.choice(['.mkv', '.mp4'])}"

            def case():
                with AtokReader(path) as r:                 # what verify does
                    for i in range(len(r.audio)):
                        r.read_audio(i)
                    r.probe_audio()
                decompress(path, out, force=True, device="cpu", use_lit=False)
            outcome = outcome_of(alarmed(stats, case_seconds, case), stats, it, kind, "decoded")
            stats["outcomes"][outcome] = stats["outcomes"].get(outcome, 0) + 1
    signal.signal(signal.SIGALRM, old)
    return finish(stats, t_start)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--decode", action="store_true", help="run mutants through decompress, not only the reader")
    ap.add_argument("--shards", action="store_true", help="mutated tar shards, read as verify reads them")
    ap.add_argument("--audio", action="store_true", help="hostile audio header fields and packets through decompress")
    ap.add_argument("--memory-limit-mb", type=int, default=6000,
                    help="address-space limit of this process (--decode, --shards, --audio): a blow-up becomes a "
                         "MemoryError")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.decode or a.shards or a.audio:
        resource.setrlimit(resource.RLIMIT_AS, (a.memory_limit_mb << 20, resource.RLIM_INFINITY))
    run = fuzz_decode if a.decode else fuzz_shards if a.shards else fuzz_audio if a.audio else fuzz
    s = run(a.iterations, a.seed)
    print(json.dumps(s))
    raise SystemExit(1 if s["crashes"] or s.get("hangs") else 0)
