"""Video I/O with PyAV: frames stream in as uint8 RGB arrays, one at a time, and stream out.

Nothing here holds more than one frame, so memory never depends on the video's length.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from adaptok_cli.format.audio import ENCODER_OPTIONS, header_problem
from adaptok_cli.defaults import AUDIO_CODECS, MAX_SIDE, VIDEO_CODECS, VIDEO_EXTENSIONS
from adaptok_cli.errors import InputError, UsageError, WriteError



@dataclass
class VideoInfo:
    width: int           # size of the frames this reader yields (after any resize)
    height: int
    fps: Fraction
    frames: int | None   # container's estimate; None when it does not say
    source_width: int
    source_height: int


def scaled_size(width, height, short_side=None, max_side=None):
    """Size after optional resizing: short side set to short_side, or longest side capped at max_side."""
    s = 1.0
    if short_side:
        s = short_side / min(width, height)
    elif max_side and max(width, height) > max_side:
        s = max_side / max(width, height)
    if s == 1.0:
        return width, height
    return max(1, round(width * s)), max(1, round(height * s))


class VideoReader:
    """Iterates the first video stream of a file as (H, W, 3) uint8 RGB frames."""

    def __init__(self, path, short_side=None, max_side=None, timeline=None):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{path}: no such file")
        if self.path.is_dir():
            raise InputError(f"{path}: is a folder, not a video")
        try:
            self._container = av.open(str(self.path), "r")
        except av.error.EOFError:
            raise InputError(f"{path}: the video has no frames (empty or cut short)") from None
        except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
            raise InputError(f"{path}: not a readable video ({_reason(e)})") from None
        streams = self._container.streams.video
        if not streams:
            self._container.close()
            raise InputError(f"{path}: contains no video stream")
        self._stream = streams[0]
        self._stream.thread_type = "AUTO"
        cc = self._stream.codec_context
        w, h = cc.width, cc.height
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            self._container.close()
            raise InputError(f"{path}: unsupported frame size {w}x{h}")
        fps = self._stream.average_rate or self._stream.guessed_rate or Fraction(25)
        self.has_audio = bool(self._container.streams.audio)
        # the first frame is decoded now: its display rotation decides the size of every frame
        self._decoded = self._container.decode(self._stream)
        try:
            self._first = next(self._decoded, None)
        except av.error.EOFError:
            self._first = None
        except (av.error.FFmpegError, ValueError) as e:
            self._container.close()
            raise InputError(f"{path}: decoding failed ({_reason(e)})") from None
        self.quarter_turns = round((self._first.rotation if self._first is not None else 0) / 90) % 4
        if self.quarter_turns % 2:
            w, h = h, w
        ow, oh = scaled_size(w, h, short_side, max_side)
        self.source_fps, self.timeline = Fraction(fps), timeline       # timeline.Timeline: a range, a rate
        self.origin = (self._first.time or 0.0) if self._first is not None else 0.0   # first frame's time (s)
        frames = self._stream.frames or None
        if timeline is not None:
            fps, frames = timeline.rate(self.source_fps), timeline.estimate(frames, self.source_fps)
        self.info = VideoInfo(ow, oh, Fraction(fps), frames, w, h)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Frames as a player shows them: display rotation applied, resized as asked."""
        w, h = self.info.width, self.info.height
        turns = self.quarter_turns
        sw, sh = (self.info.source_height, self.info.source_width) if turns % 2 else (self.info.source_width,
                                                                                         self.info.source_height)
        tw, th = (h, w) if turns % 2 else (w, h)
        # one reformatter for the stream: a frame's own would set up swscale again for every frame
        # (about two thirds of the conversion's time at 1080p), for the same pixels
        convert = VideoReformatter()
        frames = self._frames()
        if self.timeline is not None:
            frames = self.timeline.select(self._timed(frames), self.source_fps)
        last = a = None
        for frame in frames:
            if frame is not last:                  # a frame the output rate repeats is converted once
                if frame.width != sw or frame.height != sh:
                    raise InputError(f"{self.path}: frame size changes mid-stream, which is not supported")
                a = convert.reformat(frame, width=tw, height=th, format="rgb24", interpolation="AREA").to_ndarray()
                a = np.ascontiguousarray(np.rot90(a, turns)) if turns else a
                last = frame
            yield a

    def _frames(self):
        """The decoded frames, in display order."""
        try:
            frame, self._first = self._first, None
            while frame is not None:
                yield frame
                frame = next(self._decoded, None)
        except av.error.FFmpegError as e:
            raise InputError(f"{self.path}: decoding failed ({_reason(e)})") from None

    def _timed(self, frames):
        """(seconds from the first frame, frame); a frame without a timestamp is placed by its index."""
        for i, f in enumerate(frames):
            yield (float(f.time) - self.origin if f.time is not None else i / float(self.source_fps)), f

    def audio_in_range(self, packets, time_base):
        """The audio packets of the frames this reader yields (all of them without a timeline range)."""
        if self.timeline is None:
            return packets
        return self.timeline.audio(packets, time_base, self.origin, self.source_fps)

    def close(self):
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class AudioTrack:
    """An audio stream as .atok keeps it: its packets are copied, never re-encoded, so the samples
    that come back are the input's own."""
    codec: str
    sample_rate: int
    layout: str
    time_base: Fraction
    extradata: bytes

    def to_header(self) -> dict:
        return {"codec": self.codec, "sample_rate": self.sample_rate, "layout": self.layout,
                "time_base_num": self.time_base.numerator, "time_base_den": self.time_base.denominator,
                "extradata": self.extradata}

    @classmethod
    def from_info(cls, a) -> "AudioTrack":
        """The track a container's header describes (a container.AudioInfo)."""
        return cls(a.codec, a.sample_rate, a.layout, a.time_base, a.extradata)


