"""compress / decompress: the streaming pipeline between videos and .atok containers.

    compress:   frames -> pad/normalise -> tokeniser.encode -> quantise -> mask vs C_sel -> chunk record
    decompress: chunk record -> dequantise -> hold-fill (C_sel) -> LIT (C_fill) -> decode -> crop -> frames

Work happens in chunks of latent frames, so memory is O(chunk) whatever the video length.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, asdict, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from . import __version__
from .container import AtokReader, AtokWriter, AtomicOutput, Chunk
from .errors import InputError, ModelUnavailableError, OutputExistsError, UsageError, WriteError
from .lit import Inpainter, load_lit
from .pictures import latent_index, overlay as tint_dropped
from .masking import HoldFill, Selector, dequantise, gather_kept, quantise
from .tokenizer import DEFAULT_TOKENIZER, WEIGHTS_DIR, Tokenizer, load_tokenizer, pad_frames, pick_device
from .video import VideoReader, VideoWriter, output_kind

DEFAULT_THRESHOLD = 0.15
DEFAULT_CHUNK = 8


@dataclass
class CompressOptions:
    threshold: float | None = None     # None and no keep_ratio -> DEFAULT_THRESHOLD
    keep_ratio: float | None = None
    tokenizer: str = DEFAULT_TOKENIZER
    chunk: int = DEFAULT_CHUNK         # latent frames per chunk record
    keyframe_interval: int = 0         # in latent frames; 0: only the first latent frame is whole
    level: int = 10                    # zstd level
    quant: str = "int8"
    max_side: int | None = None
    short_side: int | None = None
    device: str = "auto"
    drop_audio: bool = False           # .atok stores no audio: refuse inputs with audio unless asked

    def check(self):
        if self.threshold is not None and self.keep_ratio is not None:
            raise UsageError("give --threshold or --keep-ratio, not both")
        if self.keep_ratio is not None and not 0 <= self.keep_ratio <= 1:
            raise UsageError("--keep-ratio must be between 0 and 1")
        if self.threshold is None and self.keep_ratio is None:
            self.threshold = DEFAULT_THRESHOLD
        if not 1 <= self.chunk <= 1024:
            raise UsageError("--chunk must be between 1 and 1024 latent frames")
        if self.keyframe_interval < 0:
            raise UsageError("--keyframe-interval must be >= 0")
        if not 1 <= self.level <= 22:
            raise UsageError("--level must be between 1 and 22")
        if self.quant not in ("int8", "fp16"):
            raise UsageError("--quant must be int8 or fp16")
        return self


# ---------------------------------------------------------------------------------------------
# frames <-> tensors

def to_tensor(frames: list[np.ndarray], multiple: int) -> torch.Tensor:
    """uint8 (H, W, 3) frames -> (T, 3, H', W') in [-1, 1], replicate-padded to the tokeniser's multiple."""
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pad_frames(x, multiple)


