"""Reading .atok files from Python: tokens without pixels, frames when wanted, all chunk by chunk.

    with adaptok_cli.open("clip.atok") as f:
        f.token_rate, f.chunk_token_rates        # from the header and index: nothing decompressed
        mask, tokens = f.sparse(0)               # chunk 0: (t, h, w) bool and (kept, C) float32
        z = f.dense(0, 2)                        # chunks 0-1 filled in: (T, C, h, w)
        for frames in f.iter_frames(): ...       # uint8 (n, H, W, 3) per chunk
        clip = f.read_frames(10, 20)             # frames 10..19

One default fill for the whole API: fill="hold" (each dropped position holds its last kept value:
exact, cheap, and needs no model). fill="lit" runs LIT as `adaptok decompress` does.

Errors are AdaptokError subclasses (adaptok_cli.errors), plus IndexError / ValueError for chunk or
frame ranges out of bounds, as Python sequences raise them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .codec import Decoder
from .container import DEFAULT_LIMITS, AtokReader, Limits
from .errors import InputError
from .masking import dequantise
from .models import inpainter_for, tokenizer_for, unit_of
from .report import describe
from .shards import find_member, members
from .tokenizer import pick_device

FILLS = ("hold", "lit")


def _check_fill(fill):
    if fill not in FILLS:
        raise ValueError(f"fill must be 'hold' or 'lit', not {fill!r}")
    return fill


class AtokFile:
    """An open .atok container. Models (tokeniser, LIT) are loaded only when first needed.

    len(f) is the number of video frames; f.num_chunks the number of chunk records."""

    def __init__(self, path, tokenizer: str | None = None, fill: str = "hold", device: str = "cpu",
                 limits: Limits = DEFAULT_LIMITS):
        self.fill = _check_fill(fill)
        self.device = pick_device(device)
        self._reader = AtokReader(path, limits=limits)     # a path, or a container.Section (a shard member)
        self.path = self._reader.path
        self.header = self._reader.header
        self.info = describe(self._reader, self.path)
        self._tokenizer_spec = tokenizer
        self._tok = None

    # metadata -----------------------------------------------------------------------------
    width = property(lambda self: self.header["width"])
    height = property(lambda self: self.header["height"])
    frames = property(lambda self: self._reader.frames)
    fps = property(lambda self: self.header["fps_num"] / self.header["fps_den"])
    num_chunks = property(lambda self: len(self._reader.chunks))
    token_rate = property(lambda self: self.info.token_rate)
    chunk_token_rates = property(lambda self: [c.token_rate for c in self.info.chunks])

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(T, C, h, w) of the dense latents of the whole clip."""
        return tuple(self.info.latent_shape)

    @property
    def chunk_frames(self) -> list[tuple[int, int]]:
        """(first frame, frame count) of each chunk."""
        return [(c.first_frame, c.frames) for c in self.info.chunks]

    def metadata(self) -> dict:
        """What a training loop wants beside the tokens: path, size, fps, frames, token rate."""
        return {"path": str(self.path), "width": self.width, "height": self.height, "fps": self.fps,
                "frames": self.frames, "token_rate": self.token_rate}

    def __len__(self):
        return self.frames

    # tokens ---------------------------------------------------------------------------------
    def sparse(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk i as stored: mask (t, h, w) bool and kept tokens (kept, C) float32, dequantised,
        in the order of mask.nonzero() (time, then row, then column). IndexError outside 0..num_chunks-1."""
        c = self._reader.read_chunk(self._chunk_index(i))
        return c.mask, dequantise(c.codes, c.qscale).T.contiguous()

    def iter_dense(self, fill: str | None = None, start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
        """Dense latents (t, C, h, w) of chunks start..stop-1, dropped positions filled.

        Chunks before `start` only update the hold state (their values are scattered, nothing else
        runs); with fill="lit", LIT also runs on chunk start-1 to give chunk `start` its context."""
        fill = _check_fill(fill or self.fill)
        stop = self.num_chunks if stop is None else stop
        dec = self._decoder(fill) if fill == "lit" else Decoder(None)
        for i in range(stop):
            chunk = self._reader.read_chunk(i)
            if i < (start if fill == "hold" else start - 1):
                dec.skip(chunk)
                continue
            z = dec.dense(chunk)
            if i >= start:
                yield z

    def dense(self, start: int = 0, stop: int | None = None, fill: str | None = None) -> torch.Tensor:
        """Dense latents of chunks start..stop-1 joined in time: (T, C, h, w)."""
        stop = self.num_chunks if stop is None else stop
        if not 0 <= start < stop <= self.num_chunks:
            raise IndexError(f"chunks {start}..{stop - 1} out of range: {self.path} has {self.num_chunks} chunks "
                             f"(0..{self.num_chunks - 1}), and start must be below stop")
        return torch.cat(list(self.iter_dense(fill, start, stop)))

    def iter_frames(self, fill: str | None = None) -> Iterator[np.ndarray]:
        """Decoded frames per chunk: uint8 (n, H, W, 3); the clip's frame count is restored exactly."""
        yield from self._frames(fill, self.num_chunks)

    def read_frames(self, start: int, stop: int, fill: str | None = None) -> np.ndarray:
        """Frames start..stop-1 as uint8 (stop - start, H, W, 3).

        The built-in tokeniser decodes causally (each group carries the previous one's features), so
        exact frames need every chunk from the first up to the one holding stop-1 decoded: the cost
        is that of decoding frames 0..stop-1, never more."""
        if not 0 <= start < stop <= self.frames:
            raise IndexError(f"frames {start}..{stop - 1} out of range: {self.path} has {self.frames} frames")
        last = next(i for i, (first, n) in enumerate(self.chunk_frames) if first + n >= stop)
        out, done = [], 0
        for frames in self._frames(fill, last + 1):
            lo, hi = max(start - done, 0), min(stop - done, len(frames))
            if lo < hi:
                out.append(frames[lo:hi])
            done += len(frames)
        return np.concatenate(out)

    # plumbing -------------------------------------------------------------------------------
    def _chunk_index(self, i: int) -> int:
        if not 0 <= i < self.num_chunks:
            raise IndexError(f"chunk {i} out of range: {self.path} has {self.num_chunks} chunks (0..{self.num_chunks - 1})")
        return i

    def _frames(self, fill, n_chunks) -> Iterator[np.ndarray]:
        dec = self._decoder(_check_fill(fill or self.fill), need_tokenizer=True)
        r = self._reader
        for i in range(n_chunks):
            groups = dec.decode_chunk(r.read_chunk(i), r.entry(i).frames, self.height, self.width)
            yield np.concatenate([frames for _, frames in groups])

    def _decoder(self, fill, need_tokenizer=None) -> Decoder:
        if (need_tokenizer or fill == "lit") and self._tok is None:
            self._tok = tokenizer_for(self.header, self.path, self._tokenizer_spec, self.device)
        inpainter = None
        if fill == "lit":   # a new one each pass: LIT carries the previous chunk's frames as state
            h = self.header
            inpainter, _ = inpainter_for(self._tok, h.get("threshold"), h.get("lit"), self.path, True, self.device,
                                         unit_of(h))
        return Decoder(self._tok, inpainter)

    def close(self):
        self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"AtokFile({str(self.path)!r}, {self.width}x{self.height}, {self.frames} frames, "
                f"{self.num_chunks} chunks, token rate {self.token_rate:.3f})")


