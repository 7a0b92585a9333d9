"""compress / decompress: the streaming pipeline between videos and .atok containers.

    compress:   frames -> pad/normalise -> tokeniser.encode -> quantise -> mask vs C_sel -> chunk record
    decompress: chunk record -> dequantise -> hold-fill (C_sel) -> LIT (C_fill) -> decode -> crop -> frames

Work happens in chunks of latent frames, so memory is O(chunk) whatever the video length.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, asdict, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from . import __version__
from .defaults import BUILTIN_TOKENIZERS, DEFAULT_CHUNK, DEFAULT_THRESHOLD, DEFAULT_TOKENIZER, MAX_THRESHOLD
from .container import DEFAULT_LIMITS, LATENT_FRAMES, MAX_FPS, MIN_FPS, AtokReader, AtokWriter, Chunk, Limits, frame_spans
from .outputs import AtomicOutput, plan
from .errors import ContainerError, InputError, ModelUnavailableError, UsageError, WriteError
from .lit import Inpainter, load_lit
from .pictures import latent_index, overlay as tint_dropped
from .masking import HoldFill, Selector, dequantise, gather_kept, quantise
from .tokenizer import (WEIGHTS_DIR, Tokenizer, safetensors_metadata,
                        file_fingerprint, load_tokenizer, pad_frames, pick_device, spec_fingerprint)
from .video import AudioTrack, VideoReader, VideoWriter, audio_packets, audio_track, has_audio, output_kind



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
    drop_audio: bool = False           # leave the audio track out (by default its packets are kept)

    def check(self):
        if self.threshold is not None and self.keep_ratio is not None:
            raise UsageError("give --threshold or --keep-ratio, not both")
        if self.keep_ratio is not None and not 0 <= self.keep_ratio <= 1:   # also refuses nan
            raise UsageError("--keep-ratio must be between 0 and 1")
        if self.threshold is not None and not 0 <= self.threshold <= MAX_THRESHOLD:
            raise UsageError(f"--threshold must be between 0 and {MAX_THRESHOLD:g}")
        if self.threshold is None and self.keep_ratio is None:
            self.threshold = DEFAULT_THRESHOLD
        for name, side in (("--max-side", self.max_side), ("--short-side", self.short_side)):
            if side is not None and not 16 <= side <= 16384:
                raise UsageError(f"{name} must be between 16 and 16384")
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


AUDIO_RECORD_BYTES = 1 << 19     # packets are grouped into records of about this size


def write_audio_records(writer: AtokWriter, packets) -> int:
    """Audio packets into records of about AUDIO_RECORD_BYTES each; -> bytes written."""
    batch, size, total = [], 0, 0
    for p in packets:
        if batch and size + len(p[4]) + 64 > AUDIO_RECORD_BYTES:
            total += writer.write_audio(batch)
            batch, size = [], 0
        batch.append(p)
        size += len(p[4]) + 64
    if batch:
        total += writer.write_audio(batch)
    return total


# codecs the mp4 muxer takes as they are; .mkv takes every one of defaults.AUDIO_CODECS
MP4_AUDIO = ("aac", "mp3", "mp2", "opus", "flac", "ac3", "eac3", "alac")


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
    audio_bytes: int = 0               # of the .atok, the audio track's records
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


_MODELS: dict = {}


def cached_tokenizer(spec: str, device: str = "auto") -> Tokenizer:
    """load_tokenizer, once per process and file content (a batch loads its tokeniser once, not per file)."""
    dev = pick_device(device)
    key = ("tokenizer", spec, str(dev), spec_fingerprint(spec))
    if key not in _MODELS:
        _MODELS[key] = load_tokenizer(spec, dev)
    return _MODELS[key]


def expected_settings(opts: CompressOptions, tok: Tokenizer, src) -> dict:
    """What batch.settings_of() reads back from the container compress(src) would write with these options."""
    return {"tokenizer": tok.fingerprint, "lit": lit_fingerprint(tok), "audio": not opts.drop_audio and has_audio(src),
            **{k: getattr(opts, k) for k in ("threshold", "keep_ratio", "keyframe_interval", "quant", "chunk",
                                            "level", "max_side", "short_side")}}


def shipped_lit_path(tok: Tokenizer) -> Path | None:
    """The LIT shipped for a built-in tokeniser (a fixed name per built-in), or None."""
    if tok.source != "builtin" or tok.name not in BUILTIN_TOKENIZERS:
        return None
    path = WEIGHTS_DIR / f"lit-{tok.name}.safetensors"
    return path if path.is_file() else None


def lit_fingerprint(tok: Tokenizer) -> str | None:
    """Fingerprint of the shipped LIT trained for this tokeniser (read without loading the model), or None."""
    path = shipped_lit_path(tok)
    if path is None:
        return None
    key = ("lit-fingerprint", str(path), tok.fingerprint)
    if key not in _MODELS:
        with open(path, "rb") as f:
            trained_for = safetensors_metadata(f).get("tokenizer_fingerprint")
        _MODELS[key] = file_fingerprint(path) if trained_for == tok.fingerprint else None
    return _MODELS[key]


def find_lit(tok: Tokenizer, device="cpu"):
    """(the shipped LIT trained for this tokeniser, its fingerprint), or None when none exists yet."""
    fp = lit_fingerprint(tok)
    if fp is None:
        return None
    key = ("lit", fp, str(device))
    if key not in _MODELS:
        _MODELS[key] = load_lit(shipped_lit_path(tok), device)[0]
    return _MODELS[key], fp


def compress(src, dst, options: CompressOptions | None = None, force=False,
             progress: Callable[[int], None] | None = None, loaded_tokenizer: Tokenizer | None = None, **kw) -> Result:
    """Compress one video file to an .atok container (written atomically).

    Options come as a CompressOptions or as keywords: compress("a.mp4", "a.atok", threshold=0.2).
    progress(n, total=None) is called with the frames done (first with n=0 and the clip's estimated total).
    """
    if options is not None and kw:
        raise UsageError("give options as a CompressOptions or as keywords, not both")
    opts = (options or CompressOptions(**kw)).check()
    plan([(Path(src), Path(dst))])
    t_start = time.perf_counter()
    device = pick_device(opts.device)
    tok = loaded_tokenizer or load_tokenizer(opts.tokenizer, device)
    lit_fp = lit_fingerprint(tok)
    reader = VideoReader(src, short_side=opts.short_side, max_side=opts.max_side)
    info = reader.info
    if not MIN_FPS <= info.fps <= MAX_FPS:
        reader.close()
        raise InputError(f"{src}: frame rate {float(info.fps):.6g} is outside {MIN_FPS}..{MAX_FPS} frames/s")
    audio = None
    if reader.has_audio and not opts.drop_audio:
        try:
            audio = audio_track(src)
        except BaseException:
            reader.close()
            raise
    try:
        out = AtomicOutput(dst, force)
    except BaseException:
        reader.close()
        raise
    res = Result(str(src), str(dst), width=info.width, height=info.height, fps=float(info.fps),
                 bytes_in=Path(src).stat().st_size)
    if progress:
        progress(0, total=info.frames)          # the container's estimate, or None
    try:
        header = make_header(tok, {"fingerprint": lit_fp, "name": f"lit-{tok.name}"} if lit_fp else None,
                             opts, info.width, info.height, info.fps, Path(src).name)
        if audio is not None:
            header["audio"] = audio.to_header()
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
        if audio is not None:
            with write_errors(dst):
                res.audio_bytes = write_audio_records(writer, audio_packets(src))
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
    """The tokeniser a container needs: a built-in one by name, or the one the user names with `spec`.

    Nothing in the header is used as a path: a name that is not built in needs the user's `spec`, and
    the fingerprint of what the user named is checked before any of it is loaded.
    """
    need = header["tokenizer"]
    wanted = f"tokeniser {need['name']!r} (fingerprint {need['fingerprint']})"
    if spec is None:
        if need["name"] not in BUILTIN_TOKENIZERS:
            raise ModelUnavailableError(f"{path}: made with {wanted}, which is not built in: "
                                        f"pass --tokenizer with its file or folder")
        spec = need["name"]
    try:
        fp = spec_fingerprint(spec)
    except ModelUnavailableError as e:
        raise ModelUnavailableError(f"{path}: needs {wanted}: {e}") from None
    if fp != need["fingerprint"]:
        raise ModelUnavailableError(f"{path}: made with {wanted}, but {spec} has fingerprint {fp}: "
                                    f"pass --tokenizer with the file or folder it was made with")
    tok = cached_tokenizer(spec, str(device))
    check_tokenizer_fit(header, tok, path)
    return tok


def check_tokenizer_fit(header: dict, tok: Tokenizer, path):
    """The header's layout fields must be the ones this tokeniser produces; say which one is not."""
    from .errors import ContainerError
    m = tok.pad_multiple
    expect = {"channels": tok.channels, "tokenizer.channels": tok.channels,
              "tokenizer.time_factor": tok.time_factor, "tokenizer.space_factor": tok.space_factor,
              "latent_width": -(-header["width"] // m) * m // tok.space_factor,
              "latent_height": -(-header["height"] // m) * m // tok.space_factor}
    for key, want in expect.items():
        got = header["tokenizer"][key.split(".")[1]] if "." in key else header[key]
        if got != want:
            raise ContainerError(f"{path}: corrupt container (header {key} is {got}, "
                                 f"but tokeniser {tok.name} gives {want})")
    stateful = header["tokenizer"].get("stateful", tok.stateful)
    if stateful != tok.stateful:
        raise ContainerError(f"{path}: corrupt container (header tokenizer.stateful is {stateful}, "
                             f"but tokeniser {tok.name} is {'' if tok.stateful else 'not '}stateful)")


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

    def frame_groups(self, z: torch.Tensor, at_start: bool, pixels: int):
        """Decode z in groups of latent frames small enough for DECODE_PIXELS -> (latent slice, frames).

        A stateful tokeniser carries its state from group to group, so this equals one call on z;
        a stateless one codes each chunk as one clip, so it gets z whole."""
        n = len(z)
        if self.tok.stateful:
            most = max(1, DECODE_PIXELS // max(1, pixels * self.tok.time_factor))
            n = -(-len(z) // -(-len(z) // most))     # even groups: fewer block sizes for the allocator
        for a in range(0, len(z), n):
            lat = slice(a, min(a + n, len(z)))
            yield lat, self.frames(z[lat])

    def chunk_frames(self, chunk: Chunk, at_start: bool, n: int, height: int, width: int):
        """A chunk -> (latent slice, uint8 frames cropped to height x width) group by group, the
        chunk's n real frames in all (its span: the last chunk's padding frames are dropped)."""
        for lat, x in self.frame_groups(self.dense(chunk), at_start, height * width):
            frames = to_frames(x[:n], height, width)
            n -= len(frames)
            yield lat, frames

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


def decode_tag(src, use_lit, codec, crf, overlay, tokenizer_fp) -> str:
    """What decompress writes into an mp4/mkv's comment: which .atok (by content) and settings made it,
    so a rerun can tell its own up-to-date output from a video that merely has the same name."""
    settings = json.dumps({"atok": file_fingerprint(src), "lit": use_lit, "codec": codec, "crf": crf,
                           "overlay": overlay, "tokenizer": tokenizer_fp}, sort_keys=True)
    return "adaptok " + hashlib.sha256(settings.encode()).hexdigest()[:16]


# Decoding runs a stateful tokeniser over at most this many pixels at once, so memory follows the frame
# size, not the chunk length (a chunk of 1024 latent frames decodes group by group).
DECODE_PIXELS = 1 << 23


def decompress(src, dst, tokenizer: str | None = None, use_lit=True, codec=None, crf=18, force=False,
               device="auto", progress: Callable[[int], None] | None = None, overlay=False, partial=False,
               limits: Limits = DEFAULT_LIMITS) -> Result:
    """Rebuild a video from an .atok container; width, height, frame count and fps are restored.

    overlay=True tints the positions that were dropped, to show what the mask did.
    partial=True recovers every complete chunk of a truncated container (whose index was cut off).
    limits: the resource budget the container must fit (container.Limits).
    progress(n, total=None) is called with the frames written (first with n=0 and the total).
    """
    t_start = time.perf_counter()
    dev = pick_device(device)
    if not 0 <= crf <= 51:
        raise UsageError("--crf must be between 0 and 51")
    dst = Path(dst)
    plan([(Path(src), dst)])
    kind = output_kind(dst, codec)
    with AtokReader(src, partial=partial, limits=limits) as r:
        h = r.header
        tok = tokenizer_for(h, src, tokenizer, dev)
        inpainter, note = inpainter_for(h, tok, src, use_lit, dev)
        res = Result(str(src), str(dst), width=h["width"], height=h["height"],
                     fps=h["fps_num"] / h["fps_den"], tokens_kept=r.tokens_kept, tokens_total=r.tokens_total,
                     bytes_in=r.size, atok_bytes=r.size, notes=[note] if note else [])
        if r.salvaged:
            res.notes.append(f"{src}: truncated: recovered {len(r.chunks)} complete chunks ({r.frames} frames)")
        track = AudioTrack.from_header(h["audio"]) if h.get("audio") else None
        if track is not None and kind == "x264" and track.codec not in MP4_AUDIO:
            raise UsageError(f"{src}: its {track.codec} audio does not go in .mp4: write .mkv instead")
        if track is not None and kind in ("y4m", "png"):
            res.notes.append(f"{src}: its {track.codec} audio is not written: {kind} outputs hold no sound "
                             f"(write .mp4 or .mkv to keep it)")
        elif track is not None and r.salvaged:
            res.notes.append(f"{src}: the audio track was lost with the index (--partial recovers video only)")
        res.audio_bytes = r.audio_bytes()
        out = AtomicOutput(dst, force, folder=kind == "png")
        if progress:
            progress(0, total=r.frames)
        try:
            tag = decode_tag(src, inpainter is not None, kind, crf, overlay, tok.fingerprint)
            fps = Fraction(h["fps_num"], h["fps_den"])
            with write_errors(dst):
                writer = VideoWriter(out.tmp, h["width"], h["height"], fps, kind, crf, comment=tag,
                                     audio=track if not r.salvaged else None)
            audio = r.iter_audio() if writer.writes_audio else iter(())
            pending = next(audio, None)
            dec = ChunkDecoder(tok, inpainter)
            spans = frame_spans([c[LATENT_FRAMES] for c in r.chunks], tok.time_factor, tok.stateful, r.frames)
            for i, (_, n) in enumerate(spans):
                chunk = r.read_chunk(i)
                for lat, frames in dec.chunk_frames(chunk, i == 0 or not tok.stateful, n, h["height"], h["width"]):
                    if overlay:
                        frames = tint_dropped(frames, chunk.mask[lat], latent_index(len(frames), tok.time_factor,
                                              lat.start == 0 and (i == 0 or not tok.stateful)) , tok.space_factor)
                    with write_errors(dst):
                        for f in frames:
                            writer.write(f)
                        res.frames += len(frames)
                        # audio up to the video written so far, so the muxer interleaves as it goes
                        while pending is not None and pending[1] * track.time_base <= res.frames / fps:
                            writer.write_audio(*pending)
                            pending = next(audio, None)
                    if progress:
                        progress(len(frames))
            if res.frames != r.frames:   # the reader's checks make this impossible; never write a short video
                raise ContainerError(f"{src}: corrupt container (decoded {res.frames} frames, header says {r.frames})")
            with write_errors(dst):
                while pending is not None:
                    writer.write_audio(*pending)
                    pending = next(audio, None)
                writer.close()
            out.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                writer.abort()
            out.abort()
            raise
    res.bytes_out = _size(dst)
    res.seconds = time.perf_counter() - t_start
    res.timing = dec.timing
    return res


def decoded_up_to_date(src, dst, use_lit=True, codec=None, crf=18, overlay=False, tokenizer=None, **_) -> bool:
    """dst is a video this adaptok decoded from exactly this .atok with these settings (its comment tag)."""
    import av
    try:
        with AtokReader(src) as r:
            h = r.header
        kind = output_kind(Path(dst), codec)
        tok = tokenizer_for(h, src, tokenizer, "cpu")
        lit = use_lit and inpainter_for(h, tok, src, True, "cpu")[0] is not None
        want = decode_tag(src, lit, kind, crf, overlay, tok.fingerprint)
        with av.open(str(dst)) as c:
            return {k.lower(): v for k, v in c.metadata.items()}.get("comment") == want
    except Exception:
        return False


@contextlib.contextmanager
def write_errors(dst):
    """Report an OS failure while writing (disk full, permissions) as one clear WriteError line."""
    try:
        yield
    except OSError as e:
        raise WriteError(f"{dst}: write failed ({e.strerror or e})") from e


def _size(p: Path):
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir())
    return p.stat().st_size
