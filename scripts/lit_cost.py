"""LIT's forward pass against the decoder's, per chunk of 8 latent frames, where LIT runs.

    python scripts/lit_cost.py

In `adaptok decompress` LIT runs only on the 8x8 tiles of a chunk where something was dropped, so its
share there depends on the clip (the rd benchmark reports it over the dev clips). This times the worst
case: the two networks alone on the same chunk with half its positions dropped at random (every tile
runs), the mean of the middle 5 of 7 runs, at 256x256 and 856x480.
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaptok_cli.lit import Inpainter  # noqa: E402
from adaptok_cli.pipeline import find_lit  # noqa: E402
from adaptok_cli.tokenizer import load_tokenizer  # noqa: E402


def main():
    torch.set_num_threads(2)
    tok = load_tokenizer("tinytok")
    lit, fingerprint = find_lit(tok)
    for h, w in ((32, 32), (60, 107)):
        z = torch.randn(8, tok.channels, h, w) * tok.scale.view(1, -1, 1, 1)
        mask = torch.rand(8, h, w) > 0.5
        t_lit, t_dec = [], []
        for _ in range(7):
            inpainter = Inpainter(lit, tok.scale, fingerprint, threshold=0.15)
            t0 = time.perf_counter()
            inpainter.fill(z, mask)
            t_lit.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tok.decode(z, None)
            t_dec.append(time.perf_counter() - t0)
        a, b = sorted(t_lit)[1:-1], sorted(t_dec)[1:-1]
        print(f"{w * 8}x{h * 8}: LIT {1000 * sum(a) / len(a):.1f} ms, decoder {1000 * sum(b) / len(b):.1f} ms per chunk, "
              f"LIT = {100 * sum(a) / sum(b):.1f}% of the decoder")


if __name__ == "__main__":
    main()
