"""What a compress or decompress run is asked (CompressOptions, DecompressOptions), what compress writes in the
header, and what any run reports (Result)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from adaptok_cli import __version__
from adaptok_cli.defaults import (DEFAULT_CHUNK, DEFAULT_THRESHOLD, DEFAULT_TOKENIZER, DTYPE_CHOICES, MAX_SIDE, MAX_THRESHOLD,
                       UNITS, VIDEO_CODECS, is_device_name)
from adaptok_cli.errors import AdaptokError, UsageError
from adaptok_cli.core.layout import latent_side

# the header fields that decide a container's content, beside the models and the audio track
SETTINGS = ("threshold", "keep_ratio", "keyframe_interval", "quant", "chunk", "level", "max_side", "short_side", "unit")
# the frame range and rate (timeline.py): option -> header field, written only when asked, so that a
# container made without them is byte for byte what it was before they existed
TIMELINE_FIELDS = {"start": "start", "duration": "duration", "frames": "frame_limit", "fps": "resample_fps"}


def check_dtype(dtype: str):
    if dtype not in DTYPE_CHOICES:
        raise UsageError(f"unknown --dtype {dtype!r}: use {', '.join(DTYPE_CHOICES)}")


def check_device(device):
    """auto, cpu, cuda or cuda:N (a torch.device passes): checked before any work, without torch."""
    if isinstance(device, str) and not is_device_name(device):
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda")


def check_common(workers: int | None, device: str, as_json: bool, as_csv: bool, dtype: str = "auto"):
    """Options every batch command shares, checked before any work (bad values are usage errors, 2)."""
    check_dtype(dtype)
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    check_device(device)
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")


def limits_for(max_pixels: int | None):
    """--max-pixels N -> the resource budget containers must fit (container.Limits); None: the default."""
    from adaptok_cli.format.container import DEFAULT_LIMITS, Limits
    if max_pixels is None:
        return DEFAULT_LIMITS
    if max_pixels < 1:
        raise UsageError("--max-pixels must be at least 1")
    return Limits.for_pixels(max_pixels)


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
    unit: str = "decoder"              # the rule's per-channel unit of change (calibration.UNITS)
    dtype: str = "auto"                # precision of a diffusers tokeniser (defaults.DTYPE_CHOICES)
    lit: str | None = None             # a LIT file (adaptok train-lit) the container will expect
    start: float | None = None         # seconds from the first frame (ffmpeg's -ss)
    duration: float | None = None      # seconds (ffmpeg's -t)
    frames: int | None = None          # at most this many frames (ffmpeg's -frames)
    fps: Fraction | str | float | None = None   # resample to this constant rate, e.g. 24 or "30000/1001"
    store_logvar: bool = False         # also keep the VAE posterior's log-variance (format 6; header logvar)

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
            if side is not None and not 16 <= side <= MAX_SIDE:
                raise UsageError(f"{name} must be between 16 and {MAX_SIDE}")
        for name, value, lo, hi in (("--chunk", self.chunk, 1, 1024), ("--keyframe-interval", self.keyframe_interval,
                                    0, 1 << 30), ("--level", self.level, 1, 22)):
            if not lo <= value <= hi:
                raise UsageError(f"{name} must be between {lo} and {hi}")
        if self.quant not in ("int8", "fp16"):
            raise UsageError("--quant must be int8 or fp16")
        if self.unit not in UNITS:
            raise UsageError(f"--unit must be one of {', '.join(UNITS)}")
        check_dtype(self.dtype)
        if self.max_side is not None and self.short_side is not None:
            raise UsageError("give --short-side or --max-side, not both")
        self._check_timeline()
        return self

    def _check_timeline(self):
        from adaptok_cli.format.container import MAX_FPS, MAX_FRAME_LIMIT, MAX_SECONDS, MIN_FPS
        for name, value, lo in (("--start", self.start, 0.0), ("--duration", self.duration, 1e-3)):
            if value is not None and not (isinstance(value, (int, float)) and lo <= value <= MAX_SECONDS):
                raise UsageError(f"{name} must be between {lo:g} and {MAX_SECONDS:g} seconds")
        if self.frames is not None and not (isinstance(self.frames, int) and 1 <= self.frames <= MAX_FRAME_LIMIT):
            raise UsageError("--frames must be 1 or more")
        if self.fps is not None:
            try:
                fps = Fraction(str(self.fps)).limit_denominator(1 << 20)
            except (ValueError, ZeroDivisionError):
                raise UsageError(f"--fps {self.fps}: give a rate such as 24, 29.97 or 30000/1001") from None
            if not MIN_FPS <= fps <= MAX_FPS:
                raise UsageError(f"--fps must be between {MIN_FPS} and {MAX_FPS} frames/s")
            self.fps = fps

    def timeline(self):
        """The frame range and rate asked (timeline.Timeline), or None."""
        from adaptok_cli.running.timeline import Timeline
        values = {k: getattr(self, k) for k in TIMELINE_FIELDS}
        return Timeline(**values) if any(v is not None for v in values.values()) else None

    def rule(self, tok):
        """The rule for this tokeniser: the options plus the unit its calibration gives."""
        from adaptok_cli.models.calibration import rule_unit
        from adaptok_cli.core.codec import Rule
        return Rule(self.threshold, self.keep_ratio, self.keyframe_interval, rule_unit(tok, self.unit)[1])


def options_of(options: CompressOptions | None, values: dict) -> CompressOptions:
    """The checked options of a Python call that takes a CompressOptions or keywords, not both."""
    if options is not None and values:
        raise UsageError("give options as a CompressOptions or as keywords, not both")
    return (options or CompressOptions(**values)).check()


@dataclass
class DecompressOptions:
    """What a decompress run is asked (the keywords of pipeline.decompress, which also takes these)."""
    tokenizer: str | None = None       # the tokeniser's file or folder, when it is not built in
    use_lit: bool = True               # False: hold-fill dropped positions instead of running LIT
    lit: str | None = None             # a LIT file (adaptok train-lit) to fill with
    codec: str | None = None           # one of VIDEO_CODECS; None: from the output's extension
    crf: int = 18                      # x264 quality, 0-51
    device: str = "auto"
    dtype: str = "auto"                # precision of a diffusers tokeniser (defaults.DTYPE_CHOICES)
    overlay: bool = False              # tint the positions that were dropped
    partial: bool = False              # recover the complete chunks of a truncated container
    limits: object = None              # the resource budget (container.Limits); None: DEFAULT_LIMITS

    def check(self):
        check_dtype(self.dtype)
        check_device(self.device)
        if not 0 <= self.crf <= 51:
            raise UsageError("--crf must be between 0 and 51")
        if self.codec is not None and self.codec not in VIDEO_CODECS:
            raise UsageError(f"unknown codec {self.codec!r}: use x264, ffv1, y4m or png")
        if self.limits is None:
            self.limits = limits_for(None)
        return self


def decompress_options_of(options: DecompressOptions | None, values: dict) -> DecompressOptions:
    """The checked options of a Python call that takes a DecompressOptions or keywords, not both."""
    if options is not None and values:
        raise UsageError("give options as a DecompressOptions or as keywords, not both")
    return (options or DecompressOptions(**values)).check()


def header_for(tok, lit_identity: dict | None, opts: CompressOptions, width: int, height: int, fps: Fraction,
               source: str, audio: dict | None = None):
    """The container header compress writes (docs/FORMAT.md), a container.Header; audio: the track's
    description (video.AudioTrack.to_header), last in the map when there is one."""
    from adaptok_cli.models.calibration import rule_unit
    from adaptok_cli.format.container import Header
    unit_name, unit = rule_unit(tok, opts.unit)
    raw = {
        "width": width, "height": height,
        "latent_width": latent_side(width, tok.pad_multiple, tok.space_factor),
        "latent_height": latent_side(height, tok.pad_multiple, tok.space_factor),
        "channels": tok.channels, "fps_num": fps.numerator, "fps_den": fps.denominator,
        "tokenizer": {**tok.identity(), "source": tok.source, "stateful": tok.stateful},
        "lit": lit_identity,
        **{k: getattr(opts, k) for k in SETTINGS if k != "unit"},
        "unit": [float(x) for x in unit], "unit_name": unit_name,
        "source": source, "created_by": f"adaptok {__version__}",
        **timeline_header(opts),
    }
    if opts.store_logvar:       # only when asked: a container without it is what it was before (format 5)
        raw["logvar"] = logvar_storage(tok)
    if audio is not None:
        raw["audio"] = audio
    return Header.written(raw)


def logvar_storage(tok) -> str:
    """The header's logvar field for --store-logvar; a tokeniser without a posterior is refused."""
    from adaptok_cli.format.container import LOGVAR_QUANTS
    if not getattr(tok, "has_posterior", False):
        raise UsageError(f"--store-logvar: tokeniser {tok.name} is deterministic (it has no posterior, so no "
                         f"log-variance to store); use a VAE (--tokenizer a diffusers VAE folder) or leave it out")
    return LOGVAR_QUANTS[0]


