"""What FFmpeg is handed of a container's audio track, checked before it is handed over.

Audio packets are copied, never re-encoded, but PyAV's muxer still opens an encoder for the stream's
codec with the header's rate and layout; a layout FFmpeg cannot name, or a rate or layout the codec
refuses, would fail inside PyAV (a crash, or a "write failed" naming a temporary file). So the header's
description is tried here exactly as the writer will use it (`header_problem`, from
container.validate_header; the layout only from a fixed list of names), and the first packets are decoded with the codec the header names
(`packets_problem`: AAC packets under an opus or flac header are refused). PCM cannot be checked that
way: any bytes are samples.
"""
from __future__ import annotations

import re
from fractions import Fraction

import av

MAX_CHANNELS = 64               # FFmpeg's named layouts reach 24 (22.2); more is not a real track
# The layouts handed to FFmpeg: its named ones (libavutil's channel_layout_map) and "N channels" (no
# order). A string FFmpeg parses into a custom channel map ("FL+FL", "FL+LFE+FL") is freed twice by
# PyAV once set on a codec: heap corruption, which the fuzzer found (tests/fuzz_container.py --audio).
NAMED_LAYOUTS = frozenset("""mono stereo 2.1 3.0 3.0(back) 4.0 quad quad(side) 3.1 5.0 5.0(side) 4.1 5.1 5.1(side)
    6.0 6.0(front) 3.1.2 hexagonal 6.1 6.1(back) 6.1(front) 7.0 7.0(front) 7.1 7.1(wide) 7.1(wide-side) 5.1.2
    5.1.2(back) octagonal 5.1.4 7.1.2 7.1.4 7.2.3 9.1.4 9.1.6 cube hexadecagonal binaural downmix 22.2""".split())
UNORDERED = re.compile(r"([1-9]|[1-5][0-9]|6[0-4]) channels")
PROBE_PACKETS = 8               # packets decoded to check that they are what the header says
MAX_SECONDS = 1 << 31           # |timestamps| and durations, in seconds: rescaling them cannot overflow
ENCODER_OPTIONS = {"strict": "experimental"}    # FFmpeg's own vorbis encoder is marked experimental


def encoder(codec: str, sample_rate: int, layout: str):
    """The encoder context the muxer opens for a copied stream (opened, never fed); raises what FFmpeg raises."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.sample_rate, ctx.layout = sample_rate, layout
    ctx.format = ctx.codec.audio_formats[0]
    ctx.options = dict(ENCODER_OPTIONS)
    ctx.open()
    return ctx


def can_write(codec: str) -> bool:
    """Whether this FFmpeg has an encoder for codec (the muxer needs one even to copy packets)."""
    try:
        av.Codec(codec, "w")
        return True
    except (ValueError, av.error.FFmpegError):
        return False


def header_problem(a: dict) -> str | None:
    """Why FFmpeg would not take this audio description (None: it does). a has the types and ranges
    validate_header checked: codec from the fixed table, rate, layout (a short string), time base."""
    if a["layout"] not in NAMED_LAYOUTS and not UNORDERED.fullmatch(a["layout"]):
        return f"audio layout {a['layout']!r} is not one of FFmpeg's named layouts or 'N channels'"
    try:
        layout = av.AudioLayout(a["layout"])
    except (ValueError, TypeError, av.error.FFmpegError):
        return f"audio layout {a['layout']!r} is not one this FFmpeg knows"
    if not 1 <= layout.nb_channels <= MAX_CHANNELS:
        return f"audio layout {a['layout']!r} has {layout.nb_channels} channels"
    if Fraction(a["time_base_num"], a["time_base_den"]) > 1:
        return f"audio time base {a['time_base_num']}/{a['time_base_den']} is over a second"
    if a["codec"] == "opus" and not (a["extradata"][:8] == b"OpusHead" and len(a["extradata"]) >= 19
                                     and a["extradata"][9] == layout.nb_channels):
        return "opus audio without its OpusHead setup for the layout's channels"
    if not can_write(a["codec"]):
        return None                     # this FFmpeg cannot write it at all: decompress says so (69)
    try:
        encoder(a["codec"], a["sample_rate"], a["layout"])
    except (ValueError, av.error.FFmpegError) as e:
        return (f"{a['codec']} audio at {a['sample_rate']} Hz, {a['layout']}, is not what FFmpeg's "
                f"{a['codec']} takes ({_reason(e)})")
    return None


def packets_problem(a: dict, packets) -> str | None:
    """Whether the first packets decode as the codec the header names (None: they do, or it is PCM)."""
    if a["codec"].startswith("pcm_"):
        return None
    try:
        ctx = av.CodecContext.create(a["codec"], "r")
    except ValueError:
        return None                     # no decoder in this FFmpeg: nothing to check with
    ctx.sample_rate, ctx.layout = a["sample_rate"], a["layout"]
    ctx.extradata = a["extradata"] or None
    for i, p in enumerate(packets):
        if i == PROBE_PACKETS:
            break
        try:
            ctx.decode(av.Packet(p[4]))
        except (ValueError, av.error.FFmpegError) as e:
            return f"audio packet {i} is not {a['codec']} ({_reason(e)})"
    return None


def timestamp_ok(value: int, a: dict) -> bool:
    """|value| in the track's time base is at most MAX_SECONDS."""
    return abs(value) * a["time_base_num"] <= MAX_SECONDS * a["time_base_den"]


def _reason(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e).splitlines()[0])[:80]
