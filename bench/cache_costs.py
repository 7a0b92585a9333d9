"""Part of `make bench` section `cache`: where a dense item's CPU time goes, and what zstd's entropy
coding costs against what it saves (issue 30's loading target).

torch.load of a bf16 `.pt` is a copy of bytes the page cache holds; an `.atok` item is zstd
decompression, a hold fill (a gather) and dequantisation. These tables time each step on its own, in
this process with one torch thread, so the floor under any reader of these files is a measurement,
not an argument. Then the same chunk payloads are compressed again with zstd's entropy coding of
literals off (negative levels: zstd stores literals raw) and with no zstd at all: faster to read,
but how many bytes does it cost at the default threshold?
"""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import torch
import zstandard

from adaptok_cli.core.codec import hold_dense
from adaptok_cli.format.atokfile import AtokDataset
from adaptok_cli.format.container import RECORD, AtokReader, decompressor

ROUNDS = 5
# (label, zstd level or None for the payloads stored as they are); level 10 is what .atok files use
RECODINGS = [("zstd level 10, as written", 10), ("zstd level -1 (literals not entropy-coded)", -1),
             ("zstd level -5 (literals not entropy-coded)", -5), ("no zstd (payloads stored raw)", None)]


def _per_item_ms(work, items: int) -> float:
    """The least CPU time of this thread over ROUNDS runs of work() (one pass over the items), per item.
    work gives its results one by one and each is dropped before the next is made, as a DataLoader
    worker drops an item once collated: a pass that kept them all (a list) would take fresh pages from
    the system for every item, page faults that cost a dense item 0.5 ms more than in a worker."""
    deque(work(), maxlen=0)
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.thread_time()
        deque(work(), maxlen=0)
        best = min(best, time.thread_time() - t0)
    return best / items * 1e3


def _records(path: Path) -> list[bytes]:
    """Each chunk record's zstd frame, as stored."""
    with AtokReader(path) as r:
        out = []
        for e in (r.entry(i) for i in range(r.num_chunks)):
            r.f.seek(e.offset + RECORD.size)
            out.append(r.f.read(e.length))
        return out


def stage_costs(atoks: list[Path], pts: list[Path]) -> list[dict]:
    """CPU ms per item of each step of a dense hold-fill read, beside torch.load of the same latents."""
    n = len(atoks)
    readers = [AtokReader(p) for p in atoks]
    try:
        chunks = [r.read_kept(0, r.num_chunks) for r in readers]      # what AtokDataset's dense path reads
        frames = [rec for p in atoks for rec in _records(p)]
        dense = [torch.load(p) for p in pts]
        out = [torch.empty_like(d) for d in dense]
        dataset = AtokDataset(atoks[0].parent, "dense")
        costs = {
            "torch.load bf16 .pt, whole item": lambda: (torch.load(p) for p in pts),
            "copy of the item's bf16 bytes (memcpy)": lambda: (o.copy_(d) for o, d in zip(out, dense)),
            ".atok: open, header and index checked": lambda: (AtokReader(p).close() for p in atoks),
            ".atok: records read, CRC-checked, decompressed": lambda: (
                r._payload(i, r.entry(i)) for r in readers for i in range(r.num_chunks)),
            ".atok: zstd decompression alone": lambda: (decompressor().decompress(f) for f in frames),
            ".atok: records to arrays (every check, mask, values)": lambda: (
                r.read_kept(0, r.num_chunks) for r in readers),
            ".atok: hold fill of read chunks (index, dequantise, gather)": lambda: (
                hold_dense(iter(()), c, r.header.channels) for r, c in zip(readers, chunks)),
            "AtokDataset dense hold, whole item": lambda: (dataset[i] for i in range(len(dataset))),
        }
        base = None
        rows = []
        for name, work in costs.items():
            ms = _per_item_ms(work, n)
            base = ms if base is None else base
            rows.append({"step": name, "cpu_ms_per_item": ms, "x_torch_load": ms / base})
        return rows
    finally:
        for r in readers:
            r.close()


def recodings(atoks: list[Path], bf16_bytes: int) -> list[dict]:
    """The same chunk payloads compressed each way of RECODINGS: the files' bytes (every other part as
    written) against bf16 safetensors of the same latents, and decompression CPU ms per item."""
    records = [_records(p) for p in atoks]
    payloads = [[decompressor().decompress(f) for f in recs] for recs in records]
    stored = sum(len(f) for recs in records for f in recs)
    rest = sum(p.stat().st_size for p in atoks) - stored
    rows = []
    for label, level in RECODINGS:
        if level is None:
            size, ms = sum(len(x) for pl in payloads for x in pl), 0.0
        else:
            zc = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
            frames = [zc.compress(x) for pl in payloads for x in pl]
            size = sum(map(len, frames))
            ms = _per_item_ms(lambda: (decompressor().decompress(f) for f in frames), len(atoks))
        rows.append({"payloads": label, "bytes": rest + size, "x_smaller_than_bf16": bf16_bytes / (rest + size),
                     "decompress_cpu_ms_per_item": ms})
    return rows


def run(atoks: list[Path], pts: list[Path], bf16_bytes: int) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                # what torch gives each DataLoader worker
    try:
        return {"stages": stage_costs(atoks, pts), "recodings": recodings(atoks, bf16_bytes)}
    finally:
        torch.set_num_threads(threads)


def markdown(r: dict, table) -> list[str]:
    f2 = "{:.2f}"
    return [
        "### Where a dense item's time goes", "",
        "CPU time of this thread per item (best of "
        f"{ROUNDS} passes over the clips, one torch thread, files in the page cache; bench/cache_costs.py), each "
        "step of `AtokDataset` dense hold-fill timed on its own over the default-threshold files, beside "
        "`torch.load` of the same latents as bf16 `.pt`. `x_torch_load`: the step's time over torch.load's "
        "whole item. The steps overlap (records to arrays includes the decompression), so they do not add up.", "",
        table(r["stages"], ["step", "cpu_ms_per_item", "x_torch_load"],
              {"cpu_ms_per_item": "{:.3f}", "x_torch_load": f2}), "",
        "The same chunk payloads compressed again, everything else in the files as written: zstd's entropy "
        "coding of literals (Huffman) is what is slow to undo, and what brings `.atok` past 4x.", "",
        table(r["recodings"], ["payloads", "bytes", "x_smaller_than_bf16", "decompress_cpu_ms_per_item"],
              {"bytes": "{:.0f}", "x_smaller_than_bf16": "{:.2f}x", "decompress_cpu_ms_per_item": "{:.3f}"}), "",
    ]
