"""compress / decompress: files in, files out, streaming chunk by chunk through the codec core (codec.py).

Work happens in chunks of latent frames, so memory is O(chunk) whatever the video length; outputs are
written to a locked temporary beside the target and renamed into place only when complete (outputs.py).
Reading, the device work and writing run at once, in threads joined by bounded queues (overlap.py):

    compress:   read + decode frames, stage them on the device -> tokeniser -> mask -> zstd (a few threads) -> write
    decompress: read + unpack chunks, fill -> inpainter + tokeniser decode -> encode + mux the video (+ audio)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Callable

from adaptok_cli.running import memory
from adaptok_cli.core.codec import Codec, staged
from adaptok_cli.format.container import MAX_FPS, MIN_FPS, AtokReader, AtokWriter
from adaptok_cli.format.audio import can_write as can_write_audio
from adaptok_cli.errors import ContainerError, InputError, ModelUnavailableError, UsageError, WriteError
from adaptok_cli.models.matching import cached_tokenizer, inpainter_for, lit_identity, models_for, tokenizer_for
from adaptok_cli.running.options import (CompressOptions, DecompressOptions, Result, decompress_options_of, header_for, options_of,
                      settings_of)
from adaptok_cli.running.outputs import open_output, plan
from adaptok_cli.measure.pictures import overlay as tint_dropped
from adaptok_cli.running.stages import reached
from adaptok_cli.running.overlap import Behind, Busy, ahead, timed_iter
from adaptok_cli.models.tokenizer import Tokenizer, file_fingerprint, load_tokenizer, pick_device
from adaptok_cli.running.video import (AudioTrack, PacketRefused, VideoReader, VideoWriter, audio_packets, audio_track, has_audio,
                    output_kind)

AUDIO_RECORD_BYTES = 1 << 19     # packets are grouped into records of about this size
ZSTD_THREADS = max(1, min(4, os.cpu_count() or 1))   # chunk records compressed at once
# frames read ahead of the tokeniser: 48 MB of uint8 RGB (two calls' worth at 1080p, more for smaller
# frames), and never less than one call's worth (at 4K: the next call's frames, 125 MB)
AHEAD_PIXELS = 1 << 24
# codecs the mp4 muxer takes as they are; .mkv takes every one of defaults.AUDIO_CODECS
MP4_AUDIO = ("aac", "mp3", "mp2", "opus", "flac", "ac3", "eac3", "alac")


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


def expected_settings(opts: CompressOptions, tok: Tokenizer, src) -> dict:
    """settings_of() the container compress(src) would write with these options."""
    s = settings_of(header_for(tok, lit_identity(tok, opts.lit), opts, 1, 1, Fraction(1), ""))
    return {**s, "audio": not opts.drop_audio and has_audio(src)}


def _open_source(src, opts: CompressOptions):
    """-> (VideoReader, AudioTrack or None), refused early for an impossible frame rate."""
    reader = VideoReader(src, short_side=opts.short_side, max_side=opts.max_side, timeline=opts.timeline())
    try:
        if not MIN_FPS <= reader.info.fps <= MAX_FPS:
            raise InputError(f"{src}: frame rate {float(reader.info.fps):.6g} is outside {MIN_FPS}..{MAX_FPS} frames/s")
        return reader, (audio_track(src) if reader.has_audio and not opts.drop_audio else None)
    except BaseException:
        reader.close()
        raise


def compress(src, dst, options: CompressOptions | None = None, force=False,
             progress: Callable[[int], None] | None = None, loaded_tokenizer: Tokenizer | None = None,
             pipelined: bool = True, **kw) -> Result:
    """Compress one video file to an .atok container (written atomically).

    Options come as a CompressOptions or as keywords: compress("a.mp4", "a.atok", threshold=0.2).
    progress(n, total=None) is called with the frames done (first with n=0 and the clip's estimated total).
    pipelined=False runs the stages one after another in this thread (same bytes; for measuring).
    """
    opts = options_of(options, kw)
    plan([(Path(src), Path(dst))])
    t_start = time.perf_counter()
    tok = loaded_tokenizer or load_tokenizer(opts.tokenizer, pick_device(opts.device), opts.dtype)
    reached("models")
    reader, audio = _open_source(src, opts)
    info = reader.info
    with reader:
        out = open_output(dst, force)
        res = Result(str(src), str(dst), width=info.width, height=info.height, fps=float(info.fps),
                     bytes_in=Path(src).stat().st_size)
        if progress:
            progress(0, total=info.frames)          # the container's estimate, or None
        try:
            header = header_for(tok, lit_identity(tok, opts.lit), opts, info.width, info.height, info.fps, Path(src).name,
                                None if audio is None else audio.to_header())
            writer = AtokWriter(out.f, header, opts.level)
            enc = Codec(tok, opts.rule(tok), opts.quant, opts.store_logvar).encoder()
            busy = _encode_chunks(enc, reader, opts.chunk, writer, res, dst, progress, pipelined)
            if res.frames == 0:
                raise InputError(f"{src}: no frames in the range asked" if opts.timeline() else f"{src}: the video has no frames")
            with write_errors(dst):
                if audio is not None:
                    res.audio_bytes = write_audio_records(writer, reader.audio_in_range(audio_packets(src), audio.time_base))
                writer.close(res.frames)
                out.commit()
        except BaseException:
            out.abort()
            raise
    res.bytes_out = res.atok_bytes = out.size()
    res.seconds = time.perf_counter() - t_start
    res.timing = {"read": busy.pop("read"), **enc.timing, **busy}
    return res


def _encode_chunks(enc, reader: VideoReader, chunk: int, writer: AtokWriter, res: Result, dst, progress,
                   pipelined: bool) -> dict:
    """The compress stages, each in its own thread: frames read, decoded and staged on the tokeniser's
    device; the tokeniser; the mask (this thread); zstd (ZSTD_THREADS); writing. Chunks are counted
    into res -> the seconds each stage of its own was busy."""
    tok = enc.tok
    info = reader.info
    depth = max(tok.time_factor + 1, AHEAD_PIXELS // (info.width * info.height))
    read, zstd, write = Busy(), Busy(), Busy()
    pool = ThreadPoolExecutor(ZSTD_THREADS, "adaptok-zstd") if pipelined else None

    def pack(mask, codes, qscale, frames, logvar):
        with zstd.timed():
            return writer.record(mask, codes, qscale, frames, logvar)

    def append(record: Future):
        rec = record.result()
        with write.timed(), write_errors(dst):
            writer.write_record(rec)

    source = timed_iter(staged(reader, getattr(tok, "device", "cpu")), read)
    stop = threading.Event()
    try:
        with ahead(source, depth, pipelined, "adaptok-read", stop) as frames, \
                ahead(enc.latent_chunks(frames, chunk), 1, pipelined, "adaptok-encode", stop) as latents, \
                Behind(append, ZSTD_THREADS, pipelined, "adaptok-write", stop) as sink:
            for z, n in latents:
                c = enc.encode_latents(z)
                del z
                args = (c.mask, c.codes, c.qscale, n, c.logvar)
                sink.put(pool.submit(pack, *args) if pool else _done(pack, *args))
                reached("frames")   # a test may stop the run here, the first chunk on its way out (stages.py)
                res.frames += n
                res.tokens_kept += int(c.mask.sum())
                res.tokens_total += c.mask.numel()
                del c
                if progress:
                    progress(n)
                memory.trim()        # a long video's peak stays that of its first chunks
            sink.close()
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return {"read": read.seconds, "zstd": zstd.seconds, "write": write.seconds}


def _done(fn, *args) -> Future:
    """fn(*args) run now, as a finished Future (the serial program's stand-in for the zstd pool)."""
    f = Future()
    f.set_result(fn(*args))
    return f


def decode_tag(src, lit_fp, codec, crf, overlay, tokenizer_fp) -> str:
    """What decompress writes into an mp4/mkv's comment: which .atok (by content) and settings made it,
    so a rerun can tell its own up-to-date output from a video that merely has the same name."""
    settings = json.dumps({"atok": file_fingerprint(src), "lit": lit_fp, "codec": codec, "crf": crf,
                           "overlay": overlay, "tokenizer": tokenizer_fp}, sort_keys=True)
    return "adaptok " + hashlib.sha256(settings.encode()).hexdigest()[:16]


def _audio_plan(r: AtokReader, kind: str, src, res: Result) -> AudioTrack | None:
    """The audio track decompress will write into a `kind` output, or None (with a note saying why)."""
    a = r.header.audio
    track = None if a is None else AudioTrack.from_info(a)
    if track is None:
        return None
    if kind == "x264" and track.codec not in MP4_AUDIO:
        raise UsageError(f"{src}: its {track.codec} audio does not go in .mp4: write .mkv instead")
    if kind in ("y4m", "png"):
        res.notes.append(f"{src}: its {track.codec} audio is not written: {kind} outputs hold no sound "
                         f"(write .mp4 or .mkv to keep it)")
        return None
    if r.salvaged:
        res.notes.append(f"{src}: the audio track was lost with the index (--partial recovers video only)")
        return None
    if not can_write_audio(track.codec):
        raise ModelUnavailableError(f"{src}: this FFmpeg cannot write {track.codec} audio (it has no encoder "
                                    f"to open for the copied packets): write .y4m or png, which hold no sound")
    r.probe_audio()
    return track


def decompress(src, dst, options: DecompressOptions | None = None, force=False,
               progress: Callable[[int], None] | None = None, pipelined: bool = True,
               loaded_tokenizer: Tokenizer | None = None, **kw) -> Result:
    """Rebuild a video from an .atok container; width, height, frame count and fps are restored.

    Options come as a DecompressOptions or as keywords: decompress("a.atok", "a.mkv", use_lit=False).
    overlay=True tints the positions that were dropped, to show what the mask did.
    lit: a LIT file (adaptok train-lit) to fill with; the container's record must match it.
    partial=True recovers every complete chunk of a truncated container (whose index was cut off).
    limits: the resource budget the container must fit (container.Limits).
    loaded_tokenizer: a tokeniser already loaded, used if it is the container's (by fingerprint).
    progress(n, total=None) is called with the frames written (first with n=0 and the total).
    pipelined=False runs the stages one after another in this thread (same frames; for measuring).
    """
    t_start = time.perf_counter()
    o = decompress_options_of(options, kw)
    dev = pick_device(o.device)
    dst = Path(dst)
    plan([(Path(src), dst)])
    kind = output_kind(dst, o.codec)
    with AtokReader(src, partial=o.partial, limits=o.limits) as r:
        h = r.header
        tok, inpainter, note = models_for(h, src, o.tokenizer, o.use_lit, dev, o.dtype, o.lit, loaded_tokenizer)
        reached("models")
        res = Result(str(src), str(dst), width=h.width, height=h.height,
                     fps=float(h.fps), tokens_kept=r.tokens_kept, tokens_total=r.tokens_total,
                     bytes_in=r.size, atok_bytes=r.size, notes=[note] if note else [])
        if r.salvaged:
            res.notes.append(f"{src}: truncated: recovered {len(r.chunks)} complete chunks ({r.frames} frames)")
        track = _audio_plan(r, kind, src, res)
        res.audio_bytes = r.audio_bytes()
        out = open_output(dst, force, folder=kind == "png")
        if progress:
            progress(0, total=r.frames)
        writer = None
        try:
            with write_errors(dst):
                writer = VideoWriter(out.tmp, h.width, h.height, h.fps, kind, o.crf,
                                     comment=decode_tag(src, inpainter.fingerprint if inpainter else None, kind, o.crf,
                                                        o.overlay, tok.fingerprint),
                                     audio=track)
            dec = Codec(tok, None).decoder(inpainter)
            busy = _write_frames(r, dec, writer, track, res, dst, o.overlay, progress, pipelined)
            out.commit()
        except BaseException:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.abort()
            out.abort()
            raise
    res.bytes_out = out.size()
    res.seconds = time.perf_counter() - t_start
    res.timing = {"read": busy["read"], **dec.timing, "write": busy["write"]}
    return res


def _write_frames(r: AtokReader, dec, writer: VideoWriter, track: AudioTrack | None, res: Result, dst, overlay: bool,
                  progress, pipelined: bool) -> dict:
    """Every chunk decoded into the writer, the audio interleaved up to the frames written so far. Three
    stages: chunks read, unpacked and filled (a thread); inpainter and tokeniser (this thread); frames
    encoded and muxed with the audio (a thread) -> the seconds reading and writing were busy."""
    h, tok = r.header, dec.tok
    fps = h.fps
    audio = r.iter_audio() if writer.writes_audio else iter(())
    pending, written = next(audio, None), 0
    read, write = Busy(), Busy()

    def filled():
        for i in range(len(r.chunks)):
            chunk = r.read_chunk(i)
            yield i, chunk, dec.fill(chunk)

    def put(frames):
        nonlocal pending, written
        with write.timed(), write_errors(dst):
            for f in frames:
                writer.write(f)
            written += len(frames)
            while pending is not None and pending[1] * track.time_base <= written / fps:
                _write_audio(writer, pending, r.path)
                pending = next(audio, None)

    with ahead(timed_iter(filled(), read), 1, pipelined, "adaptok-read") as chunks, \
            Behind(put, 2, pipelined, "adaptok-write") as sink:
        for i, chunk, held in chunks:
            for lat, frames in dec.decode_chunk(chunk, r.entry(i).frames, h.height, h.width, held):
                if overlay:
                    frames = tint_dropped(frames, chunk.mask[lat], tok.time_factor, tok.space_factor,
                                          lat.start == 0 and r.starts_stream(i))
                sink.put(frames)
                reached("frames")   # a test may stop the run here, the first frames on their way out (stages.py)
                res.frames += len(frames)
                if progress:
                    progress(len(frames))
                del frames      # before the next group decodes (a 4K group is 100 MB of frames)
            del chunk, held
            memory.trim()       # a long video's peak stays that of its first chunks
        sink.close()
    if res.frames != r.frames:   # the reader's checks make this impossible; never write a short video
        raise ContainerError(f"{r.path}: corrupt container (decoded {res.frames} frames, header says {r.frames})")
    with write_errors(dst):
        while pending is not None:
            _write_audio(writer, pending, r.path)
            pending = next(audio, None)
        writer.close()
    return {"read": read.seconds, "write": write.seconds}


def _write_audio(writer: VideoWriter, packet, src):
    """One copied audio packet; one the muxer refuses for its own sake is the container's fault (65)."""
    try:
        writer.write_audio(*packet)
    except PacketRefused as e:
        raise ContainerError(f"{src}: corrupt container ({e})") from None


def decoded_up_to_date(src, dst, options: DecompressOptions | None = None, **kw) -> bool:
    """dst is a video this adaptok decoded from exactly this .atok with these settings (its comment tag);
    options as for decompress()."""
    import av
    try:
        o = decompress_options_of(options, kw)
        with AtokReader(src) as r:
            h = r.header
        kind = output_kind(Path(dst), o.codec)
        tok = tokenizer_for(h, src, o.tokenizer, "cpu")
        inpainter = o.use_lit and inpainter_for(tok, h.threshold, h.lit, src, lit=o.lit)[0]
        want = decode_tag(src, inpainter.fingerprint if inpainter else None, kind, o.crf, o.overlay, tok.fingerprint)
        with av.open(str(dst)) as c:
            return {k.lower(): v for k, v in c.metadata.items()}.get("comment") == want
    except Exception:
        return False


@contextlib.contextmanager
def write_errors(dst):
    """Report an OS failure while writing (disk full, permissions) as one clear WriteError line."""
    try:
        yield
    except BrokenPipeError:
        raise           # `-o -` read by a closed pipe: the CLI stops quietly (141)
    except OSError as e:
        raise WriteError(f"{dst}: write failed ({e.strerror or e})") from e


__all__ = ["CompressOptions", "DecompressOptions", "Result", "compress", "decompress", "decoded_up_to_date", "cached_tokenizer"]
