"""The .atok container, format 5, or 6 with the posterior's log-variance (documented byte by byte in
docs/FORMAT.md; versions 1 to 4 are read).

    magic(8) version(u16) flags(u16) header_len(u32) header_crc32(u32) header(msgpack)
    chunk records: length(u32) zstd_frame(length bytes, with zstd's own content checksum)
    index(msgpack)
    trailer: index_offset(u64) index_len(u32) index_crc32(u32) end_magic(8)

Everything is little-endian. Readers check every length, count and shape against the header and the
file size before they allocate or decompress anything, so a corrupt or hostile file is refused with
a ContainerError. Writers write to a temporary file beside the target and rename it into place.
"""
from __future__ import annotations

import bisect
import copy
import io
import itertools
import math
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgpack
import zstandard

from adaptok_cli.defaults import AUDIO_CODECS, MAX_SIDE, MAX_THRESHOLD
from adaptok_cli.errors import ContainerError, InputError, ModelUnavailableError
from adaptok_cli.core.layout import frame_spans, is_keyframe, pixels_for, starts_stream

if TYPE_CHECKING:
    import numpy as np
    import torch

MAGIC = b"ATOK\r\n\x1a\n"
END_MAGIC = b"ATOKEND\n"
VERSION = 5                 # what this adaptok writes: int8 values stored as differences (delta_codes)
LOGVAR_VERSION = 6          # ... and writes instead when a file holds the log-variance (compress --store-logvar)
READS = (1, 2, 3, 4, 5, 6)  # 1: no audio; 2: 1 + an audio track; 3: 2 + frame counts (audio optional); 4: 3 + unit;
                            # 5: 4 + int8 values as differences; 6: 5 + each chunk's log-variance (header logvar)
PRELUDE = struct.Struct("<8sHHII")      # magic, version, flags, header_len, header_crc32
TRAILER = struct.Struct("<QII8s")       # index_offset, index_len, index_crc32, end_magic
RECORD = struct.Struct("<I")            # chunk record length
PAYLOAD = struct.Struct("<II")          # inside a chunk: latent frames, kept positions

MAX_HEADER = 1 << 20
MIN_UNIT, MAX_UNIT = 1e-6, 1e6  # the rule's per-channel unit of change (header field unit)
MAX_INDEX = 64 << 20
MAX_FRAMES = 1 << 31
MAX_CHANNELS = 1024
MAX_CHUNK = 1024
MIN_FPS, MAX_FPS = Fraction(1, 3600), Fraction(1000)
MAX_SECONDS = 1e7           # a frame range's start or duration (about 116 days)
MAX_FRAME_LIMIT = 1 << 40
QUANT_BYTES = {"int8": 1, "fp16": 2}
LOGVAR_QUANTS = ("uint8",)  # how version 6 stores the log-variance (header field logvar)
# the log-variance's range: diffusers clamps a VAE's posterior to it (DiagonalGaussianDistribution);
# writers clamp to it, readers refuse a chunk whose stored values can leave it (LOGVAR_SLACK: rounding)
LOGVAR_MIN, LOGVAR_MAX, LOGVAR_SLACK = -30.0, 20.0, 1e-3
LOGVAR_STEPS = 255
MAX_AUDIO_RECORD = 1 << 20  # an audio record never decompresses to more than 1 MiB
MAX_EXTRADATA = 1 << 16
ZSTD_FRAME_OVERHEAD = 1 << 12   # more than zstd's frame header, block headers and checksum add to a payload
MAX_SPAN = 64 << 20         # read_chunks reads consecutive chunk records in one read up to this many bytes
# index entry columns: [offset, length, latent frames, kept positions, payload size, crc32 of the zstd
# frame, video frames]; versions 1 and 2 store the first six, and the reader adds the frame counts
OFFSET, LENGTH, LATENT_FRAMES, KEPT, RAW_SIZE, CRC, FRAMES = range(7)


class IndexEntry(NamedTuple):
    """One chunk's index entry, by name (AtokReader.entry)."""
    offset: int
    length: int
    latent_frames: int
    kept: int
    raw_size: int
    crc: int
    frames: int


