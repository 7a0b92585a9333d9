"""The .atok container (format v1, documented byte by byte in docs/FORMAT.md).

    magic(8) version(u16) flags(u16) header_len(u32) header_crc32(u32) header(msgpack)
    chunk records: length(u32) zstd_frame(length bytes, with zstd's own content checksum)
    index(msgpack)
    trailer: index_offset(u64) index_len(u32) index_crc32(u32) end_magic(8)

Everything is little-endian. Readers check every length, count and shape against the header and the
file size before they allocate or decompress anything, so a corrupt or hostile file is refused with
a ContainerError. Writers write to a temporary file beside the target and rename it into place.
"""
from __future__ import annotations

import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import torch
import zstandard

from .errors import ContainerError, InputError, OutputExistsError, WriteError

MAGIC = b"ATOK\r\n\x1a\n"
END_MAGIC = b"ATOKEND\n"
VERSION = 1
PRELUDE = struct.Struct("<8sHHII")      # magic, version, flags, header_len, header_crc32
TRAILER = struct.Struct("<QII8s")       # index_offset, index_len, index_crc32, end_magic
RECORD = struct.Struct("<I")            # chunk record length
PAYLOAD = struct.Struct("<II")          # inside a chunk: latent frames, kept positions

MAX_HEADER = 1 << 20
MAX_INDEX = 64 << 20
MAX_SIDE = 16384
MAX_FRAMES = 1 << 31
MAX_CHANNELS = 1024
MAX_CHUNK = 1024
MAX_CHUNK_RAW = 1 << 30      # a chunk never decompresses to more than 1 GiB
QUANT_BYTES = {"int8": 1, "fp16": 2}


@dataclass
class Chunk:
    """One decoded chunk record: mask (t, h, w) bool and kept values (C, kept) as stored."""
    index: int
    mask: torch.Tensor
    codes: torch.Tensor
    qscale: torch.Tensor | None

    @property
    def latent_frames(self):
        return self.mask.shape[0]


def chunk_raw_size(t, kept, h, w, c, quant):
    return PAYLOAD.size + (4 * c if quant == "int8" else 0) + math.ceil(t * h * w / 8) + kept * c * QUANT_BYTES[quant]


def encode_chunk(mask: torch.Tensor, codes: torch.Tensor, qscale, quant) -> bytes:
    t = mask.shape[0]
    parts = [PAYLOAD.pack(t, codes.shape[1])]
    if quant == "int8":
        parts.append(qscale.numpy().astype("<f4").tobytes())
    parts.append(np.packbits(mask.numpy().reshape(-1), bitorder="little").tobytes())
    dtype = "<i1" if quant == "int8" else "<f2"
    parts.append(codes.numpy().astype(dtype).tobytes())
    return b"".join(parts)


class AtokWriter:
    """Streams chunk records to a file object; `close()` writes index and trailer."""

    def __init__(self, f, header: dict, level: int = 10):
        self.f = f
        self.header = header
        self._zstd = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
        raw = msgpack.packb(header, use_bin_type=True)
        if len(raw) > MAX_HEADER:
            raise ValueError("header too large")
        self.f.write(PRELUDE.pack(MAGIC, VERSION, 0, len(raw), zlib.crc32(raw)) + raw)
        self.offset = PRELUDE.size + len(raw)
        self.chunks = []   # [offset, length, latent_frames, kept, raw_size, crc32 of the zstd frame]

    def write_chunk(self, mask, codes, qscale) -> int:
        raw = encode_chunk(mask, codes, qscale, self.header["quant"])
        comp = self._zstd.compress(raw)
        self.f.write(RECORD.pack(len(comp)) + comp)
        self.chunks.append([self.offset, len(comp), int(mask.shape[0]), int(codes.shape[1]), len(raw), zlib.crc32(comp)])
        self.offset += RECORD.size + len(comp)
        return RECORD.size + len(comp)

    def close(self, frames: int):
        index = msgpack.packb({"frames": frames, "chunks": self.chunks}, use_bin_type=True)
        self.f.write(index + TRAILER.pack(self.offset, len(index), zlib.crc32(index), END_MAGIC))
        self.offset += len(index) + TRAILER.size


