"""Reading .atok files from Python: tokens without pixels, frames when wanted, all chunk by chunk.

    with adaptok_cli.open("clip.atok") as f:
        f.token_rate, f.chunk_token_rates        # from the header and index: nothing decompressed
        mask, tokens = f.sparse(0)               # chunk 0: (t, h, w) bool and (kept, C) float32
        z = f.dense(0, 2)                        # chunks 0-1 filled in: (T, C, h, w)
        for frames in f.iter_frames(): ...       # uint8 (n, H, W, 3) per chunk

Filling is sequential by nature (a dropped position holds its last kept value, and LIT looks at the
previous chunk's filled frames), so `dense(a, b)` runs the cheap fill from chunk 0 and returns a..b.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .container import DEFAULT_LIMITS, AtokReader, Limits
from .masking import dequantise
from .pipeline import ChunkDecoder, inpainter_for, to_frames, tokenizer_for
from .report import describe


class AtokFile:
    """An open .atok container. Models (tokeniser, LIT) are loaded only when first needed."""

    def __init__(self, path, tokenizer: str | None = None, use_lit: bool = True, device: str = "cpu",
                 limits: Limits = DEFAULT_LIMITS):
        self.path = Path(path)
        self._reader = AtokReader(path, limits=limits)
        self.header = self._reader.header
        self.info = describe(self._reader, path)
        self._tokenizer_spec, self.use_lit, self.device = tokenizer, use_lit, torch.device(device)
        self._tok = None
        self._inpainter = None

    # metadata -----------------------------------------------------------------------------
    width = property(lambda self: self.header["width"])
    height = property(lambda self: self.header["height"])
    frames = property(lambda self: self._reader.frames)
    fps = property(lambda self: self.header["fps_num"] / self.header["fps_den"])
    token_rate = property(lambda self: self.info["token_rate"])
    chunk_token_rates = property(lambda self: [c["token_rate"] for c in self.info["chunks"]])

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(T, C, h, w) of the dense latents of the whole clip."""
        return tuple(self.info["latent_shape"])

    def __len__(self):
        """Number of chunks."""
        return len(self._reader.chunks)

    # tokens ---------------------------------------------------------------------------------
    def sparse(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk i as stored: mask (t, h, w) bool and kept tokens (kept, C) float32, dequantised,
        in the order of mask.nonzero() (time, then row, then column)."""
        c = self._reader.read_chunk(i)
        return c.mask, dequantise(c.codes, c.qscale).T.contiguous()

    def iter_dense(self, lit: bool | None = None) -> Iterator[torch.Tensor]:
        """Dense latents (t, C, h, w) per chunk, dropped positions filled (LIT, or hold-fill)."""
        dec = self._decoder(lit, need_tokenizer=bool(self.use_lit if lit is None else lit))
        for i in range(len(self)):
            yield dec.dense(self._reader.read_chunk(i))

    def dense(self, start: int = 0, stop: int | None = None, lit: bool | None = None) -> torch.Tensor:
        """Dense latents of chunks start..stop-1 joined in time: (T, C, h, w)."""
        stop = len(self) if stop is None else stop
        out = []
        for i, z in enumerate(self.iter_dense(lit)):
            if i >= stop:
                break
            if i >= start:
                out.append(z)
        return torch.cat(out) if out else torch.zeros(0, *self.latent_shape[1:])

    def iter_frames(self, lit: bool | None = None) -> Iterator[np.ndarray]:
        """Decoded frames per chunk: uint8 (n, H, W, 3); the clip's frame count is restored exactly."""
        dec = self._decoder(lit, need_tokenizer=True)
        done = 0
        for i in range(len(self)):
            x = dec.frames(dec.dense(self._reader.read_chunk(i)))
            frames = to_frames(x[: self.frames - done], self.height, self.width)
            done += len(frames)
            yield frames

    # plumbing -------------------------------------------------------------------------------
    def _decoder(self, lit, need_tokenizer) -> ChunkDecoder:
        lit = self.use_lit if lit is None else lit
        if need_tokenizer and self._tok is None:
            self._tok = tokenizer_for(self.header, self.path, self._tokenizer_spec, self.device)
        inpainter = None
        if lit:
            if self._inpainter is None:
                self._inpainter, _ = inpainter_for(self.header, self._tok, self.path, True, self.device)
            inpainter = self._inpainter
        return ChunkDecoder(self._tok, inpainter)

    def close(self):
        self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"AtokFile({str(self.path)!r}, {self.width}x{self.height}, {self.frames} frames, "
                f"{len(self)} chunks, token rate {self.token_rate:.3f})")


def open(path, tokenizer: str | None = None, use_lit: bool = True, device: str = "cpu",  # noqa: A001
         limits: Limits = DEFAULT_LIMITS) -> AtokFile:
    """Open an .atok file for reading (see AtokFile); limits is the resource budget (container.Limits)."""
    return AtokFile(path, tokenizer, use_lit, device, limits)


class AtokDataset(torch.utils.data.Dataset):
    """The .atok files under a folder, one item per clip, read as latents (no pixels decoded).

    mode="dense": a (T, C, h, w) float32 tensor, dropped positions filled (fill="hold" or "lit").
    mode="sparse": a dict with "mask" (T, h, w) bool and "tokens" (kept, C) float32 in mask order.
    """

    def __init__(self, folder, mode: str = "dense", fill: str = "hold", tokenizer: str | None = None):
        if mode not in ("dense", "sparse") or fill not in ("hold", "lit"):
            raise ValueError("mode is 'dense' or 'sparse'; fill is 'hold' or 'lit'")
        self.files = sorted(Path(folder).rglob("*.atok"))
        self.mode, self.fill, self.tokenizer = mode, fill, tokenizer

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with AtokFile(self.files[i], self.tokenizer, use_lit=self.fill == "lit") as f:
            if self.mode == "dense":
                return f.dense()
            parts = [f.sparse(c) for c in range(len(f))]
            return {"mask": torch.cat([m for m, _ in parts]), "tokens": torch.cat([t for _, t in parts])}
