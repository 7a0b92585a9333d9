"""What a container holds, from its header and index alone (no latent payload is decompressed)."""
from __future__ import annotations

from pathlib import Path

from .container import AtokReader


def chunk_frame_spans(tok: dict, latent_counts: list[int], frames: int) -> list[tuple[int, int]]:
    """(first frame, frame count) of each chunk: the first latent frame of a stream covers one frame."""
    spans, start = [], 0
    tf = tok["time_factor"]
    for i, t in enumerate(latent_counts):
        n = 1 + tf * (t - 1) if (i == 0 or not tok.get("stateful", True)) else tf * t
        n = max(0, min(n, frames - start))
        spans.append((start, n))
        start += n
    return spans


def inspect(path) -> dict:
    """Per-clip and per-chunk token rates, sizes and identities of one .atok file."""
    with AtokReader(path) as r:
        return describe(r, path)


def describe(r: AtokReader, path) -> dict:
    """inspect() of an open reader: header and index only."""
    h = r.header
    hw = h["latent_height"] * h["latent_width"]
    fps = h["fps_num"] / h["fps_den"]
    pixels = h["width"] * h["height"]
    spans = chunk_frame_spans(h["tokenizer"], [c[2] for c in r.chunks], r.frames)
    chunks = []
    for i, ((off, length, t, kept, _, _), (first, n)) in enumerate(zip(r.chunks, spans)):
        chunks.append({"index": i, "first_frame": first, "frames": n, "latent_frames": t,
                       "tokens_kept": kept, "tokens_total": t * hw, "token_rate": kept / (t * hw),
                       "bytes": length + 4, "bpp": (length + 4) * 8 / max(1, n * pixels)})
    duration = r.frames / fps
    return {
        "file": str(path), "width": h["width"], "height": h["height"], "frames": r.frames, "fps": fps,
        "duration": duration,
        "latent_shape": [r.latent_frames, h["channels"], h["latent_height"], h["latent_width"]],
        "tokens_kept": r.tokens_kept, "tokens_total": r.tokens_total,
        "token_rate": r.tokens_kept / r.tokens_total,
        "tokens_per_second": r.tokens_kept / duration,
        "bytes": r.size, "bpp": r.size * 8 / (r.frames * pixels),
        "compression_ratio": r.frames * pixels * 3 / r.size,
        "threshold": h.get("threshold"), "keep_ratio": h.get("keep_ratio"), "quant": h["quant"],
        "chunk": h["chunk"], "keyframe_interval": h["keyframe_interval"],
        "tokenizer": {k: h["tokenizer"].get(k) for k in ("name", "fingerprint", "source")},
        "lit": h.get("lit"), "source": h.get("source"), "created_by": h.get("created_by"),
        "chunks": chunks,
    }


def describe_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def is_atok(path) -> bool:
    return Path(path).suffix == ".atok"