def open(path, tokenizer: str | None = None, fill: str = "hold", device: str = "cpu",  # noqa: A001
         limits: Limits = DEFAULT_LIMITS, member: str | None = None) -> AtokFile:
    """Open an .atok file for reading (see AtokFile); limits is the resource budget (container.Limits).
    With member=KEY, path is a shard (shards.py) and the clip KEY in it is opened, read in place."""
    if member is not None:
        path = find_member(path, member, limits)
    return AtokFile(path, tokenizer, fill, device, limits)


class AtokDataset(torch.utils.data.Dataset):
    """The .atok files under a folder, one item per clip, read as latents (no pixels decoded).

    Each item is a dict with the clip's metadata ("path", "width", "height", "fps", "frames",
    "token_rate") and, for mode="dense", "latents": (T, C, h, w) float32 with dropped positions
    filled (fill="hold" or "lit"); for mode="sparse", "mask": (T, h, w) bool and "tokens": (kept, C)
    float32 in mask order.

    crop=N gives N consecutive latent frames of each clip, from a random start (torch's RNG, so each
    DataLoader worker draws its own), and "latent_start"; a shorter clip is given whole. Batches of
    clips of different sizes: collate.pad_collate.
    """

    def __init__(self, folder, mode: str = "dense", fill: str = "hold", tokenizer: str | None = None,
                 crop: int | None = None):
        if mode not in ("dense", "sparse"):
            raise ValueError(f"mode must be 'dense' or 'sparse', not {mode!r}")
        if crop is not None and crop < 1:
            raise ValueError("crop must be at least 1 latent frame")
        self.mode, self.fill, self.tokenizer, self.crop = mode, _check_fill(fill), tokenizer, crop
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
        self.files = sorted(folder.rglob("*.atok"))
        if not self.files:
            raise InputError(f"{folder}: no .atok files in it")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with AtokFile(self.files[i], self.tokenizer, fill=self.fill) as f:
            return dataset_item(f, self.mode, self.crop)


