"""What a container holds, from its header and index alone (no latent payload is decompressed)."""
from __future__ import annotations


from .container import DEFAULT_LIMITS, KEPT, LATENT_FRAMES, LENGTH, AtokReader, Limits, frame_spans


def inspect(path, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Per-clip and per-chunk token rates, sizes and identities of one .atok file."""
    with AtokReader(path, limits=limits) as r:
        return describe(r, path)


def describe(r: AtokReader, path) -> dict:
    """inspect() of an open reader: header and index only."""
    h = r.header
    hw = h["latent_height"] * h["latent_width"]
    fps = h["fps_num"] / h["fps_den"]
    pixels = h["width"] * h["height"]
    tok = h["tokenizer"]
    spans = frame_spans(r.chunks[:, LATENT_FRAMES], tok["time_factor"], tok.get("stateful", True), r.frames)
    chunks = []
    for i, ((length, t, kept), (first, n)) in enumerate(zip(r.chunks[:, [LENGTH, LATENT_FRAMES, KEPT]].tolist(), spans)):
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
        "audio": ({"codec": h["audio"]["codec"], "sample_rate": h["audio"]["sample_rate"], "layout": h["audio"]["layout"],
                   "bytes": r.audio_bytes()} if h.get("audio") else None),
        "chunks": chunks,
    }


def describe_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