def timeline_header(opts: CompressOptions) -> dict:
    """The header fields of the frame range and rate, only those asked (docs/FORMAT.md)."""
    fields = {key: getattr(opts, k) for k, key in TIMELINE_FIELDS.items() if getattr(opts, k) is not None}
    if "resample_fps" in fields:
        fields["resample_fps"] = [fields["resample_fps"].numerator, fields["resample_fps"].denominator]
    for key in ("start", "duration"):
        if key in fields:
            fields[key] = float(fields[key])
    return fields


def settings_of(header) -> dict:
    """What decides a container's content (models, options, audio), for up-to-date checks: of a
    container.Header, the fields as the file holds them (to_dict), so messages show the stored values."""
    raw = header.to_dict()
    return {"tokenizer": header.tokenizer.fingerprint, "audio": header.has_audio,
            "lit": header.lit.fingerprint if header.lit else None, "logvar": header.logvar,
            **{k: raw.get(k) for k in (*SETTINGS, *TIMELINE_FIELDS.values())}}


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
        """Its fields, then the figures computed from them (its properties): --json's object."""
        d = asdict(self)
        d.update({k: getattr(self, k) for k, v in vars(type(self)).items() if isinstance(v, property)})
        return d


@dataclass
class Outcome:
    """What happened to one file of a batch (batch.run's answer, one per file)."""
    src: Path
    dst: Path
    result: object = None      # a Result
    error: AdaptokError | None = None
    skipped: bool = False
    existing: object = None    # skipped: the kept output's figures (a Result read from a container's header)
