"""Write tests/data/tinytok_reference.npz and lit_reference.npz: what the shipped TinyTok and LIT
weights produce for a fixed synthetic input. Run it (python tests/make_reference.py) only after
shipping new weights on purpose; test_tokenizer.py and test_lit.py then check that the installed
files still reproduce it."""
from pathlib import Path

import numpy as np
import torch

from adaptok_cli.models.tokenizer import load_tokenizer

REFERENCE = Path(__file__).resolve().parent / "data" / "tinytok_reference.npz"
LIT_REFERENCE = REFERENCE.with_name("lit_reference.npz")


def reference_input() -> torch.Tensor:
    """9 frames of 32x48: smooth colour ramps and a moving bright square, in [-1, 1], (T, 3, H, W)."""
    t, y, x = torch.meshgrid(torch.arange(9.0), torch.arange(32.0), torch.arange(48.0), indexing="ij")
    r = torch.sin(x / 7 + t / 3)
    g = torch.cos(y / 5 - t / 4)
    b = ((x + y) / 80) * 2 - 1
    frames = torch.stack([r, g, b], 1)
    for i in range(9):
        frames[i, :, 10:18, 4 + 3 * i:12 + 3 * i] = 0.9
    return frames.clamp(-1, 1)


def run_reference(tok):
    z, _ = tok.encode(reference_input())
    x, _ = tok.decode(z)
    return z.numpy(), ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def reference_mask(shape) -> torch.Tensor:
    """(t, h, w): first latent frame whole, then a fixed pattern keeping about a third."""
    t, h, w = shape
    i = torch.arange(t * h * w).view(t, h, w)
    mask = (i * 7919 % 13) < 4
    mask[0] = True
    return mask


def run_lit_reference(tok, inpainter):
    """Latents of the reference input, masked and hold-filled, then filled by LIT in two chunks."""
    from adaptok_cli.core.masking import HoldFill, gather_kept
    z, _ = tok.encode(reference_input())
    mask = reference_mask((z.shape[0], *z.shape[2:]))
    held = HoldFill().fill(gather_kept(z, mask), mask)
    out = torch.cat([inpainter.fill(held[:2], mask[:2]), inpainter.fill(held[2:], mask[2:])])
    return held.numpy(), mask.numpy(), out.numpy()


if __name__ == "__main__":
    torch.set_num_threads(1)
    tok = load_tokenizer("tinytok")
    z, frames = run_reference(tok)
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, latents=z, frames=frames, fingerprint=np.array(tok.fingerprint))
    print(f"wrote {REFERENCE} for tinytok {tok.fingerprint}: latents {z.shape}, frames {frames.shape}")
    from adaptok_cli.core.lit import Inpainter
    from adaptok_cli.models.matching import shipped_lit
    ref = shipped_lit(tok)
    model, fp = ref.load_lit(), ref.fingerprint
    held, mask, out = run_lit_reference(tok, Inpainter(model, tok.scale, fp))
    np.savez_compressed(LIT_REFERENCE, held=held, mask=mask, filled=out, fingerprint=np.array(fp))
    print(f"wrote {LIT_REFERENCE} for LIT {fp}: latents {out.shape}, kept {mask.mean():.2f}")