def has_audio(path) -> bool:
    """Whether a video file (a path or an open binary file) has an audio stream (False when it cannot be
    read: compress will say why)."""
    try:
        with av.open(path if hasattr(path, "read") else str(path)) as c:
            return bool(c.streams.audio)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return False


def audio_track(path) -> AudioTrack | None:
    """The first audio stream of a video file, or None; InputError for a codec adaptok does not carry."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        cc = s.codec_context
        if cc.name not in AUDIO_CODECS:
            raise InputError(f"{path}: its audio codec {cc.name} cannot be stored (adaptok copies {', '.join(AUDIO_CODECS)}): "
                             f"pass --drop-audio (drop_audio=True in Python) to compress the video without it")
        track = AudioTrack(cc.name, cc.sample_rate, cc.layout.name, Fraction(s.time_base), bytes(cc.extradata or b""))
    problem = header_problem(track.to_header())     # what decompress would refuse, refused here
    if problem is not None:
        raise InputError(f"{path}: its audio cannot be stored: {problem}: pass --drop-audio (drop_audio=True "
                         f"in Python) to compress the video without it")
    return track


def audio_packets(path) -> Iterator[tuple]:
    """The first audio stream's packets, in file order: (pts, dts, duration, keyframe, data)."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        try:
            for p in c.demux(s):
                if p.size:
                    pts = p.pts if p.pts is not None else p.dts
                    dts = p.dts if p.dts is not None else pts
                    yield (pts or 0, dts or 0, p.duration or 0, bool(p.is_keyframe), bytes(p))
        except av.error.FFmpegError as e:
            raise InputError(f"{path}: reading its audio failed ({_reason(e)})") from None


def read_frames(path, short_side=None, max_side=None) -> np.ndarray:
    """Whole clip as a (T, H, W, 3) array: for tests and evaluation of short clips only."""
    with VideoReader(path, short_side, max_side) as r:
        return np.stack(list(r))


def _reason(e):
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


def read_shrunk(path, short_side: int | None, max_side: int | None = None, upscale: bool = False) -> VideoReader:
    """A reader at short_side that only ever shrinks the clip (unless upscale=True): a smaller clip is
    read at its own size."""
    reader = VideoReader(path, short_side=short_side, max_side=max_side)
    if short_side and not upscale and min(reader.info.source_width, reader.info.source_height) <= short_side:
        reader.close()
        reader = VideoReader(path, max_side=max_side)
    return reader


def output_kind(path: Path, codec: str | None) -> str:
    """Which writer a path asks for: 'x264', 'ffv1', 'y4m' or 'png' (a folder of frames)."""
    if str(path) == "-":            # outputs.STDOUT: only a format that needs no seeking streams
        if codec not in (None, "y4m"):
            raise UsageError(f"-o -: only y4m streams to standard output (.mp4 and .mkv need seeking, png is a "
                             f"folder); drop --codec {codec} or name a file")
        return "y4m"
    ext = Path(path).suffix.lower()
    kinds = {".mp4": "x264", ".mov": "x264", ".m4v": "x264", ".mkv": "ffv1", ".y4m": "y4m", "": "png"}
    if codec:
        if codec not in VIDEO_CODECS:
            raise UsageError(f"unknown codec {codec!r}: use x264, ffv1, y4m or png")
        if ext in kinds and kinds[ext] != codec or ext not in kinds and codec != "png":
            want = {"x264": ".mp4 or .mov", "ffv1": ".mkv", "y4m": ".y4m", "png": "a name without a video extension"}[codec]
            raise UsageError(f"{path}: --codec {codec} writes {want}, not '{ext}'")
        return codec
    if ext not in kinds:
        raise UsageError(f"{path}: cannot tell the output format from '{ext}': use .mp4, .mkv, .y4m or a folder")
    return kinds[ext]


