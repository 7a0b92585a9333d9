"""LIT's forward pass against the decoder's, per chunk of 8 latent frames, where LIT runs.

    python -m experiments.lit_cost

In `adaptok decompress` LIT runs only on the 8x8 tiles of a chunk where something was dropped, so its
share there depends on the clip (the rd benchmark reports it over the dev clips). This times the worst
case: the two networks alone on the same chunk with half its positions dropped at random (every tile
runs), the mean of the middle 5 of 7 runs, at 256x256 and 856x480.
"""
import argparse
import time

import torch

from adaptok_cli.core.lit import Inpainter, load_lit
from adaptok_cli.models.matching import shipped_lit
from adaptok_cli.models.tokenizer import load_tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lit", help="a LIT .safetensors file (default: the shipped one)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = load_tokenizer("tinytok")
    lit, fingerprint = (load_lit(args.lit)[0], "given") if args.lit else (shipped_lit(tok).load_lit(), shipped_lit(tok).fingerprint)
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
