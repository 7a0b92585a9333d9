"""Write tests/data/tinytok_reference.npz: what the shipped TinyTok weights produce for a fixed
synthetic input. Run it (python tests/make_reference.py) only after shipping new weights on purpose;
test_tokenizer.py then checks that the installed file still reproduces it."""
from pathlib import Path

import numpy as np
import torch

from adaptok_cli.tokenizer import load_tokenizer

REFERENCE = Path(__file__).resolve().parent / "data" / "tinytok_reference.npz"


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


if __name__ == "__main__":
    torch.set_num_threads(1)
    tok = load_tokenizer("tinytok")
    z, frames = run_reference(tok)
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, latents=z, frames=frames, fingerprint=np.array(tok.fingerprint))
    print(f"wrote {REFERENCE} for tinytok {tok.fingerprint}: latents {z.shape}, frames {frames.shape}")