def dataset_item(f: AtokFile, mode: str, crop: int | None = None) -> dict:
    """One clip as the datasets give it: metadata plus dense latents or sparse mask + tokens, optionally
    crop latent frames from a random start (torch's RNG)."""
    item = f.metadata()
    if mode == "dense":
        item["latents"] = f.dense()
    else:
        parts = [f.sparse(c) for c in range(f.num_chunks)]
        item["mask"] = torch.cat([m for m, _ in parts])
        item["tokens"] = torch.cat([t for _, t in parts])
    if crop is None:
        return item
    from .collate import crop_frames
    t = len(item["latents"] if mode == "dense" else item["mask"])
    start = int(torch.randint(0, max(1, t - crop + 1), ()))
    return crop_frames(item, crop, start)


class ShardDataset(torch.utils.data.IterableDataset):
    """Clips streamed from shards (shards.py), as AtokDataset items (plus "key"), for a DataLoader.

    Shards are split across ranks (rank/world, default torch.distributed's when it is initialised),
    then across DataLoader workers; shuffle=N keeps a buffer of N items and yields them in random
    order (seeded by seed, rank and worker)."""

    def __init__(self, shards, mode: str = "sparse", fill: str = "hold", crop: int | None = None,
                 shuffle: int = 0, seed: int = 0, rank: int | None = None, world: int | None = None):
        if isinstance(shards, (str, Path)) and Path(shards).is_dir():
            shards = sorted(Path(shards).glob("shard-*.tar"))
        self.shards = [Path(s) for s in ([shards] if isinstance(shards, (str, Path)) else shards)]
        if not self.shards:
            raise InputError("no shards given")
        if rank is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.rank, self.world = rank or 0, world or 1
        self.mode, self.fill, self.crop, self.shuffle, self.seed = mode, fill, crop, shuffle, seed

    def _mine(self) -> list[Path]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        return self.shards[self.rank::self.world][wid::nw]

    def _items(self):
        for shard in self._mine():
            for m in members(shard):
                if m.error is not None:
                    raise m.error
                with AtokFile(m.atok, fill=self.fill) as f:
                    item = dataset_item(f, self.mode, self.crop)
                item.update(key=m.key, path=m.name)
                yield item

    def __iter__(self):
        if not self.shuffle:
            yield from self._items()
            return
        info = torch.utils.data.get_worker_info()
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.rank * 1009 + (info.id if info else 0))
        buf = []
        for item in self._items():
            buf.append(item)
            if len(buf) >= self.shuffle:
                yield buf.pop(int(torch.randint(len(buf), (), generator=g)))
        while buf:
            yield buf.pop(int(torch.randint(len(buf), (), generator=g)))
