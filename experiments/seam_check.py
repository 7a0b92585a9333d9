"""Does chunking leave a seam? Decode a clip at full rate in 8-latent-frame chunks and as one chunk,
then score the same frames: the first latent frame of every chunk after the first, against the clip mean.

    python -m experiments.seam_check DEV/cotracker_cat.mp4 [more clips]     # DEV: the dev clips (not distributed)
    python -m experiments.seam_check --tokenizer hf:ORG/REPO/vae clip.mp4    # any tokeniser adaptok loads

If the two figures agree, the frames that begin chunks are just harder or easier content; if they differ,
the chunked decode itself shows at the boundary. docs/BENCHMARKS.md cites this for its seam columns.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from adaptok_cli.core.codec import Decoder
from adaptok_cli.measure.evaluate import Scores, decode_and_score
from adaptok_cli.models.tokenizer import load_tokenizer
from bench import clips   # the benchmark's clip loader, so the frames are read exactly as it reads them


def full_rate_psnr(tok, path, chunk, short_side):
    """-> per-frame PSNR of a full-rate encode/decode in chunks of `chunk` latent frames, and chunk starts."""
    clips.CHUNK = chunk
    clip = clips.load_clip(path, tok, short_side)
    dec, scores = Decoder(tok), Scores()
    for ref, chunk in zip(clip.refs, clips.full_rate(tok, clip)):
        decode_and_score(dec, chunk, ref, scores)
    return np.array(scores.psnr), np.cumsum([len(r) for r in clip.refs])[:-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--tokenizer", default="tinytok")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tok = load_tokenizer(args.tokenizer, "cpu", args.dtype)
    for path in args.clips:
        chunked, starts = full_rate_psnr(tok, path, 8, args.short_side)
        whole, _ = full_rate_psnr(tok, path, 1 << 20, args.short_side)
        seam = lambda p: float(np.mean([p[s:s + tok.time_factor].mean() for s in starts]) - p.mean())
        print(f"{path.stem}: {len(chunked)} frames, {len(starts)} chunk starts; seam dB chunked {seam(chunked):+.2f}, "
              f"one chunk {seam(whole):+.2f}; largest per-frame difference {np.abs(chunked - whole).max():.3f} dB")


if __name__ == "__main__":
    main()