class AtomicOutput:
    """A temporary file beside `path`, renamed into place on success and removed on failure.

    Two writers of one path each rename a complete file, so the result is always one whole file.
    """

    def __init__(self, path, force=False):
        self.path = Path(path)
        if self.path.exists() and not force:
            raise OutputExistsError(f"{self.path}: already exists (use -f to overwrite)")
        if self.path.is_dir():
            raise OutputExistsError(f"{self.path}: is a folder")
        self.tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.{id(self):x}.tmp"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(self.tmp, "xb")
        except OSError as e:
            raise WriteError(f"{self.path}: cannot write ({e.strerror})") from None

    def commit(self):
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise WriteError(f"{self.path}: write failed ({e.strerror})") from None

    def abort(self):
        try:
            self.f.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def _check(cond, path, what):
    if not cond:
        raise ContainerError(f"{path}: corrupt container ({what})")


def _unpack(raw, path, what):
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception:
        raise ContainerError(f"{path}: corrupt container ({what} is not valid msgpack)") from None


def _is_int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def validate_header(h, path):
    """Every field the reader relies on, type and range, before anything is allocated from it."""
    _check(isinstance(h, dict), path, "header is not a map")
    for key, lo, hi in [("width", 1, MAX_SIDE), ("height", 1, MAX_SIDE), ("latent_width", 1, MAX_SIDE),
                        ("latent_height", 1, MAX_SIDE), ("channels", 1, MAX_CHANNELS), ("chunk", 1, MAX_CHUNK),
                        ("fps_num", 1, 1 << 30), ("fps_den", 1, 1 << 30), ("keyframe_interval", 0, 1 << 30)]:
        _check(_is_int(h.get(key), lo, hi), path, f"header field {key} missing or out of range")
    _check(isinstance(h.get("quant"), str) and h["quant"] in QUANT_BYTES, path, "unknown quantisation")
    tok = h.get("tokenizer")
    _check(isinstance(tok, dict) and isinstance(tok.get("name"), str) and isinstance(tok.get("fingerprint"), str),
           path, "tokeniser identity missing")
    _check(_is_int(tok.get("space_factor"), 1, 64) and _is_int(tok.get("time_factor"), 1, 64), path, "tokeniser factors")
    _check(tok.get("channels") == h["channels"], path, "channel count disagrees with tokeniser")
    sf = tok["space_factor"]
    _check(h["latent_width"] * sf >= h["width"] and h["latent_height"] * sf >= h["height"], path, "latent size too small")
    _check(h["latent_width"] * sf < h["width"] + 64 and h["latent_height"] * sf < h["height"] + 64, path, "latent size too large")
    lit = h.get("lit")
    _check(lit is None or (isinstance(lit, dict) and isinstance(lit.get("fingerprint"), str)), path, "LIT identity")
    thr, kr = h.get("threshold"), h.get("keep_ratio")
    _check(thr is None or isinstance(thr, (int, float)), path, "threshold")
    _check(kr is None or (isinstance(kr, (int, float)) and 0 <= kr <= 1), path, "keep ratio")


