"""Measure TinyTok's calibration (docs: adaptok_cli/models/calibration.py) on the train clips and ship it.

    python -m adaptok_cli.training.calibrate        # or: make calibrate-tinytok

The spread stays the scale TinyTok was exported with (its masking unit since format 1); the decoder
is probed on four cached train latents spread over the clip list.
"""
from __future__ import annotations

import torch

from adaptok_cli.models.calibration import measure, probe_windows, save, shipped_path
from adaptok_cli.models.tokenizer import load_tokenizer
from adaptok_cli.training.data import train_latents


def main():
    torch.set_num_threads(2)
    tok = load_tokenizer("tinytok")
    latents = train_latents(tok)
    cal = measure(tok, probe_windows(latents), spread=tok.scale)
    save(cal, shipped_path(tok))
    print(f"wrote {shipped_path(tok)}; sensitivity " + " ".join(f"{x:.2f}" for x in cal.sensitivity)
          + "; decoder unit " + " ".join(f"{x:.3f}" for x in cal.unit("decoder")))


if __name__ == "__main__":
    main()