@dataclass(frozen=True)
class Limits:
    """The resource budget: what a container may make adaptok allocate, checked before any allocation.

    A container that implies more is refused (exit 65) whatever its own size; a user who trusts a file
    raises the budget with --max-pixels (limits_for). Defaults fit 4K video with the default chunking.
    """
    max_pixels: int = 4096 * 4096          # width x height of a frame
    max_chunk_values: int = 1 << 25        # latent values (t x h x w x C) of one chunk: 128 MiB as float32
    max_chunks: int = 1 << 20              # index entries: 56 bytes each once read

    @property
    def max_file_bytes(self) -> int:
        """The largest container this budget admits: header, index, trailer and max_chunks records of the
        largest payload (fp16 values of max_chunk_values, a mask bit each) plus as many audio records.
        A shard member declaring more is refused before it is read (shards.py)."""
        record = RECORD.size + ZSTD_FRAME_OVERHEAD + chunk_raw_size(1, self.max_chunk_values, 1, self.max_chunk_values,
                                                                   1, "fp16", logvar=True)
        audio = RECORD.size + ZSTD_FRAME_OVERHEAD + MAX_AUDIO_RECORD
        return PRELUDE.size + MAX_HEADER + self.max_chunks * (record + audio) + MAX_INDEX + TRAILER.size

    @classmethod
    def for_pixels(cls, max_pixels: int) -> "Limits":
        """A budget for frames up to max_pixels, chunks scaled with it (never below the defaults)."""
        base = cls()
        factor = max(1, -(-max_pixels // base.max_pixels))
        return cls(max_pixels, base.max_chunk_values * factor, base.max_chunks)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Section:
    """A container stored inside another file and read in place: `size` bytes from `offset` of `file`
    (a shard member). `name` is what messages call it: shard.tar:key."""
    file: Path
    offset: int
    size: int
    name: str

    def __str__(self):
        return self.name

    def copy_to(self, dst: Path, block: int = 1 << 20):
        """Write the container to the file dst, `block` bytes at a time: copying a member out holds one
        block, however large the member."""
        with open(self.file, "rb") as f, open(dst, "wb") as out:
            f.seek(self.offset)
            left = self.size
            while left:
                data = f.read(min(block, left))
                if not data:
                    raise InputError(f"{self.name}: cut short while being read")
                out.write(data)
                left -= len(data)


class _SectionFile:
    """A read-only file object over a Section: no read leaves it."""

    def __init__(self, s: Section):
        self.f = open(s.file, "rb")
        self.start, self.size, self.pos = s.offset, s.size, 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = max(0, pos + (0, self.pos, self.size)[whence])
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else max(0, min(n, self.size - self.pos))
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def close(self):
        self.f.close()


@dataclass
class Chunk:
    """One decoded chunk record: mask (t, h, w) bool and kept values (C, kept) as stored; logvar: the
    kept positions' log-variance (C, kept) float32, dequantised (version 6), else None."""
    index: int
    mask: torch.Tensor
    codes: torch.Tensor
    qscale: torch.Tensor | None
    logvar: torch.Tensor | None = None


class KeptArrays(NamedTuple):
    """One decoded chunk as numpy arrays, as Chunk has them (AtokReader.read_kept): mask (t, h, w) bool,
    codes (C, kept) int8 or float16 (possibly a read-only view of the payload), qscale (C,) float32
    or None."""
    index: int
    mask: np.ndarray
    codes: np.ndarray
    qscale: np.ndarray | None


def _own(a: np.ndarray) -> np.ndarray:
    """a, or a copy of it where it is a read-only view (torch takes only writable memory)."""
    return a if a.flags.writeable else a.copy()


def chunk_raw_size(t, kept, h, w, c, quant, logvar: bool = False):
    """The payload's size in bytes (docs/FORMAT.md); logvar: with a version-6 log-variance block."""
    size = PAYLOAD.size + (4 * c if quant == "int8" else 0) + math.ceil(t * h * w / 8) + kept * c * QUANT_BYTES[quant]
    return size + (logvar_size(kept, c) if logvar else 0)


def logvar_size(kept: int, c: int) -> int:
    """Bytes of a chunk's log-variance block: per channel its lowest value and step (f32 each), then
    one byte per kept value."""
    return 8 * c + kept * c


def encode_logvar(logvar: torch.Tensor) -> bytes:
    """Kept log-variances (C, kept) -> the version-6 block: lo f32[C], step f32[C], then uint8 codes
    (value = lo + code x step), each channel's row stored as differences (delta_codes), as int8
    values are. 255 steps over each channel's range in the chunk: the error is at most half a step,
    which moves the standard deviation exp(logvar / 2) by a quarter step (docs/FORMAT.md)."""
    import numpy as np
    lv = logvar.float().clamp(LOGVAR_MIN, LOGVAR_MAX).numpy()
    c = lv.shape[0]
    lo = lv.min(1) if lv.shape[1] else np.zeros(c, np.float32)
    hi = lv.max(1) if lv.shape[1] else lo
    lo = lo.astype(np.float32)
    step = ((hi - lo) / LOGVAR_STEPS).astype(np.float32)
    safe = np.where(step > 0, step, 1).astype(np.float32)
    codes = np.clip(np.rint((lv - lo[:, None]) / safe[:, None]), 0, LOGVAR_STEPS).astype(np.uint8)
    return lo.astype("<f4").tobytes() + step.astype("<f4").tobytes() + delta_codes(codes.view(np.int8)).tobytes()


def logvar_block_ok(lo, step) -> bool:
    """A block's per-channel lowest values and steps keep every value it can hold in the range."""
    return all(math.isfinite(a) and math.isfinite(s) and a >= LOGVAR_MIN - LOGVAR_SLACK and 0 <= s
               and a + LOGVAR_STEPS * s <= LOGVAR_MAX + LOGVAR_SLACK for a, s in zip(lo, step))


def decode_logvar(raw, offset: int, c: int, kept: int) -> torch.Tensor:
    """A checked version-6 block at offset of raw -> (C, kept) float32 log-variances."""
    import numpy as np
    import torch
    lo = np.frombuffer(raw, "<f4", c, offset).astype(np.float32)
    step = np.frombuffer(raw, "<f4", c, offset + 4 * c).astype(np.float32)
    deltas = np.frombuffer(raw, np.int8, c * kept, offset + 8 * c).reshape(c, kept)
    codes = undelta_codes(deltas).view(np.uint8)
    return torch.from_numpy(lo[:, None] + codes.astype(np.float32) * step[:, None])


def header_crc(version: int, flags: int, raw: bytes) -> int:
    """The prelude's header checksum. Since version 5 it covers the version and flags fields too:
    which version a file claims decides how its values are read, so a damaged version must show."""
    if version < 5:
        return zlib.crc32(raw)
    return zlib.crc32(raw, zlib.crc32(struct.pack("<HH", version, flags)))


def delta_codes(codes: np.ndarray) -> np.ndarray:
    """int8 values (C, kept) -> each channel's first value, then the differences along the kept order,
    modulo 256 (format 5). Kept positions in raster order are mostly neighbours with similar values:
    on the dev clips zstd makes the int8 values 8.6% smaller this way (docs/FORMAT.md)."""
    import numpy as np
    u = np.ascontiguousarray(codes, dtype=np.int8).view(np.uint8)
    out = u.copy()
    out[:, 1:] -= u[:, :-1]          # uint8 arithmetic wraps: exact, and undone by undelta_codes
    return out.view(np.int8)


def undelta_codes(deltas: np.ndarray) -> np.ndarray:
    """The inverse of delta_codes: a running sum modulo 256 along each channel, as torch's uint8 cumsum
    (it wraps). 3x faster than numpy's accumulate down the transpose and its two transposed copies
    (0.05 against 0.15 ms for 16 x 10,000); numpy's along each row is slower still."""
    import numpy as np
    import torch
    u = np.array(deltas.view(np.uint8), order="C")     # writable: torch will not take read-only memory
    return torch.from_numpy(u).cumsum(1, dtype=torch.uint8).view(torch.int8).numpy()


def check_finite(codes, qscale, logvar=None):
    """Readers refuse non-finite scales, fp16 values and log-variances (a broken model, fp16 overflow):
    the writer refuses them first, so it never writes a container that does not read back."""
    floats = (qscale, logvar, codes if codes.is_floating_point() else None)
    if not all(x is None or bool(x.isfinite().all()) for x in floats):
        raise ModelUnavailableError("the tokeniser gave non-finite latents (NaN or inf); a container of them "
                                    "would not read back, so none is written")


def encode_chunk(mask: torch.Tensor, codes: torch.Tensor, qscale, quant, logvar: torch.Tensor | None = None) -> bytes:
    """A chunk's payload as VERSION stores it (docs/FORMAT.md); logvar: the kept positions' log-variance
    (C, kept), appended as LOGVAR_VERSION stores it."""
    import numpy as np
    t = mask.shape[0]
    parts = [PAYLOAD.pack(t, codes.shape[1])]
    if quant == "int8":
        parts.append(qscale.numpy().astype("<f4").tobytes())
    parts.append(np.packbits(mask.numpy().reshape(-1), bitorder="little").tobytes())
    if quant == "int8":
        parts.append(delta_codes(codes.numpy()).tobytes())
    else:
        parts.append(codes.numpy().astype("<f2").tobytes())
    if logvar is not None:
        parts.append(encode_logvar(logvar))
    return b"".join(parts)


class ChunkRecord(NamedTuple):
    """One chunk, compressed and ready to append (AtokWriter.record)."""
    comp: bytes
    raw_size: int
    latent_frames: int
    kept: int
    frames: int
    crc: int


_ZSTD = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's zstd compressor at `level` (a compressor must not be shared between threads)."""
    cache = _ZSTD.__dict__.setdefault("by_level", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return cache[level]


class AtokWriter:
    """Streams chunk records to a file object; `close()` writes index and trailer."""

    def __init__(self, f, header: Header | dict, level: int = 10):
        """header: a Header (options.header_for), or a map written as it is (tests write hostile ones)."""
        self.f = f
        header = header.to_dict() if isinstance(header, Header) else header
        self.quant, self.level = header["quant"], level
        self.logvar = header.get("logvar") is not None    # chunks carry the log-variance: version 6
        version = LOGVAR_VERSION if self.logvar else VERSION
        self._zstd = _compressor(level)
        raw = msgpack.packb(header, use_bin_type=True)
        if len(raw) > MAX_HEADER:
            raise ValueError("header too large")
        self.f.write(PRELUDE.pack(MAGIC, version, 0, len(raw), header_crc(version, 0, raw)) + raw)
        self.offset = PRELUDE.size + len(raw)
        self.chunks = []   # index entries, columns OFFSET .. FRAMES
        self.audio = [] if header.get("audio") else None   # [offset, length, raw_size, crc32]

    def write_chunk(self, mask, codes, qscale, frames: int, logvar=None) -> int:
        """One chunk record: its mask, kept codes and scales, and the video frames it decodes to; logvar:
        the kept positions' log-variance (C, kept), given exactly when the header has `logvar`."""
        return self.write_record(self.record(mask, codes, qscale, frames, logvar))

    def record(self, mask, codes, qscale, frames: int, logvar=None) -> ChunkRecord:
        """A chunk record made ready to write: packed and compressed. Safe to call from several threads
        at once (each has its own compressor), so chunks compress in parallel; the bytes are those of
        one single-threaded compressor (zstd's own threads would split large records differently)."""
        if (logvar is not None) != self.logvar:
            raise ValueError("a chunk's log-variance is given exactly when the header has logvar")
        if logvar is not None and tuple(logvar.shape) != tuple(codes.shape):   # else a block readers refuse
            raise ValueError(f"a chunk's log-variance is (C, kept) as its values: {tuple(logvar.shape)}, "
                             f"not {tuple(codes.shape)}")
        check_finite(codes, qscale, logvar)
        raw = encode_chunk(mask, codes, qscale, self.quant, logvar)
        comp = _compressor(self.level).compress(raw)
        return ChunkRecord(comp, len(raw), int(mask.shape[0]), int(codes.shape[1]), int(frames), zlib.crc32(comp))

    def write_record(self, rec: ChunkRecord) -> int:
        """Append a record made by record(); records go into the file in the order written."""
        self.f.write(RECORD.pack(len(rec.comp)) + rec.comp)
        self.chunks.append([self.offset, len(rec.comp), rec.latent_frames, rec.kept, rec.raw_size, rec.crc, rec.frames])
        self.offset += RECORD.size + len(rec.comp)
        return RECORD.size + len(rec.comp)

    def write_audio(self, packets: list) -> int:
        """One audio record: packets [pts, dts, duration, keyframe, data] as stored, after all chunks."""
        raw = msgpack.packb([list(p) for p in packets], use_bin_type=True)
        if len(raw) > MAX_AUDIO_RECORD:
            raise ValueError("audio record too large")
        comp = self._zstd.compress(raw)
        self.f.write(RECORD.pack(len(comp)) + comp)
        self.audio.append([self.offset, len(comp), len(raw), zlib.crc32(comp)])
        self.offset += RECORD.size + len(comp)
        return RECORD.size + len(comp)

    def close(self, frames: int):
        index = {"frames": frames, "chunks": self.chunks}
        if self.audio is not None:
            index["audio"] = self.audio
        index = msgpack.packb(index, use_bin_type=True)
        self.f.write(index + TRAILER.pack(self.offset, len(index), zlib.crc32(index), END_MAGIC))
        self.offset += len(index) + TRAILER.size


def _check(cond, path, what):
    if not cond:
        raise ContainerError(f"{path}: corrupt container ({what})")


def _unpack(raw, path, what):
    """msgpack with every length bounded, so a small header cannot unfold into a huge object tree. The
    longest array a header holds is the rule's unit, one number per channel (LTX-Video has 128)."""
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True, max_str_len=4096, max_bin_len=MAX_EXTRADATA,
                               max_array_len=MAX_CHANNELS, max_map_len=64, max_ext_len=0)
    except Exception:
        raise ContainerError(f"{path}: corrupt container ({what} is not valid msgpack)") from None


def _is_number(v, lo, hi):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def _is_int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def validate_header(h, path, limits: Limits = DEFAULT_LIMITS):
    """Every field the reader relies on, type and range, before anything is allocated from it."""
    _check(isinstance(h, dict), path, "header is not a map")
    for key, lo, hi in [("width", 1, MAX_SIDE), ("height", 1, MAX_SIDE), ("latent_width", 1, MAX_SIDE),
                        ("latent_height", 1, MAX_SIDE), ("channels", 1, MAX_CHANNELS), ("chunk", 1, MAX_CHUNK),
                        ("fps_num", 1, 1 << 30), ("fps_den", 1, 1 << 30), ("keyframe_interval", 0, 1 << 30)]:
        _check(_is_int(h.get(key), lo, hi), path, f"header field {key} missing or out of range")
    _check(MIN_FPS <= Fraction(h["fps_num"], h["fps_den"]) <= MAX_FPS, path,
           f"frame rate {h['fps_num']}/{h['fps_den']} outside {MIN_FPS}..{MAX_FPS}")
    _check(isinstance(h.get("quant"), str) and h["quant"] in QUANT_BYTES, path, "unknown quantisation")
    tok = h.get("tokenizer")
    _check(isinstance(tok, dict) and isinstance(tok.get("name"), str) and isinstance(tok.get("fingerprint"), str)
           and len(tok["name"]) <= 256 and len(tok["fingerprint"]) <= 64, path, "tokeniser identity missing")
    _check(_is_int(tok.get("space_factor"), 1, 64) and _is_int(tok.get("time_factor"), 1, 64), path, "tokeniser factors")
    _check(isinstance(tok.get("stateful", True), bool), path, "tokeniser stateful flag")
    _check(tok.get("channels") == h["channels"], path, "channel count disagrees with tokeniser")
    covered = [pixels_for(h[f"latent_{side}"], tok["space_factor"]) for side in ("width", "height")]
    _check(covered[0] >= h["width"] and covered[1] >= h["height"], path, "latent size too small")
    _check(covered[0] < h["width"] + 64 and covered[1] < h["height"] + 64, path, "latent size too large")
    lit = h.get("lit")
    _check(lit is None or (isinstance(lit, dict) and isinstance(lit.get("fingerprint"), str)), path, "LIT identity")
    thr, kr = h.get("threshold"), h.get("keep_ratio")
    _check(thr is None or _is_number(thr, 0, MAX_THRESHOLD), path, "threshold")
    _check(kr is None or _is_number(kr, 0, 1), path, "keep ratio")
    _check((thr is None) != (kr is None), path, "exactly one of threshold and keep ratio must be set")
    unit = h.get("unit")
    _check(unit is None or isinstance(unit, list) and len(unit) == h["channels"]
           and all(_is_number(u, MIN_UNIT, MAX_UNIT) and u > 0 for u in unit), path, "rule unit")
    _check(isinstance(h.get("unit_name", ""), str) and len(h.get("unit_name", "")) <= 32, path, "rule unit name")
    _check(h.get("logvar") is None or h["logvar"] in LOGVAR_QUANTS, path, "header field logvar")
    for key in ("start", "duration"):       # the frame range and rate (absent unless asked)
        _check(key not in h or _is_number(h[key], 0, MAX_SECONDS), path, f"header field {key}")
    _check("frame_limit" not in h or _is_int(h["frame_limit"], 1, MAX_FRAME_LIMIT), path, "header field frame_limit")
    rf = h.get("resample_fps")
    _check(rf is None or isinstance(rf, list) and len(rf) == 2 and all(_is_int(x, 1, 1 << 30) for x in rf)
           and Fraction(rf[0], rf[1]) == Fraction(h["fps_num"], h["fps_den"]), path, "header field resample_fps")
    pixels = h["width"] * h["height"]
    if pixels > limits.max_pixels:
        raise ContainerError(f"{path}: frames of {h['width']}x{h['height']} exceed the budget of {limits.max_pixels} "
                             f"pixels (raise it with --max-pixels if you trust this file)")
    audio = h.get("audio")
    _check(audio is None or isinstance(audio, dict) and audio.get("codec") in AUDIO_CODECS
           and _is_int(audio.get("sample_rate"), 1, 768000) and isinstance(audio.get("layout"), str)
           and len(audio["layout"]) <= 64 and _is_int(audio.get("time_base_num"), 1, 1 << 30)
           and _is_int(audio.get("time_base_den"), 1, 1 << 30) and isinstance(audio.get("extradata"), bytes),
           path, "audio track description")
    if audio is not None:
        from adaptok_cli.format.audio import header_problem       # what FFmpeg will be handed, tried as the writer uses it
        problem = header_problem(audio)
        _check(problem is None, path, problem)
    frame_values = h["latent_width"] * h["latent_height"] * h["channels"]
    _check(frame_values <= limits.max_chunk_values, path,
           f"a latent frame of {frame_values} values exceeds the budget of {limits.max_chunk_values}")


@dataclass(frozen=True)
class TokenizerInfo:
    """The header's tokenizer map: which tokeniser made the latents, and their layout."""
    name: str
    fingerprint: str            # first 16 hex digits of SHA-256 of the weights
    time_factor: int
    space_factor: int
    channels: int
    source: object = None       # "builtin" or "file" (informative; files before 0.1.1 may hold a path)
    stateful: bool | None = None    # None: not recorded (files before the flag), which reads as stateful
    class_name: str | None = None   # a diffusers tokeniser's class ("class") and config hash ("config")
    config: str | None = None

    @property
    def is_stateful(self) -> bool:
        """Whether chunks after the first continue the tokeniser's stream (an absent flag: they do)."""
        return self.stateful is not False


@dataclass(frozen=True)
class LitInfo:
    """The header's lit map: the LIT a file expects (its name is informative, the fingerprint decides)."""
    fingerprint: str
    name: object = None


@dataclass(frozen=True)
class AudioInfo:
    """The header's audio map: the stored track's codec, rate, layout, time base and setup bytes."""
    codec: str
    sample_rate: int
    layout: str
    time_base_num: int
    time_base_den: int
    extradata: bytes

    @property
    def time_base(self) -> Fraction:
        return Fraction(self.time_base_num, self.time_base_den)

    def to_dict(self) -> dict:
        """The description audio.py checks (header_problem, packets_problem, timestamp_ok)."""
        return {"codec": self.codec, "sample_rate": self.sample_rate, "layout": self.layout,
                "time_base_num": self.time_base_num, "time_base_den": self.time_base_den, "extradata": self.extradata}


@dataclass(frozen=True)
class Header:
    """A container's header, typed (docs/FORMAT.md lists the fields): the one place its keys are read.

    Built by from_dict (a file's header, every field checked by validate_header first) or written
    (the map compress writes, options.header_for). The map itself is kept: to_dict() gives it back
    exactly (key order, fields this version does not know), so a written header is the same bytes and
    `inspect --json` shows what the file holds. For the Python API's users of `AtokFile.header` as a
    dict, read-only mapping access (h["width"], get, keys, items, in) answers from that map.
    """
    width: int
    height: int
    latent_width: int
    latent_height: int
    channels: int
    fps_num: int
    fps_den: int
    tokenizer: TokenizerInfo
    lit: LitInfo | None
    threshold: float | None
    keep_ratio: float | None
    keyframe_interval: int
    quant: str
    chunk: int
    level: object = None            # informative fields: not checked, held as the file has them
    max_side: object = None
    short_side: object = None
    unit: tuple[float, ...] | None = None   # None: the tokeniser's scale (files before version 4)
    unit_name: str = "spread"       # absent (versions 1 to 3): the spread, what those versions used
    source: object = None
    created_by: object = None
    start: float | None = None      # the frame range and rate compress was asked for (None: not asked)
    duration: float | None = None
    frame_limit: int | None = None
    resample_fps: Fraction | None = None
    audio: AudioInfo | None = None
    logvar: str | None = None       # how the log-variance is stored (version 6: "uint8"); None: not stored
    _raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, raw, path, limits: Limits = DEFAULT_LIMITS) -> "Header":
        """A header read from a file: checked (validate_header, ContainerError naming path) and typed."""
        validate_header(raw, path, limits)
        return cls._typed(raw)          # the map just unpacked: no one else holds it

    @classmethod
    def written(cls, raw: dict) -> "Header":
        """The header this adaptok writes (options.header_for makes it): typed, not checked."""
        return cls._typed(copy.deepcopy(raw))

    @classmethod
    def _typed(cls, raw: dict) -> "Header":
        """raw becomes the Header's own map (to_dict and the mapping access hand out copies)."""
        tok, lit, audio, rf, unit = (raw.get(k) for k in ("tokenizer", "lit", "audio", "resample_fps", "unit"))
        return cls(
            raw["width"], raw["height"], raw["latent_width"], raw["latent_height"], raw["channels"],
            raw["fps_num"], raw["fps_den"],
            TokenizerInfo(tok["name"], tok["fingerprint"], tok["time_factor"], tok["space_factor"], tok["channels"],
                          tok.get("source"), tok.get("stateful"), tok.get("class"), tok.get("config")),
            None if lit is None else LitInfo(lit["fingerprint"], lit.get("name")),
            raw.get("threshold"), raw.get("keep_ratio"), raw["keyframe_interval"], raw["quant"], raw["chunk"],
            raw.get("level"), raw.get("max_side"), raw.get("short_side"), None if unit is None else tuple(unit),
            raw.get("unit_name", "spread"), raw.get("source"), raw.get("created_by"),
            raw.get("start"), raw.get("duration"), raw.get("frame_limit"),
            None if rf is None else Fraction(*rf),
            None if audio is None else AudioInfo(*(audio[k] for k in ("codec", "sample_rate", "layout", "time_base_num",
                                                                       "time_base_den", "extradata"))),
            raw.get("logvar"), raw)

    def to_dict(self) -> dict:
        """The header map as the file holds it (a copy): what the writer packs, --json shows, settings compare."""
        return copy.deepcopy(self._raw)

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    @property
    def stateful(self) -> bool:
        """Whether chunks after the first continue the tokeniser's stream (layout.starts_stream)."""
        return self.tokenizer.is_stateful

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def latent_positions(self) -> int:
        """Positions of one latent frame: latent_height x latent_width."""
        return self.latent_height * self.latent_width

    # read-only mapping access, for callers that used the header as the dict it once was
    def __getitem__(self, key):
        return copy.deepcopy(self._raw[key])

    def get(self, key, default=None):
        return copy.deepcopy(self._raw.get(key, default))

    def keys(self):
        return self._raw.keys()

    def items(self):
        return self.to_dict().items()

    def values(self):
        return self.to_dict().values()

    def __contains__(self, key):
        return key in self._raw

    def __iter__(self):
        return iter(self._raw)

    def __len__(self):
        return len(self._raw)


_UINT_MARKERS = frozenset(range(0x80)) | {0xcc, 0xcd, 0xce, 0xcf}   # msgpack positive fixint, uint8..uint64


_THREAD = threading.local()


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's zstd decompressor: one per thread (they are not thread-safe), reused from record to
    record (a new one per record made reading a third slower)."""
    d = getattr(_THREAD, "zstd", None)
    if d is None:
        d = _THREAD.zstd = zstandard.ZstdDecompressor()
    return d


class AtokReader:
    """Validated random access to a container: header, index, and chunk records one at a time.

    The index is read and checked in plain Python (lists of ints), so inspect and verify import no numpy:
    `entry(i)`, `num_chunks`, `first_latent(i)`, `first_frame(i)` answer from those lists. `chunks` is the
    index as an (N, 7) int64 array (columns OFFSET .. FRAMES), `audio` the audio entries as an (A, 4)
    one, `latent_starts` and `frame_starts` the chunks' first latent frame and first frame (N + 1, the
    last one the total): numpy arrays made on first use, for the callers that compute with them.
    `limits` is the resource budget the file must fit before anything it declares is allocated.
    """

    def __init__(self, path, partial: bool = False, limits: Limits = DEFAULT_LIMITS):
        """path: a file, or a Section of one (a shard member, read in place)."""
        self.path = Path(str(path))
        self.partial, self.salvaged, self.limits = partial, False, limits
        self._io = threading.Lock()     # records are read from two threads while decompress writes audio
        try:
            if isinstance(path, Section):
                self.f, self.size = _SectionFile(path), path.size
            else:
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
        if version not in READS:
            raise ContainerError(f"{p}: .atok version {version} is not supported (this adaptok reads versions "
                                 f"{', '.join(map(str, READS))})")
        self.version = version
        _check(flags == 0, p, "unknown flags")
        _check(hlen <= MAX_HEADER and PRELUDE.size + hlen + (0 if self.partial else TRAILER.size) <= self.size, p,
               "header length")
        raw = self.f.read(hlen)
        _check(len(raw) == hlen and header_crc(version, flags, raw) == hcrc, p, "header checksum mismatch")
        self.header = Header.from_dict(_unpack(raw, p, "header"), p, self.limits)
        _check(version >= 3 or (version == 2) == self.header.has_audio, p, "version and audio track disagree")
        _check((version == LOGVAR_VERSION) == (self.header.logvar is not None), p, "version and logvar disagree")
        self.has_audio = self.header.has_audio
        self._audio: list[list[int]] = []      # audio entries [offset, length, raw_size, crc32]
        self.data_start = PRELUDE.size + hlen
        try:
            self._read_index()
        except ContainerError:
            if not self.partial:
                raise
            self._salvage()
        self._finish_index()

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
        frames, entries, audio = self._parse_index(raw)
        _check(_is_int(frames, 1, MAX_FRAMES), p, "frame count")
        _check(entries is not None and len(entries) >= 1, p, "no chunks")
        _check((audio is not None) == self.has_audio, p, "index audio entries")
        pos = self.data_start
        for i, (off, length, t, kept, raw_size, *_) in enumerate(entries):
            _check(off == pos and length > 0 and off + RECORD.size + length <= ioff, p, f"chunk {i} position")
            self._check_entry(i, t, kept, raw_size)
            pos = off + RECORD.size + length
        for i, (off, length, raw_size, _) in enumerate([] if audio is None else audio):
            _check(off == pos and length > 0 and off + RECORD.size + length <= ioff, p, f"audio record {i} position")
            _check(0 < raw_size <= MAX_AUDIO_RECORD, p, f"audio record {i} size")
            pos = off + RECORD.size + length
        _check(pos == ioff, p, "records do not fill the file")
        self.frames, self._index = frames, entries
        if audio is not None:
            self._audio = audio

    def _parse_index(self, raw: bytes):
        """The index map read piece by piece: every value must be a non-negative integer where one is
        expected (checked from its type byte before it is unpacked), so no index can unfold into a big
        object tree; entries are lists of ints."""
        p = self.path
        u = msgpack.Unpacker(raw=False, max_str_len=16, max_bin_len=0, max_array_len=0, max_map_len=0, max_ext_len=0)
        u.feed(raw)

        def uint(what):
            at = u.tell()
            _check(at < len(raw) and raw[at] in _UINT_MARKERS, p, what)
            v = u.unpack()
            _check(v <= 1 << 62, p, what)
            return v

        def entries_of(width, what, counted, min_bytes):
            """An array of `width`-integer entries, at most max_chunks of them, as lists of ints."""
            n = u.read_array_header()
            _check(n <= self.limits.max_chunks, p, f"{n} {counted} exceed the budget of {self.limits.max_chunks}")
            _check(n * min_bytes <= len(raw), p, "index layout")
            out = []
            for i in range(n):
                _check(u.read_array_header() == width, p, f"{what} {i}")
                out.append([uint(f"{what} {i}") for _ in range(width)])
            return out

        frames = entries = audio = None
        try:
            n_keys = u.read_map_header()
            _check(n_keys == (3 if self.has_audio else 2), p, "index layout")
            for _ in range(n_keys):
                key = u.unpack()
                if key == "frames" and frames is None:
                    frames = uint("frame count")
                elif key == "audio" and audio is None and self.has_audio:
                    audio = entries_of(4, "audio entry", "audio records", 5)
                elif key == "chunks" and entries is None:
                    entries = entries_of(7 if self.version >= 3 else 6, "index entry", "chunks", 7)
                else:
                    _check(False, p, "index layout")
            _check(u.tell() == len(raw), p, "index layout")
        except (ValueError, msgpack.ExtraData, msgpack.OutOfData, msgpack.FormatError, msgpack.StackError):
            raise ContainerError(f"{p}: corrupt container (index is not valid msgpack)") from None
        return frames, entries, audio

    def _check_entry(self, i, t, kept, raw_size):
        """A chunk's shape against the header and the budget, before its record is read."""
        h, p = self.header, self.path
        hw = h.latent_positions
        _check(1 <= t <= h.chunk and kept <= t * hw, p, f"chunk {i} shape")
        values = t * hw * h.channels
        if values > self.limits.max_chunk_values:
            raise ContainerError(f"{p}: chunk {i} holds {values} latent values, over the budget of "
                                 f"{self.limits.max_chunk_values} (raise it with --max-pixels if you trust this file)")
        _check(raw_size == chunk_raw_size(t, kept, h.latent_height, h.latent_width, h.channels, h.quant,
                                          h.logvar is not None), p, f"chunk {i} size")

    def _salvage(self):
        """--partial: the index is lost (a cut file); walk the chunk records from the start and keep
        every complete one (its zstd frame checksum and contents must check out)."""
        h, p = self.header, self.path
        pos, found, first_latent = self.data_start, [], 0
        while pos + RECORD.size <= self.size and len(found) < self.limits.max_chunks:
            self.f.seek(pos)
            (length,) = RECORD.unpack(self.f.read(RECORD.size))
            if length == 0 or pos + RECORD.size + length > self.size:
                break
            comp = self.f.read(length)
            try:
                raw_size = zstandard.frame_content_size(comp)
                if not PAYLOAD.size <= raw_size <= 4 * self.limits.max_chunk_values + 12 * MAX_CHANNELS + 64:
                    break
                raw = zstandard.ZstdDecompressor().decompress(comp, max_output_size=raw_size, allow_extra_data=False)
            except zstandard.ZstdError:
                break
            if len(raw) != raw_size:
                break
            t, kept = PAYLOAD.unpack_from(raw)
            try:
                self._check_entry(len(found), t, kept, raw_size)
            except ContainerError:
                break
            entry = [pos, length, t, kept, raw_size, zlib.crc32(comp), 0]
            try:
                self._checked_payload(len(found), entry, first_latent)
            except ContainerError:
                break
            found.append(entry)
            first_latent += t
            pos += RECORD.size + length
        if not found:
            raise ContainerError(f"{p}: truncated before the first complete chunk: nothing to recover")
        self.salvaged = True
        # the frame counts went with the index: every chunk found holds all the frames it can
        spans = frame_spans([e[LATENT_FRAMES] for e in found], h.tokenizer.time_factor, h.stateful)
        for e, (_, n) in zip(found, spans):
            e[FRAMES] = n
        self._index = found
        self.frames = sum(e[FRAMES] for e in found)

    def _finish_index(self):
        """Totals, and each chunk's frame count against what its latent frames can hold.

        Files before version 3 do not store the counts: they are worked out here, once, from the
        tokeniser layout in the header, so that every reader takes them from the FRAMES column."""
        tf, stateful = self.header.tokenizer.time_factor, self.header.stateful
        latent_counts = [e[LATENT_FRAMES] for e in self._index]
        self._latent_starts = list(itertools.accumulate(latent_counts, initial=0))
        self.latent_frames = self._latent_starts[-1]
        spans = frame_spans(latent_counts, tf, stateful)
        if len(self._index[0]) == 6:
            implied = spans[-1][0] + spans[-1][1]
            _check(implied - tf < self.frames <= implied, self.path,
                   f"frame count {self.frames} does not match the latent frames (which hold {implied})")
            counts = [n for _, n in frame_spans(latent_counts, tf, stateful, self.frames)]
            self._index = [e + [n] for e, n in zip(self._index, counts)]
        for i, (n, (_, most)) in enumerate(zip((e[FRAMES] for e in self._index), spans)):
            _check(1 <= n <= most, self.path, f"chunk {i} frame count {n} (its latent frames hold {most})")
        _check(sum(e[FRAMES] for e in self._index) == self.frames, self.path,
               f"frame count {self.frames} is not the sum of the chunks' frame counts")
        self._frame_starts = list(itertools.accumulate((e[FRAMES] for e in self._index), initial=0))

    @property
    def num_chunks(self) -> int:
        return len(self._index)

    @property
    def num_audio_records(self) -> int:
        return len(self._audio)

    def first_latent(self, i: int) -> int:
        """Chunk i's first latent frame within the clip."""
        return self._latent_starts[i]

    def chunk_holding(self, j: int) -> int:
        """The chunk that holds latent frame j of the clip (0 <= j < latent_frames)."""
        return bisect.bisect_right(self._latent_starts, j) - 1

    def first_frame(self, i: int) -> int:
        """Chunk i's first video frame within the clip."""
        return self._frame_starts[i]

    @property
    def chunks(self) -> np.ndarray:
        """The index as an (N, 7) int64 array, columns OFFSET .. FRAMES (made on first use)."""
        return self._array("_chunks_array", self._index, 7)

    @property
    def audio(self) -> np.ndarray:
        """The audio entries as an (A, 4) int64 array: offset, length, raw size, crc32 (made on first use)."""
        return self._array("_audio_array", self._audio, 4)

    @property
    def latent_starts(self) -> np.ndarray:
        """Each chunk's first latent frame, then the total: (N + 1,) int64 (made on first use)."""
        return self._array("_latent_starts_array", self._latent_starts)

    @property
    def frame_starts(self) -> np.ndarray:
        """Each chunk's first frame, then the total: (N + 1,) int64 (made on first use)."""
        return self._array("_frame_starts_array", self._frame_starts)

    def _array(self, name: str, rows: list, width: int | None = None) -> np.ndarray:
        """The int64 array of rows, made once and kept under name: numpy is imported by who asks."""
        made = self.__dict__.get(name)
        if made is None:
            import numpy as np
            made = np.array(rows, np.int64)
            if width is not None:
                made = made.reshape(-1, width)
            self.__dict__[name] = made
        return made

    def entry(self, i: int) -> IndexEntry:
        """Chunk i's index entry, by name."""
        return IndexEntry(*self._index[i])

    def starts_stream(self, i: int) -> bool:
        """Chunk i begins a tokeniser stream: the first chunk, or every chunk of a stateless tokeniser."""
        return starts_stream(i == 0, self.header.stateful)

    @property
    def tokens_total(self):
        return self.latent_frames * self.header.latent_positions

    @property
    def tokens_kept(self):
        return sum(e[KEPT] for e in self._index)

    def keyframes(self, first: int, t: int) -> list[int]:
        """Latent frames of a chunk (counted within it) that must be kept whole; first: its first latent frame."""
        return [j for j in range(t) if is_keyframe(first + j, self.header.keyframe_interval)]

    def _record(self, what: str, off: int, length: int, raw_size: int, crc: int, rec=None) -> bytes:
        """A record (chunk or audio) decompressed, checked against its index entry: length field, CRC,
        the zstd frame's declared size, zstd's own checksum, the size it gives. rec: the record's bytes
        when they were already read with others (read_chunks); otherwise read here."""
        p = self.path
        if rec is None:
            with self._io:
                self.f.seek(off)
                rec = self.f.read(RECORD.size + length)
        _check(len(rec) == RECORD.size + length and RECORD.unpack(rec[:4])[0] == length, p, f"{what} record length")
        comp = rec[4:]
        _check(zlib.crc32(comp) == crc, p, f"{what} checksum mismatch")
        try:
            declared = zstandard.frame_content_size(comp)
        except zstandard.ZstdError:
            declared = -2
        _check(declared == raw_size, p, f"{what} frame header")
        try:        # one zstd frame and nothing after it (FORMAT.md): a second frame would go unread
            raw = decompressor().decompress(comp, max_output_size=raw_size, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise ContainerError(f"{p}: corrupt container ({what}: {e})") from None
        _check(len(raw) == raw_size, p, f"{what} size")
        return raw

    def _payload(self, i: int, entry, rec=None) -> bytes:
        """Chunk i's payload, its record checked, and its t and kept against the index entry."""
        off, length, t, kept, raw_size, crc = entry[:6]
        raw = self._record(f"chunk {i}", off, length, raw_size, crc, rec)
        _check(PAYLOAD.unpack_from(raw) == (t, kept), self.path, f"chunk {i} disagrees with the index")
        return raw

    def _layout(self, t: int):
        """Byte offsets of the parts of a chunk of t latent frames: (scales, mask, values)."""
        h = self.header
        o_mask = PAYLOAD.size + (4 * h.channels if h.quant == "int8" else 0)
        return PAYLOAD.size, o_mask, o_mask + math.ceil(t * h.latent_positions / 8)

    def _logvar_at(self, o_codes: int, kept: int) -> int | None:
        """Where a chunk's log-variance block starts (its values end there), or None: not stored."""
        h = self.header
        return None if h.logvar is None else o_codes + kept * h.channels * QUANT_BYTES[h.quant]

    def check_chunk(self, i: int) -> bytes:
        """Everything read_chunk checks, without building the mask or the values (verify uses this)."""
        if not 0 <= i < len(self._index):
            raise IndexError(f"chunk {i} out of range: {self.path} has {len(self._index)} chunks")
        return self._checked_payload(i, self._index[i], self._latent_starts[i])

    def _checked_payload(self, i: int, entry, first_latent: int, rec=None) -> bytes:
        """The payload of chunk i, every part checked, in plain Python (no numpy): the mask is counted
        as one integer of its packed bytes (bit k of the mask is bit k of that little-endian integer),
        and only the rows that must be whole are taken out of it. rec: its record, already read
        (read_chunks)."""
        h, p = self.header, self.path
        raw = self._payload(i, entry, rec)
        t, kept = entry[LATENT_FRAMES], entry[KEPT]
        o_scale, o_mask, o_codes = self._layout(t)
        if h.quant == "int8":
            scales = struct.unpack_from(f"<{h.channels}f", raw, o_scale)
            _check(all(map(math.isfinite, scales)), p, f"chunk {i} scales")
        hw = h.latent_positions
        packed = memoryview(raw)[o_mask:o_codes]
        _check(int.from_bytes(packed, "little").bit_count() == kept, p, f"chunk {i} mask count")
        if t * hw % 8:
            _check(packed[-1] >> (t * hw % 8) == 0, p, f"chunk {i} mask padding")
        whole = (1 << hw) - 1
        for j in self.keyframes(first_latent, t):
            row = int.from_bytes(packed[j * hw // 8: -(-(j + 1) * hw // 8)], "little") >> (j * hw % 8)
            _check(row & whole == whole, p, f"chunk {i}: latent frame {j} must be kept whole")
        if h.quant == "fp16":
            _check(halves_finite(raw, o_codes, h.channels * kept), p, f"chunk {i} values")
        o_logvar = self._logvar_at(o_codes, kept)
        if o_logvar is not None:
            bounds = struct.unpack_from(f"<{2 * h.channels}f", raw, o_logvar)
            _check(logvar_block_ok(bounds[:h.channels], bounds[h.channels:]), p, f"chunk {i} log-variance range")
        return raw

    def mask_bytes(self, i: int, raw: bytes | None = None) -> memoryview:
        """Chunk i's mask, checked, as stored: t x h x w bits packed 8 to a byte, the first in the lowest
        bit (inspect's terminal heatmap counts them without numpy). raw: its checked payload if read."""
        raw = self.check_chunk(i) if raw is None else raw
        _, o_mask, o_codes = self._layout(self._index[i][LATENT_FRAMES])
        return memoryview(raw)[o_mask:o_codes]

    def read_mask(self, i: int, raw: bytes | None = None) -> np.ndarray:
        """Chunk i's mask, checked: (t, h, w) bool, as numpy (--plot's heatmap needs no torch)."""
        import numpy as np
        h = self.header
        t, lh, lw = self._index[i][LATENT_FRAMES], h.latent_height, h.latent_width
        packed = np.frombuffer(self.mask_bytes(i, raw), np.uint8)
        bits = np.unpackbits(packed, count=t * lh * lw, bitorder="little")
        return bits.view(bool).reshape(t, lh, lw)

    def read_chunk(self, i: int) -> Chunk:
        """Decompress and check chunk i; any mismatch names the chunk."""
        return self._chunk(i, self.check_chunk(i))

    def read_chunks(self, start: int, stop: int) -> list[Chunk]:
        """Chunks start..stop-1, as read_chunk gives them and with every check it makes, their records
        read in one read (read_payloads)."""
        return [self._chunk(i, raw) for i, raw in enumerate(self.read_payloads(start, stop), start)]

    def read_kept(self, start: int, stop: int) -> list[KeptArrays]:
        """Chunks start..stop-1 as numpy arrays (KeptArrays), with every check read_chunks makes: the
        dense hold fill's input, which would only turn read_chunks' tensors back into arrays."""
        return [KeptArrays(i, *self._arrays(i, raw)) for i, raw in enumerate(self.read_payloads(start, stop), start)]

    def read_payloads(self, start: int, stop: int) -> list[bytes]:
        """The checked payloads of chunks start..stop-1 (check_chunk's), their records read in one read
        (they are consecutive in the file: _read_index checked each one's offset) when they span at
        most MAX_SPAN bytes; one read per record otherwise."""
        if not 0 <= start <= stop <= len(self._index):
            raise IndexError(f"chunks {start}..{stop - 1} out of range: {self.path} has {len(self._index)} chunks")
        if start == stop:
            return []
        base = self._index[start][OFFSET]
        span = self._index[stop - 1][OFFSET] + RECORD.size + self._index[stop - 1][LENGTH] - base
        if span > MAX_SPAN:
            return [self.check_chunk(i) for i in range(start, stop)]
        with self._io:
            self.f.seek(base)
            buf = memoryview(self.f.read(span))     # shorter if the file was cut since: the length check says so
        out = []
        for i in range(start, stop):
            entry = self._index[i]
            at = entry[OFFSET] - base
            rec = buf[at:at + RECORD.size + entry[LENGTH]]
            out.append(self._checked_payload(i, entry, self._latent_starts[i], rec))
        return out

    def _arrays(self, i: int, raw: bytes) -> tuple:
        """Chunk i's (mask (t, h, w) bool, values (C, kept) int8 or float16, scales (C,) float32 or None)
        from its checked payload. Scales and values are read-only views of the payload (nothing copied),
        except int8 values stored as differences (format 5 on), summed back into a new array."""
        import numpy as np      # here, not at the top: inspect and verify never need it
        h = self.header
        kept, c = self._index[i][KEPT], h.channels
        o_scale, _, o_codes = self._layout(self._index[i][LATENT_FRAMES])
        qscale = np.frombuffer(raw, "<f4", c, o_scale) if h.quant == "int8" else None
        if h.quant == "int8":
            codes = np.frombuffer(raw, np.int8, c * kept, o_codes).reshape(c, kept)
            codes = undelta_codes(codes) if self.version >= 5 else codes
        else:
            codes = np.frombuffer(raw, "<f2", c * kept, o_codes).reshape(c, kept)
        return self.read_mask(i, raw), codes, qscale

    def _chunk(self, i: int, raw: bytes) -> Chunk:
        """Chunk i built from its checked payload: tensors of their own (writable) memory."""
        import torch
        mask, codes, qscale = self._arrays(i, raw)
        kept, c = self._index[i][KEPT], self.header.channels
        o_logvar = self._logvar_at(self._layout(self._index[i][LATENT_FRAMES])[2], kept)
        logvar = None if o_logvar is None else decode_logvar(raw, o_logvar, c, kept)
        qscale = None if qscale is None else torch.from_numpy(qscale.astype("float32"))
        return Chunk(i, torch.from_numpy(mask), torch.from_numpy(_own(codes)), qscale, logvar)

    def audio_bytes(self) -> int:
        return sum(e[LENGTH] for e in self._audio)

    def read_audio(self, i: int) -> list:
        """Audio record i: packets [pts, dts, duration, keyframe, data] exactly as they were read;
        timestamps within audio.MAX_SECONDS, durations not negative."""
        from adaptok_cli.format.audio import timestamp_ok
        p = self.path
        raw = self._record(f"audio record {i}", *self._audio[i])
        try:
            packets = msgpack.unpackb(raw, raw=False, max_str_len=0, max_bin_len=MAX_AUDIO_RECORD,
                                      max_array_len=1 << 16, max_map_len=0, max_ext_len=0)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise ContainerError(f"{p}: corrupt container (audio record {i})") from None
        a = self.header.audio.to_dict()
        _check(isinstance(packets, list) and all(
            isinstance(k, list) and len(k) == 5 and all(_is_int(v, -(1 << 62), 1 << 62) and timestamp_ok(v, a)
                                                        for v in k[:3])
            and k[2] >= 0 and isinstance(k[3], bool) and isinstance(k[4], bytes) for k in packets), p,
               f"audio record {i} packets")
        return packets

    def probe_audio(self):
        """The first audio packets decoded as the codec the header names (audio.packets_problem):
        verify and decompress refuse a track whose packets are not what it says."""
        if not self._audio:
            return
        from adaptok_cli.format.audio import packets_problem
        problem = packets_problem(self.header.audio.to_dict(), self.read_audio(0))
        _check(problem is None, self.path, problem)

    def iter_audio(self):
        for i in range(len(self._audio)):
            yield from self.read_audio(i)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_FINITE_HIGH_BYTES = bytes(b for b in range(256) if b & 0x7C != 0x7C)


def halves_finite(data: bytes, offset: int = 0, count: int | None = None) -> bool:
    """Whether the `count` little-endian IEEE half floats at `offset` of data (all that follow: None)
    are finite. A half is infinite or NaN exactly when its five exponent bits are all set, bits 0x7C of
    its high byte: deleting every high byte that has one clear must leave nothing. Bytes operations
    at C speed, as fast as numpy's isfinite (a strided memoryview copy would be 5x slower)."""
    end = len(data) if count is None else offset + 2 * count
    return not bytes(data[offset + 1:end:2]).translate(None, _FINITE_HIGH_BYTES)


def write_bytes(header, chunks, frames, level=10) -> bytes:
    """A whole container in memory (tests, eval)."""
    buf = io.BytesIO()
    w = AtokWriter(buf, header, level)
    for mask, codes, qscale, n, *logvar in chunks:      # a fifth item: the chunk's log-variance
        w.write_chunk(mask, codes, qscale, n, *logvar)
    w.close(frames)
    return buf.getvalue()