def to_frames(x: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(T, 3, H', W') in [-1, 1] -> cropped uint8 (T, H, W, 3)."""
    x = ((x[:, :, :height, :width].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def frame_chunks(frames: Iterable[np.ndarray], tok: Tokenizer, chunk: int) -> Iterator[tuple[list, int]]:
    """Groups frames into chunks of `chunk` latent frames -> (frames padded to whole groups, real count)."""
    at_start, buf = True, []
    it = iter(frames)
    while True:
        need = tok.frames_for(chunk, at_start)
        for f in it:
            buf.append(f)
            if len(buf) == need:
                break
        if not buf:
            return
        real = len(buf)
        if real < need:  # last chunk: pad with the last frame up to a whole latent frame
            n_lat = tok.latents_for(real) if (at_start or not tok.stateful) else -(-real // tok.time_factor)
            buf += [buf[-1]] * (tok.frames_for(n_lat, at_start) - real)
        yield buf, real
        if real < need:
            return
        at_start, buf = False, []


# ---------------------------------------------------------------------------------------------
# encoding side

class ChunkEncoder:
    """Encode + quantise + mask, chunk by chunk, keeping the tokeniser state and C_sel."""

    def __init__(self, tok: Tokenizer, opts: CompressOptions):
        self.tok, self.opts = tok, opts
        self.selector = Selector(tok.scale, opts.threshold, opts.keep_ratio, opts.keyframe_interval)
        self.state = None
        self.timing = {"encode": 0.0, "mask": 0.0}

    def latents(self, frames: list[np.ndarray]) -> torch.Tensor:
        t0 = time.perf_counter()
        z, self.state = self.tok.encode(to_tensor(frames, self.tok.pad_multiple), self.state)
        self.timing["encode"] += time.perf_counter() - t0
        return z

    def select(self, z: torch.Tensor):
        """-> (mask, kept codes (C, kept), qscale or None, dequantised latents)."""
        t0 = time.perf_counter()
        codes, qscale = quantise(z, self.opts.quant)
        zq = dequantise(codes, qscale)
        mask = self.selector.select(z, zq)
        kept = gather_kept(codes, mask)
        self.timing["mask"] += time.perf_counter() - t0
        return mask, kept, qscale, zq


def make_header(tok: Tokenizer, lit_identity, opts: CompressOptions, width, height, fps: Fraction, source: str):
    m = tok.pad_multiple
    return {
        "width": width, "height": height,
        "latent_width": -(-width // m) * m // tok.space_factor, "latent_height": -(-height // m) * m // tok.space_factor,
        "channels": tok.channels, "fps_num": fps.numerator, "fps_den": fps.denominator,
        "tokenizer": {**tok.identity(), "source": tok.source, "stateful": tok.stateful},
        "lit": lit_identity,
        "threshold": opts.threshold, "keep_ratio": opts.keep_ratio, "keyframe_interval": opts.keyframe_interval,
        "quant": opts.quant, "chunk": opts.chunk, "level": opts.level,
        "max_side": opts.max_side, "short_side": opts.short_side,
        "source": source, "created_by": f"adaptok {__version__}",
    }


@dataclass
class Result:
    """What a compress or decompress run did, for summaries and --json."""
    input: str
    output: str
    frames: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    tokens_kept: int = 0
    tokens_total: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    atok_bytes: int = 0                # size of the .atok side (output of compress, input of decompress)
    seconds: float = 0.0
    timing: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def token_rate(self):
        return self.tokens_kept / max(1, self.tokens_total)

    @property
    def bpp(self):
        """Bits per pixel of the .atok container."""
        return self.atok_bytes * 8 / max(1, self.frames * self.width * self.height)

    def to_dict(self):
        d = asdict(self)
        d.update(token_rate=self.token_rate, bpp=self.bpp)
        return d


_TOKENIZERS: dict = {}


def cached_tokenizer(spec: str, device: str = "auto") -> Tokenizer:
    """load_tokenizer, once per process (a batch loads its tokeniser once, not per file)."""
    dev = pick_device(device)
    if (spec, str(dev)) not in _TOKENIZERS:
        _TOKENIZERS[(spec, str(dev))] = load_tokenizer(spec, dev)
    return _TOKENIZERS[(spec, str(dev))]


def expected_settings(opts: CompressOptions, tok: Tokenizer) -> dict:
    """What batch.settings_of() reads back from a container compress() would write with these options."""
    lit = find_lit(tok)
    return {"tokenizer": tok.fingerprint, "lit": lit[1] if lit else None,
            **{k: getattr(opts, k) for k in ("threshold", "keep_ratio", "keyframe_interval", "quant", "chunk",
                                            "level", "max_side", "short_side")}}


def find_lit(tok: Tokenizer, device="cpu"):
    """The shipped LIT trained for this tokeniser, or None when none exists yet."""
    path = WEIGHTS_DIR / f"lit-{tok.name}.safetensors"
    if tok.source != "builtin" or not path.is_file():
        return None
    model, meta = load_lit(path, device)
    if meta.get("tokenizer_fingerprint") != tok.fingerprint:
        return None
    from .tokenizer import file_fingerprint
    return model, file_fingerprint(path)


def compress(src, dst, options: CompressOptions | None = None, force=False,
             progress: Callable[[int], None] | None = None, loaded_tokenizer: Tokenizer | None = None, **kw) -> Result:
    """Compress one video file to an .atok container (written atomically).

    Options come as a CompressOptions or as keywords: compress("a.mp4", "a.atok", threshold=0.2).
    """
    if options is not None and kw:
        raise UsageError("give options as a CompressOptions or as keywords, not both")
    opts = (options or CompressOptions(**kw)).check()
    t_start = time.perf_counter()
    device = pick_device(opts.device)
    tok = loaded_tokenizer or load_tokenizer(opts.tokenizer, device)
    lit = find_lit(tok)
    reader = VideoReader(src, short_side=opts.short_side, max_side=opts.max_side)
    info = reader.info
    if reader.has_audio and not opts.drop_audio:
        reader.close()
        raise InputError(f"{src}: has an audio track, which .atok does not store: "
                         f"pass --drop-audio to compress the video without it")
    try:
        out = AtomicOutput(dst, force)
    except BaseException:
        reader.close()
        raise
    res = Result(str(src), str(dst), width=info.width, height=info.height, fps=float(info.fps),
                 bytes_in=Path(src).stat().st_size)
    try:
        header = make_header(tok, {"fingerprint": lit[1], "name": f"lit-{tok.name}"} if lit else None,
                             opts, info.width, info.height, info.fps, Path(src).name)
        writer = AtokWriter(out.f, header, opts.level)
        enc = ChunkEncoder(tok, opts)
        t_write = 0.0
        for frames, real in frame_chunks(reader, tok, opts.chunk):
            z = enc.latents(frames)
            mask, kept, qscale, _ = enc.select(z)
            t0 = time.perf_counter()
            with write_errors(dst):
                writer.write_chunk(mask, kept, qscale)
            t_write += time.perf_counter() - t0
            res.frames += real
            res.tokens_kept += int(mask.sum())
            res.tokens_total += mask.numel()
            if progress:
                progress(real)
        if res.frames == 0:
            raise InputError(f"{src}: the video has no frames")
        with write_errors(dst):
            writer.close(res.frames)
            out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        reader.close()
    res.bytes_out = res.atok_bytes = Path(dst).stat().st_size
    res.seconds = time.perf_counter() - t_start
    res.timing = {**enc.timing, "write": t_write}
    return res


# ---------------------------------------------------------------------------------------------
# decoding side

def tokenizer_for(header: dict, path, spec: str | None = None, device="cpu") -> Tokenizer:
    """The tokeniser a container needs: the built-in one by name, or the one the user points to."""
    need = header["tokenizer"]
    if spec is None:
        if need.get("source") != "builtin":
            raise ModelUnavailableError(
                f"{path}: made with tokeniser {need['name']} (fingerprint {need['fingerprint']}): "
                f"pass --tokenizer with its path")
        spec = need["name"]
    try:
        tok = load_tokenizer(spec, device)
    except ModelUnavailableError as e:
        raise ModelUnavailableError(f"{path}: needs tokeniser {need['name']} (fingerprint {need['fingerprint']}): {e}") from None
    if tok.fingerprint != need["fingerprint"]:
        raise ModelUnavailableError(
            f"{path}: made with tokeniser {need['name']} fingerprint {need['fingerprint']}, "
            f"but {spec} has fingerprint {tok.fingerprint}")
    return tok


class ChunkDecoder:
    """Hold-fill + LIT + tokeniser decode, chunk by chunk, carrying C_sel, C_fill and decoder state."""

    def __init__(self, tok: Tokenizer, inpainter: Inpainter | None):
        self.tok, self.inpainter = tok, inpainter
        self.hold = HoldFill()
        self.state = None
        self.timing = {"fill": 0.0, "lit": 0.0, "decode": 0.0}

    def dense(self, chunk: Chunk) -> torch.Tensor:
        t0 = time.perf_counter()
        z = self.hold.fill(dequantise(chunk.codes, chunk.qscale), chunk.mask)
        t1 = time.perf_counter()
        self.timing["fill"] += t1 - t0
        if self.inpainter is not None:
            z = self.inpainter.fill(z, chunk.mask)
        self.timing["lit"] += time.perf_counter() - t1
        return z

    def frames(self, z: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        if self.tok.stateful:
            x, self.state = self.tok.decode(z, self.state)
        else:
            x, _ = self.tok.decode(z, None)
        self.timing["decode"] += time.perf_counter() - t0
        return x


# Below this threshold the shipped LIT earned nothing over hold-fill on the dev clips (docs/BENCHMARKS.md,
# threshold sweep: -0.00 and +0.00 dB at 0.05 and 0.1, +0.04 at the default 0.15, +0.32 at 0.4), so decompression
# holds instead and saves LIT's time.
LIT_FROM_THRESHOLD = 0.15


def inpainter_for(header: dict, tok: Tokenizer, path, use_lit=True, device="cpu") -> tuple[Inpainter | None, str | None]:
    """-> (inpainter or None, a note to show the user once, or None)."""
    need = header.get("lit")
    threshold = header.get("threshold")
    if not use_lit or (threshold is not None and threshold < LIT_FROM_THRESHOLD):
        return None, None
    found = find_lit(tok, device)
    if found is None:
        if need is None:
            return None, "no trained LIT for this tokeniser yet: dropped positions are hold-filled"
        raise ModelUnavailableError(f"{path}: needs LIT {need.get('name')} (fingerprint {need['fingerprint']}), "
                                    f"which is not installed (or use --no-lit)")
    model, fp = found
    if need is not None and fp != need["fingerprint"]:
        raise ModelUnavailableError(f"{path}: made with LIT fingerprint {need['fingerprint']}, installed LIT is {fp} "
                                    f"(or use --no-lit)")
    return Inpainter(model, tok.scale, fp, device, threshold=threshold), None


def decompress(src, dst, tokenizer: str | None = None, use_lit=True, codec=None, crf=18, force=False,
               device="auto", progress: Callable[[int], None] | None = None, overlay=False, partial=False) -> Result:
    """Rebuild a video from an .atok container; width, height, frame count and fps are restored.

    overlay=True tints the positions that were dropped, to show what the mask did.
    partial=True recovers every complete chunk of a truncated container (whose index was cut off).
    """
    t_start = time.perf_counter()
    dev = pick_device(device)
    with AtokReader(src, partial=partial) as r:
        h = r.header
        tok = tokenizer_for(h, src, tokenizer, dev)
        inpainter, note = inpainter_for(h, tok, src, use_lit, dev)
        res = Result(str(src), str(dst), width=h["width"], height=h["height"],
                     fps=h["fps_num"] / h["fps_den"], tokens_kept=r.tokens_kept, tokens_total=r.tokens_total,
                     bytes_in=r.size, atok_bytes=r.size, notes=[note] if note else [])
        if r.salvaged:
            res.notes.append(f"{src}: truncated: recovered {len(r.chunks)} complete chunks ({r.frames} frames)")
        dst = Path(dst)
        if dst.exists() and not force:
            raise OutputExistsError(f"{dst}: already exists (use -f to overwrite)")
        kind = output_kind(dst, codec)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.{os.getpid()}.partial{dst.suffix}"
        writer = VideoWriter(tmp, h["width"], h["height"], Fraction(h["fps_num"], h["fps_den"]), kind, crf)
        try:
            dec = ChunkDecoder(tok, inpainter)
            for i in range(len(r.chunks)):
                chunk = r.read_chunk(i)
                x = dec.frames(dec.dense(chunk))
                frames = to_frames(x[: r.frames - res.frames], h["height"], h["width"])
                if overlay:
                    lat = latent_index(len(frames), tok.time_factor, i == 0 or not tok.stateful)
                    frames = tint_dropped(frames, chunk.mask, lat, tok.space_factor)
                with write_errors(dst):
                    for f in frames:
                        writer.write(f)
                res.frames += len(frames)
                if progress:
                    progress(len(frames))
            with write_errors(dst):
                writer.close()
                _replace(tmp, dst, force)
        except BaseException:
            writer.abort()
            _remove(tmp)
            raise
    res.bytes_out = _size(dst)
    res.seconds = time.perf_counter() - t_start
    res.timing = dec.timing
    return res


@contextlib.contextmanager
def write_errors(dst):
    """Report an OS failure while writing (disk full, permissions) as one clear WriteError line."""
    try:
        yield
    except OSError as e:
        raise WriteError(f"{dst}: write failed ({e.strerror or e})") from e


def _replace(tmp: Path, dst: Path, force: bool):
    import shutil
    if dst.is_dir() and force:
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _remove(p: Path):
    import shutil
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def _size(p: Path):
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir())
    return p.stat().st_size