class AtokReader:
    """Validated random access to a container: header, index, and chunk records one at a time."""

    def __init__(self, path, partial: bool = False):
        self.path = Path(path)
        self.partial, self.salvaged = partial, False
        try:
            self.f = open(self.path, "rb")
            self.size = os.fstat(self.f.fileno()).st_size
        except IsADirectoryError:
            raise ContainerError(f"{path}: is a folder, not an .atok file") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror})") from None
        try:
            self._read_structure()
        except BaseException:
            self.f.close()
            raise

    def _read_structure(self):
        p = self.path
        head = self.f.read(PRELUDE.size)
        if len(head) < PRELUDE.size or head[:8] != MAGIC:
            raise ContainerError(f"{p}: not an .atok file (wrong magic)")
        _, version, flags, hlen, hcrc = PRELUDE.unpack(head)
        if version != VERSION:
            raise ContainerError(f"{p}: .atok version {version} is not supported (this adaptok reads version {VERSION})")
        _check(flags == 0, p, "unknown flags")
        _check(hlen <= MAX_HEADER and PRELUDE.size + hlen + (0 if self.partial else TRAILER.size) <= self.size, p,
               "header length")
        raw = self.f.read(hlen)
        _check(len(raw) == hlen and zlib.crc32(raw) == hcrc, p, "header checksum mismatch")
        self.header = _unpack(raw, p, "header")
        validate_header(self.header, p)
        self.data_start = PRELUDE.size + hlen
        try:
            self._read_index()
        except ContainerError:
            if not self.partial:
                raise
            self._salvage()

    def _read_index(self):
        p = self.path
        _check(self.size >= self.data_start + TRAILER.size, p, "truncated: end marker missing")
        self.f.seek(self.size - TRAILER.size)
        ioff, ilen, icrc, end = TRAILER.unpack(self.f.read(TRAILER.size))
        _check(end == END_MAGIC, p, "truncated: end marker missing")
        _check(ilen <= MAX_INDEX and ioff >= self.data_start and ioff + ilen + TRAILER.size == self.size, p, "index position")
        self.f.seek(ioff)
        raw = self.f.read(ilen)
        _check(zlib.crc32(raw) == icrc, p, "index checksum mismatch")
        index = _unpack(raw, p, "index")
        _check(isinstance(index, dict) and isinstance(index.get("chunks"), list), p, "index layout")
        self.frames = index.get("frames")
        _check(_is_int(self.frames, 1, MAX_FRAMES), p, "frame count")
        h = self.header
        hw = h["latent_height"] * h["latent_width"]
        pos = self.data_start
        self.chunks = []
        for i, c in enumerate(index["chunks"]):
            _check(isinstance(c, list) and len(c) == 6 and all(_is_int(v, 0, 1 << 62) for v in c), p, f"index entry {i}")
            off, length, t, kept, raw_size, _ = c
            _check(off == pos and length > 0 and off + RECORD.size + length <= ioff, p, f"chunk {i} position")
            _check(1 <= t <= h["chunk"] and kept <= t * hw, p, f"chunk {i} shape")
            _check(raw_size == chunk_raw_size(t, kept, h["latent_height"], h["latent_width"], h["channels"], h["quant"])
                   and raw_size <= MAX_CHUNK_RAW, p, f"chunk {i} size")
            pos = off + RECORD.size + length
            self.chunks.append(c)
        _check(pos == ioff, p, "chunk records do not fill the file")
        _check(len(self.chunks) >= 1, p, "no chunks")
        self.latent_frames = sum(c[2] for c in self.chunks)
        tf = h["tokenizer"]["time_factor"]
        _check(self.frames <= self.latent_frames * tf, p, "frame count exceeds latent frames")

    def _salvage(self):
        """--partial: the index is lost (a cut file); walk the chunk records from the start and keep
        every complete one (its zstd frame checksum and contents must check out)."""
        h, p = self.header, self.path
        hw = h["latent_height"] * h["latent_width"]
        pos, self.chunks = self.data_start, []
        while pos + RECORD.size <= self.size:
            self.f.seek(pos)
            (length,) = RECORD.unpack(self.f.read(RECORD.size))
            if length == 0 or pos + RECORD.size + length > self.size or len(self.chunks) >= MAX_FRAMES:
                break
            comp = self.f.read(length)
            try:
                raw_size = zstandard.frame_content_size(comp)
                if not 0 < raw_size <= MAX_CHUNK_RAW:
                    break
                raw = zstandard.ZstdDecompressor().decompress(comp, max_output_size=raw_size)
            except zstandard.ZstdError:
                break
            if len(raw) < PAYLOAD.size:
                break
            t, kept = PAYLOAD.unpack_from(raw)
            if not (1 <= t <= h["chunk"] and kept <= t * hw) or \
                    len(raw) != chunk_raw_size(t, kept, h["latent_height"], h["latent_width"], h["channels"], h["quant"]):
                break
            self.chunks.append([pos, length, t, kept, len(raw), zlib.crc32(comp)])
            pos += RECORD.size + length
        if not self.chunks:
            raise ContainerError(f"{p}: truncated before the first complete chunk: nothing to recover")
        self.salvaged = True
        self.latent_frames = sum(c[2] for c in self.chunks)
        tf = h["tokenizer"]["time_factor"]
        stateful = h["tokenizer"].get("stateful", True)
        self.frames = sum(1 + tf * (c[2] - 1) if (i == 0 or not stateful) else tf * c[2]
                          for i, c in enumerate(self.chunks))

    @property
    def tokens_total(self):
        return self.latent_frames * self.header["latent_height"] * self.header["latent_width"]

    @property
    def tokens_kept(self):
        return sum(c[3] for c in self.chunks)

    def read_chunk(self, i: int) -> Chunk:
        """Decompress and check chunk i; any mismatch names the chunk."""
        h, p = self.header, self.path
        off, length, t, kept, raw_size, crc = self.chunks[i]
        self.f.seek(off)
        rec = self.f.read(RECORD.size + length)
        _check(len(rec) == RECORD.size + length and RECORD.unpack(rec[:4])[0] == length, p, f"chunk {i} record length")
        comp = rec[4:]
        _check(zlib.crc32(comp) == crc, p, f"chunk {i} checksum mismatch")
        try:
            declared = zstandard.frame_content_size(comp)
        except zstandard.ZstdError:
            declared = -2
        _check(declared == raw_size, p, f"chunk {i} frame header")
        try:
            raw = zstandard.ZstdDecompressor().decompress(comp, max_output_size=raw_size)
        except zstandard.ZstdError as e:
            raise ContainerError(f"{p}: corrupt container (chunk {i}: {e})") from None
        _check(len(raw) == raw_size, p, f"chunk {i} size")
        rt, rkept = PAYLOAD.unpack_from(raw)
        _check((rt, rkept) == (t, kept), p, f"chunk {i} disagrees with the index")
        c, lh, lw = h["channels"], h["latent_height"], h["latent_width"]
        o = PAYLOAD.size
        qscale = None
        if h["quant"] == "int8":
            qscale = torch.from_numpy(np.frombuffer(raw, "<f4", c, o).astype(np.float32))
            o += 4 * c
            _check(bool(torch.isfinite(qscale).all()), p, f"chunk {i} scales")
        nbits = t * lh * lw
        bits = np.unpackbits(np.frombuffer(raw, np.uint8, math.ceil(nbits / 8), o), count=nbits, bitorder="little")
        o += math.ceil(nbits / 8)
        mask = torch.from_numpy(bits.astype(bool).reshape(t, lh, lw))
        _check(int(mask.sum()) == kept, p, f"chunk {i} mask count")
        dtype = np.int8 if h["quant"] == "int8" else np.dtype("<f2")
        codes = torch.from_numpy(np.frombuffer(raw, dtype, c * kept, o).reshape(c, kept).copy())
        return Chunk(i, mask, codes, qscale)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_bytes(header, chunks, frames, level=10) -> bytes:
    """A whole container in memory (tests, eval)."""
    buf = io.BytesIO()
    w = AtokWriter(buf, header, level)
    for mask, codes, qscale in chunks:
        w.write_chunk(mask, codes, qscale)
    w.close(frames)
    return buf.getvalue()