DISK_ERRORS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EPIPE}


class PacketRefused(Exception):
    """The muxer refused a copied packet for what it holds (timestamps out of order, ...): the
    container's fault, which the caller names (pipeline: exit 65)."""


class VideoWriter:
    """Writes RGB frames at an exact frame rate: H.264 (.mp4), FFV1 lossless (.mkv), .y4m, or PNGs."""

    def __init__(self, path, width, height, fps: Fraction, codec=None, crf=18, comment: str | None = None,
                 audio: AudioTrack | None = None):
        stream = hasattr(path, "write")     # a binary stream (outputs.StreamOutput: standard output)
        self.path = path if stream else Path(path)
        self.kind = codec or output_kind(self.path, None)   # callers check --codec against the name (output_kind)
        self.width, self.height, self.count = width, height, 0
        if self.kind == "png":
            self.path.mkdir(parents=True, exist_ok=True)
            return
        fmt = {"x264": "mp4", "ffv1": "matroska", "y4m": "yuv4mpegpipe"}[self.kind]
        try:
            if not stream:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(self.path if stream else str(self.path), "w", format=fmt)
            if comment and self.kind in ("x264", "ffv1"):
                self._container.metadata["comment"] = comment
            codec_name, pix_fmt, options = {
                # yuv444p keeps odd sizes and full colour; the High 4:4:4 profile plays in ffmpeg/VLC/mpv
                "x264": ("libx264", "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p",
                         {"crf": str(crf), "preset": "medium"}),
                "ffv1": ("ffv1", "bgr0", {}),
                "y4m": ("rawvideo", "yuv444p", {}),
            }[self.kind]
            self._stream = self._container.add_stream(codec_name, rate=fps, options=options)
            self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
            self._stream.time_base = 1 / Fraction(fps)
            self._audio = None
            if audio is not None and self.kind in ("x264", "ffv1"):
                self._audio = self._container.add_stream(audio.codec, rate=audio.sample_rate, layout=audio.layout,
                                                         options=dict(ENCODER_OPTIONS))
                self._audio.codec_context.extradata = audio.extradata or None
                self._audio.time_base = audio.time_base
        except (av.error.FFmpegError, OSError) as e:
            raise WriteError(f"{path}: cannot open for writing ({_reason(e)})") from None

    def write(self, rgb: np.ndarray):
        if self.kind == "png":
            _save_png(self.path / f"{self.count:06d}.png", rgb)
        else:
            frame = _frame_of(rgb)
            frame.pts = self.count
            self._mux(self._stream.encode(frame))
        self.count += 1

    @property
    def writes_audio(self) -> bool:
        return getattr(self, "_audio", None) is not None

    def write_audio(self, pts, dts, duration, keyframe, data):
        """One audio packet, copied as it was read (the muxer interleaves it with the video by time).
        PacketRefused when the muxer refuses the packet itself (its timestamps), not the disk."""
        p = av.Packet(data)
        p.pts, p.dts, p.duration, p.is_keyframe = pts, dts, duration, keyframe
        p.time_base, p.stream = self._audio.time_base, self._audio
        try:
            self._container.mux(p)
        except av.error.FFmpegError as e:
            if e.errno in DISK_ERRORS:
                raise WriteError(f"{self.path}: write failed ({_reason(e)})") from None
            raise PacketRefused(f"audio packet at {pts}/{dts} refused by the muxer ({_reason(e)})") from None

    def _mux(self, packets):
        try:
            self._container.mux(packets)
        except av.error.FFmpegError as e:
            raise WriteError(f"{self.path}: write failed ({_reason(e)})") from None

    def close(self):
        if self.kind != "png":
            self._mux(self._stream.encode(None))
            self._container.close()

    def abort(self):
        if self.kind != "png":
            try:
                self._container.close()
            except Exception:
                pass


def _frame_of(rgb: np.ndarray) -> av.VideoFrame:
    """An RGB frame for an encoder: the array's own memory where its rows are contiguous (the encoder
    converts it to its pixel format at once, into a buffer of its own), else a contiguous copy."""
    if rgb.strides[1:] == (3, 1) and rgb.strides[0] > 0 and hasattr(av.VideoFrame, "from_numpy_buffer"):
        return av.VideoFrame.from_numpy_buffer(rgb, format="rgb24")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def _save_png(path, rgb):
    """One PNG through FFmpeg's encoder, so no imaging library is needed."""
    h, w = rgb.shape[:2]
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = w, h, "rgb24"
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        c.mux(s.encode(f))
        c.mux(s.encode(None))


def is_video_path(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS and not os.path.isdir(path)
