"""The dev clips read and encoded by the tokeniser once, the ways of choosing which latent positions
to keep, and the decode that scores a choice as decompress would; every codec step is codec.py's."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from adaptok_cli.models.calibration import DEFAULT_UNIT, rule_unit
from adaptok_cli.core.codec import Codec, Decoder, Rule
from adaptok_cli.format.container import AtokWriter
from adaptok_cli.measure.evaluate import Scores, decode_and_score
from adaptok_cli.core.lit import Inpainter
from adaptok_cli.running.options import CompressOptions, header_for
from adaptok_cli.running.video import VideoReader

CHUNK = 8
UNIT = DEFAULT_UNIT      # the rule's unit (--unit; bench.bench sets it)


# --- clips: read and encode once ------------------------------------------------------------------

@dataclass
class Clip:
    name: str
    width: int
    height: int
    fps: float
    refs: list = field(default_factory=list)      # per chunk: (real, H, W, 3) uint8 input frames
    z: list = field(default_factory=list)         # per chunk: raw latents (t, C, h, w)
    encode_s: float = 0.0

    @property
    def frames(self):
        return sum(len(r) for r in self.refs)


def load_clip(path, tok, short_side, max_frames=None) -> Clip:
    """A clip's frames and latents, chunk by chunk, encoded as compress encodes them (codec.Encoder)."""
    with VideoReader(path, short_side=short_side) as r:
        info = r.info
        clip = Clip(Path(path).stem, info.width, info.height, float(info.fps))
        seen = []                   # the chunk's input frames, as the encoder reads them

        def frames():
            for i, f in enumerate(r):
                if max_frames is not None and i >= max_frames:
                    return
                seen.append(f)
                yield f
        enc = Codec(tok, Rule(threshold=0.0)).encoder()
        for z, real in enc.latent_chunks(frames(), CHUNK):
            clip.refs.append(np.stack(seen[:real]))
            del seen[:real]
            clip.z.append(z)
        clip.encode_s = enc.timing["encode"]
    return clip


# --- masks: who decides which positions are kept ---------------------------------------------------

def codec(tok, threshold=None, keep_ratio=None) -> Codec:
    """The benchmark's codec: int8, the rule's unit (--unit), no keyframes after the first."""
    return Codec(tok, Rule(threshold, keep_ratio, unit=unit(tok)))


def threshold_chunks(tok, clip, threshold=None, keep_ratio=None) -> list:
    """The clip's chunks as compress codes them with this threshold or keep ratio (Encoded)."""
    enc = codec(tok, threshold, keep_ratio).encoder()
    return [enc.encode_latents(z) for z in clip.z]


def full_rate(tok, clip) -> list:
    """The clip's chunks with every position kept (no unit needed: any tokeniser)."""
    c = Codec(tok, Rule(keep_ratio=1.0))
    return [c.masked(z, torch.ones(z.shape[0], *z.shape[2:], dtype=torch.bool)) for z in clip.z]


def random_chunks(tok, clip, rate, seed=0) -> list:
    """Uniform random dropping at a fixed rate per latent frame (first latent frame whole, as ours)."""
    g = torch.Generator().manual_seed(seed)
    chunks, first, c = [], True, Codec(tok, Rule(keep_ratio=rate))
    for z in clip.z:
        t, _, h, w = z.shape
        m = torch.zeros(t, h * w, dtype=torch.bool)
        for i in range(t):
            k = round(rate * h * w)
            m[i, torch.randperm(h * w, generator=g)[:k]] = True
        if first:
            m[0] = True
            first = False
        chunks.append(c.masked(z, m.view(t, h, w)))
    return chunks


def unit(tok):
    return rule_unit(tok, UNIT)[1]


def new_inpainter(tok, lit, threshold=None):
    return Inpainter(lit.load_lit(), tok.scale, lit.fingerprint, threshold=threshold, unit=unit(tok)) if lit else None


def reconstruct(tok, clip: Clip, chunks, lit=None, threshold=None, fill="hold") -> dict:
    """Decode a clip from its coded chunks (Encoded) as decompress would (fill, optional LIT, decoder);
    score it."""
    header = header_for(tok, None, CompressOptions().check(), clip.width, clip.height,
                        Fraction(clip.fps).limit_denominator(1001), clip.name)
    buf = io.BytesIO()
    writer = AtokWriter(buf, header)
    dec = Decoder(tok, new_inpainter(tok, lit, threshold), fill, threshold, unit(tok))
    s, kept, total = Scores(tok.time_factor), 0, 0
    for ref, chunk in zip(clip.refs, chunks):
        writer.write_chunk(chunk.mask, chunk.codes, chunk.qscale, len(ref))
        decode_and_score(dec, chunk, ref, s, truth=chunk.latents, scale=tok.scale)
        kept, total = kept + int(chunk.mask.sum()), total + chunk.mask.numel()
    writer.close(clip.frames)
    d = {"psnr": s.mean_psnr, "ssim": s.mean_ssim, "token_rate": kept / total,
         "bpp": buf.tell() * 8 / (clip.frames * clip.width * clip.height), "latent_mse_dropped": s.latent_mse,
         "seconds_lit": dec.timing["lit"], "seconds_decode": dec.timing["decode"]}
    if s.seams:
        d["seam_psnr_minus_mean"] = float(np.mean(s.seams)) - s.mean_psnr
    return d


def lit_share(results) -> float:
    """LIT's time over the decoder's, summed over reconstruct() results (every chunk of every clip)."""
    return sum(r["seconds_lit"] for r in results) / sum(r["seconds_decode"] for r in results)


def markdown(r) -> list[str]:
    return [f"Clips: {len(r['clips'])} ({sum(c[3] for c in r['clips'])} frames), short side 256: "
            + ", ".join(f"{c[0]} {c[1]}x{c[2]} ({c[3]} f)" for c in r["clips"]) + ". "
            "PSNR and SSIM are against the input frames at that size, averaged per clip, then over clips. "
            "Each clip is encoded once; methods differ only in the positions they keep and how they fill the rest.",
            ""]
