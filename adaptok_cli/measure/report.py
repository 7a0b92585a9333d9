"""What a container holds, from its header and index alone (no latent payload is decompressed)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from adaptok_cli.format.container import DEFAULT_LIMITS, AtokReader, Limits


@dataclass
class ChunkInfo:
    index: int
    first_frame: int
    frames: int
    latent_frames: int
    tokens_kept: int
    tokens_total: int
    token_rate: float
    bytes: int
    bpp: float


@dataclass
class ContainerInfo:
    """inspect()'s answer. to_dict() is what `adaptok inspect --json` prints; info["key"] reads the same."""
    file: str
    width: int
    height: int
    frames: int
    fps: float
    duration: float
    latent_shape: list
    tokens_kept: int
    tokens_total: int
    token_rate: float
    tokens_per_second: float
    bytes: int
    bpp: float
    compression_ratio: float
    threshold: float | None
    keep_ratio: float | None
    unit: str                          # the rule's unit of change: decoder or spread (format 4)
    quant: str
    chunk: int
    keyframe_interval: int
    tokenizer: dict
    lit: dict | None
    source: str | None
    created_by: str | None
    audio: dict | None
    logvar: str | None                 # how the posterior's log-variance is stored (format 6), or None
    chunks: list

    def to_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key):
        value = getattr(self, key)
        return [asdict(c) for c in value] if key == "chunks" else value


def inspect(path, limits: Limits = DEFAULT_LIMITS) -> ContainerInfo:
    """Per-clip and per-chunk token rates, sizes and identities of one .atok file."""
    with AtokReader(path, limits=limits) as r:
        return describe(r, path)


def describe(r: AtokReader, path) -> ContainerInfo:
    """inspect() of an open reader: header and index only. The lit map is shown as the file holds it."""
    h = r.header
    hw = h.latent_positions
    pixels = h.width * h.height
    chunks = []
    for i in range(r.num_chunks):
        e = r.entry(i)
        chunks.append(ChunkInfo(i, r.first_frame(i), e.frames, e.latent_frames, e.kept, e.latent_frames * hw,
                                e.kept / (e.latent_frames * hw), e.length + 4, (e.length + 4) * 8 / max(1, e.frames * pixels)))
    fps = float(h.fps)
    duration = r.frames / fps
    tok, audio = h.tokenizer, h.audio
    return ContainerInfo(
        file=str(path), width=h.width, height=h.height, frames=r.frames, fps=fps, duration=duration,
        latent_shape=[r.latent_frames, h.channels, h.latent_height, h.latent_width],
        tokens_kept=r.tokens_kept, tokens_total=r.tokens_total, token_rate=r.tokens_kept / r.tokens_total,
        tokens_per_second=r.tokens_kept / duration, bytes=r.size, bpp=r.size * 8 / (r.frames * pixels),
        compression_ratio=r.frames * pixels * 3 / r.size, threshold=h.threshold, keep_ratio=h.keep_ratio,
        unit=h.unit_name, quant=h.quant, chunk=h.chunk, keyframe_interval=h.keyframe_interval,
        tokenizer={"name": tok.name, "fingerprint": tok.fingerprint, "source": tok.source}, lit=h.to_dict().get("lit"),
        source=h.source, created_by=h.created_by,
        audio={"codec": audio.codec, "sample_rate": audio.sample_rate, "layout": audio.layout,
               "bytes": r.audio_bytes()} if audio else None,
        logvar=h.logvar, chunks=chunks)
