"""Reading .atok files from Python: tokens without pixels, frames when wanted, all chunk by chunk.

    with adaptok_cli.open("clip.atok") as f:
        f.token_rate, f.chunk_token_rates        # from the header and index: nothing decompressed
        mask, tokens = f.sparse(0)               # chunk 0: (t, h, w) bool and (kept, C) float32
        z = f.dense(0, 2)                        # chunks 0-1 filled in: (T, C, h, w)
        for frames in f.iter_frames(): ...       # uint8 (n, H, W, 3) per chunk
        clip = f.read_frames(10, 20)             # frames 10..19

One default fill for the whole API: fill="hold" (each dropped position holds its last kept value:
exact, cheap, and needs no model). fill="lit" runs LIT as `adaptok decompress` does.

Latents are the VAE posterior's mean (latents="mean"). A file made with `compress --store-logvar`
also holds its log-variance, and latents="sample" draws mean + exp(logvar / 2) x noise instead (the
noise from `generator`, or torch's RNG); at dropped positions the log-variance holds its last kept
value, as the mean does with fill="hold".

Errors are AdaptokError subclasses (adaptok_cli.errors), plus IndexError / ValueError for chunk or
frame ranges out of bounds, as Python sequences raise them.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from adaptok_cli.core.codec import Decoder, hold_dense, kept_tokens, kept_values
from adaptok_cli.format.container import DEFAULT_LIMITS, AtokReader, Chunk, Header, Limits
from adaptok_cli.errors import CacheMismatchError, ContainerError, InputError
from adaptok_cli.models.matching import inpainter_for, tokenizer_for, unit_of
from adaptok_cli.measure.report import describe
from adaptok_cli.format.shards import find_member, members
from adaptok_cli.models.tokenizer import pick_device, spec_fingerprint

DATASET_FILLS = ("hold", "lit")
LAYOUTS = ("TCHW", "CTHW")      # dense latents: time first (adaptok's), or channels first (diffusers trainers')
ON_ERROR = ("raise", "skip")
LATENTS = ("mean", "sample")    # the posterior's mean, or a draw from it (files made with --store-logvar)
# what settings= may ask a cache to have been made with: header fields (unit: the rule's unit's name)
CACHE_SETTINGS = ("threshold", "keep_ratio", "keyframe_interval", "quant", "chunk", "unit", "max_side", "short_side")


def _check_fill(fill):
    if fill not in DATASET_FILLS:
        raise ValueError(f"fill must be 'hold' or 'lit', not {fill!r}")
    return fill


def _check_layout(layout):
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'TCHW' or 'CTHW', not {layout!r}")
    return layout


def _check_latents(latents):
    if latents not in LATENTS:
        raise ValueError(f"latents must be 'mean' or 'sample', not {latents!r}")
    return latents


def require_logvar(header: Header, name):
    """latents="sample" needs the posterior's log-variance: a file made without it is refused."""
    if header.logvar is None:
        raise CacheMismatchError(f"{name}: holds no log-variance (made without compress --store-logvar): "
                                 f"latents='sample' cannot draw from the posterior; use latents='mean'")


def _logvar_chunk(c: Chunk) -> Chunk:
    """A chunk whose values are its log-variances, so the hold fill spreads them as it does the mean."""
    return Chunk(c.index, c.mask, c.logvar, None)


def draw(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample of the posterior: mean + exp(logvar / 2) x standard normal noise (float32)."""
    noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32)
    return noise.mul_(logvar.mul(0.5).exp_()).add_(mean)


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
        self._tokenizer_spec = tokenizer
        self._tok = None

    @cached_property
    def info(self):
        """inspect()'s ContainerInfo of this file (header and index only), made on first use."""
        return describe(self._reader, self.path)

    # metadata -----------------------------------------------------------------------------
    width = property(lambda self: self.header.width)
    height = property(lambda self: self.header.height)
    frames = property(lambda self: self._reader.frames)
    fps = property(lambda self: float(self.header.fps))
    num_chunks = property(lambda self: self._reader.num_chunks)
    token_rate = property(lambda self: self._reader.tokens_kept / self._reader.tokens_total)
    chunk_token_rates = property(lambda self: [c.token_rate for c in self.info.chunks])

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(T, C, h, w) of the dense latents of the whole clip."""
        h = self.header
        return self._reader.latent_frames, h.channels, h.latent_height, h.latent_width

    @property
    def chunk_frames(self) -> list[tuple[int, int]]:
        """(first frame, frame count) of each chunk."""
        r = self._reader
        return [(r.first_frame(i), r.entry(i).frames) for i in range(r.num_chunks)]

    def metadata(self) -> dict:
        """What a training loop wants beside the tokens: path, size, fps, frames, token rate."""
        return {"path": str(self.path), "width": self.width, "height": self.height, "fps": self.fps,
                "frames": self.frames, "token_rate": self.token_rate}

    def __len__(self):
        return self.frames

    # tokens ---------------------------------------------------------------------------------
    def sparse(self, i: int, latents: str = "mean", generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk i as stored: mask (t, h, w) bool and kept tokens (kept, C) float32, dequantised,
        in the order of mask.nonzero() (time, then row, then column). IndexError outside 0..num_chunks-1.
        latents="sample": the tokens drawn from the posterior (a file with its log-variance)."""
        if _check_latents(latents) == "mean":
            (kept,) = self._reader.read_kept(self._chunk_index(i), i + 1)
            return torch.from_numpy(kept.mask), kept_tokens([kept])
        require_logvar(self.header, self.path)
        c = self._reader.read_chunk(self._chunk_index(i))
        return c.mask, draw(kept_values(c), c.logvar, generator).T.contiguous()

    @property
    def has_logvar(self) -> bool:
        """Whether the file holds the posterior's log-variance (compress --store-logvar, format 6)."""
        return self.header.logvar is not None

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

    def dense(self, start: int = 0, stop: int | None = None, fill: str | None = None, dtype=torch.float32,
              layout: str = "TCHW", norm=None, latents: str = "mean", generator: torch.Generator | None = None
              ) -> torch.Tensor:
        """Dense latents of chunks start..stop-1 joined in time: (T, C, h, w), or (C, T, h, w) with
        layout="CTHW"; in dtype; norm (a latent_norm.Normalisation) applied first, in float32.
        latents="sample": drawn from the posterior (module docstring), the noise from generator."""
        fill, layout = _check_fill(fill or self.fill), _check_layout(layout)
        stop = self._chunk_range(start, stop)
        if _check_latents(latents) == "sample":
            return self._dense_sample(start, stop, fill, dtype, layout, norm, generator)
        if fill == "hold":
            return self._dense_hold(start, stop, dtype, layout, norm)
        z = torch.cat(list(self.iter_dense(fill, start, stop)))
        z = norm(z, 1) if norm is not None else z
        return (z.transpose(0, 1) if layout == "CTHW" else z).to(dtype).contiguous()

    def _dense_hold(self, start, stop, dtype, layout, norm) -> torch.Tensor:
        """Hold-fill of chunks start..stop-1 in one gather (codec.hold_dense), their records read in one
        read (AtokReader.read_kept); the chunks before them stream through the hold state one by one."""
        r = self._reader
        return hold_dense((r.read_chunk(i) for i in range(start)), r.read_kept(start, stop), self.header.channels,
                          dtype, layout, norm)

    def _hold_frames(self, first: int, stop: int, dtype, layout, norm) -> torch.Tensor:
        """Hold-filled latent frames first..stop-1 of the clip (a dataset's crop), as dense() gives them
        and with every chunk read and checked as it reads them (a corrupt clip fails whatever the
        crop), but the chunks after frame stop-1 left out and only the frames asked for gathered."""
        r = self._reader
        kept = r.read_kept(0, r.num_chunks)
        last = r.chunk_holding(stop - 1)
        return hold_dense((), kept[:last + 1], self.header.channels, dtype, layout, norm, range(first, stop))

    def dense_logvar(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The posterior's log-variance of chunks start..stop-1, (T, C, h, w) float32: at dropped
        positions the last kept value (a hold fill, whatever fill the mean takes). A file made without
        --store-logvar: CacheMismatchError."""
        require_logvar(self.header, self.path)
        stop = self._chunk_range(start, stop)
        r = self._reader
        return self._hold_logvar((r.read_chunk(i) for i in range(start)), r.read_chunks(start, stop))

    def _hold_logvar(self, before, chunks: list) -> torch.Tensor:
        """Hold-filled log-variance of `chunks`: the chunks `before` them only move the hold state."""
        return hold_dense(map(_logvar_chunk, before), [_logvar_chunk(k) for k in chunks], self.header.channels)

    def _dense_sample(self, start, stop, fill, dtype, layout, norm, generator) -> torch.Tensor:
        """dense() of a draw from the posterior: the mean as dense() fills it, the log-variance
        hold-filled, both (T, C, h, w) float32; norm applies to the draw."""
        require_logvar(self.header, self.path)
        r = self._reader
        chunks = r.read_chunks(start, stop)
        before = [r.read_chunk(i) for i in range(start)]    # read once for both hold states (sparse: small)
        if fill == "hold":
            mean = hold_dense(before, chunks, self.header.channels)
        else:
            mean = self.dense(start, stop, fill)
        z = draw(mean, self._hold_logvar(before, chunks), generator)
        z = norm(z, 1) if norm is not None else z
        return (z.transpose(0, 1) if layout == "CTHW" else z).to(dtype).contiguous()

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
    def _chunk_range(self, start: int, stop: int | None) -> int:
        """stop (None: the last chunk's end) of a range of chunks; IndexError outside the file."""
        stop = self.num_chunks if stop is None else stop
        if not 0 <= start < stop <= self.num_chunks:
            raise IndexError(f"chunks {start}..{stop - 1} out of range: {self.path} has {self.num_chunks} chunks "
                             f"(0..{self.num_chunks - 1}), and start must be below stop")
        return stop

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
            inpainter, _ = inpainter_for(self._tok, h.threshold, h.lit, self.path, True, self.device,
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


class Items:
    """What both datasets do with one container: check it is the cache asked for, read it as an item.

    tokenizer: the tokeniser the cache must have been made with (checked by weights fingerprint, from
    the files alone, on every clip); settings: header settings it must have been made with (e.g.
    {"threshold": 0.15, "quant": "int8"}; keys CACHE_SETTINGS). A clip that fails either is refused
    with CacheMismatchError whatever on_error says: a stale cache is never silently used.
    on_error="skip": a corrupt or unreadable clip (ContainerError, InputError) is reported with a
    warning and its item is None (collate.pad_collate leaves it out) instead of raising.
    latents="sample": each item's latents drawn from the posterior (torch's RNG, as crop's start);
    a clip without the log-variance is refused with CacheMismatchError, as a stale cache is."""

    def __init__(self, mode="dense", fill="hold", tokenizer=None, crop=None, layout="TCHW", dtype=None,
                 normalize=False, settings=None, on_error="raise", latents="mean"):
        if mode not in ("dense", "sparse"):
            raise ValueError(f"mode must be 'dense' or 'sparse', not {mode!r}")
        if crop is not None and crop < 1:
            raise ValueError("crop must be at least 1 latent frame")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a torch floating-point dtype, not {dtype!r}")
        unknown = set(settings or {}) - set(CACHE_SETTINGS)
        if unknown:
            raise ValueError(f"settings may name {', '.join(CACHE_SETTINGS)}; not {', '.join(sorted(unknown))}")
        if normalize and tokenizer is None:
            raise ValueError("normalize=True needs tokenizer= (the tokeniser whose normalisation to apply)")
        self.mode, self.fill, self.crop, self.layout = mode, _check_fill(fill), crop, _check_layout(layout)
        self.dtype, self.normalize, self.on_error = dtype or torch.float32, normalize, on_error
        self.tokenizer, self.settings, self.latents = tokenizer, dict(settings or {}), _check_latents(latents)
        self.fingerprint = spec_fingerprint(tokenizer) if tokenizer is not None else None
        self._norm = None

    def check(self, header: Header, name):
        """Refuse a container made with another tokeniser or other settings than asked for (the header's
        map is copied only when settings are asked for: a deep copy per item cost 3% of a dense read)."""
        tok, raw = header.tokenizer, header.to_dict() if self.settings else {}
        if self.fingerprint is not None and tok.fingerprint != self.fingerprint:
            raise CacheMismatchError(f"{name}: made with tokeniser {tok.name!r} (fingerprint {tok.fingerprint}), "
                                     f"not {self.tokenizer} ({self.fingerprint}): a cache of another tokeniser")
        for key, want in self.settings.items():
            got = header.unit_name if key == "unit" else raw.get(key)
            if got != want:
                raise CacheMismatchError(f"{name}: made with {key} {got}, not {want}: a cache made with other settings")
        if self.latents == "sample":
            require_logvar(header, name)

    def norm(self, header: Header):
        if self.normalize and self._norm is None:
            from adaptok_cli.format.latent_norm import for_spec
            self._norm = for_spec(self.tokenizer, header.channels)
        return self._norm

    def read(self, path, name=None, error: Exception | None = None) -> dict | None:
        """The item of the container at path (a file, or a shard member's container.Section; named `name`
        in messages), or None (on_error="skip"). error: what a shard's reader found wrong with the clip."""
        with self._errors(path, name):
            if error is not None:
                raise error
            if isinstance(path, (str, Path)) and not Path(path).is_file():   # a FIFO named *.atok would block
                raise InputError(f"{path}: not a regular file")
            with AtokFile(path, self.tokenizer, fill=self.fill) as f:
                self.check(f.header, name or path)
                return dataset_item(f, self.mode, self.crop, self.dtype, self.layout, self.norm(f.header), self.latents)

    def bucket_key(self, path, name=None) -> tuple[int, int, int] | None:
        """(latent height, width, length) of a clip's items, from its header and index alone (None: a
        clip skipped with on_error="skip"); the clip is checked as read() checks it."""
        with self._errors(path, name):
            with AtokReader(path) as r:
                self.check(r.header, name or path)
                self.norm(r.header)
                h, t = r.header, r.latent_frames
                return h.latent_height, h.latent_width, min(t, self.crop or t)

    @contextmanager
    def _errors(self, path, name):
        """ContainerError / InputError: raised naming the clip, or (on_error="skip") a warning."""
        try:
            yield
        except (ContainerError, InputError) as e:
            if name is not None:
                e.args = (str(e).replace(str(path), str(name)),)
            if self.on_error == "raise":
                raise
            warnings.warn(f"adaptok: skipped a clip: {e}", RuntimeWarning, stacklevel=3)


class AtokDataset(torch.utils.data.Dataset):
    """The .atok files under a folder, one item per clip, read as latents (no pixels decoded).

    Each item is a dict with the clip's metadata ("path", "width", "height", "fps", "frames",
    "token_rate", "layout") and, for mode="dense", "latents": (T, C, h, w) (layout="CTHW": (C, T, h, w),
    as diffusers trainers take them) with dropped positions filled (fill="hold" or "lit"); for
    mode="sparse", "mask": (T, h, w) bool and "tokens": (kept, C) in mask order. Values are float32, or
    dtype=; normalize=True applies the tokeniser's own normalisation (latent_norm.py) and needs
    tokenizer=.

    crop=N gives N consecutive latent frames of each clip, from a random start (torch's RNG, so each
    DataLoader worker draws its own), and "latent_start"; a shorter clip is given whole. Batches of
    clips of different sizes: collate.pad_collate; batches without padding: collate.BucketBatchSampler.
    tokenizer=, settings=, on_error= and latents= ("mean", or "sample": drawn from the posterior of a
    cache made with --store-logvar) are Items'.
    """

    def __init__(self, folder, mode: str = "dense", fill: str = "hold", tokenizer: str | None = None,
                 crop: int | None = None, layout: str = "TCHW", dtype: torch.dtype | None = None,
                 normalize: bool = False, settings: dict | None = None, on_error: str = "raise",
                 latents: str = "mean"):
        self.items = Items(mode, fill, tokenizer, crop, layout, dtype, normalize, settings, on_error, latents)
        self.mode, self.fill, self.tokenizer, self.crop = mode, fill, tokenizer, crop
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
        self.files = sorted(f for f in folder.rglob("*.atok") if f.is_file())
        if not self.files:
            raise InputError(f"{folder}: no .atok files in it")
        if tokenizer is not None or settings or latents == "sample":
            self.items.bucket_key(self.files[0])      # a cache of another tokeniser fails here, not in training

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.items.read(self.files[i])

    def bucket_keys(self) -> list:
        """(latent height, width, length) of every clip's items, from headers alone (BucketBatchSampler)."""
        return [self.items.bucket_key(f) for f in self.files]


def dataset_item(f: AtokFile, mode: str, crop: int | None = None, dtype=torch.float32, layout: str = "TCHW",
                 norm=None, latents: str = "mean") -> dict:
    """One clip as the datasets give it: metadata plus dense latents or sparse mask + tokens, optionally
    crop latent frames from a random start (torch's RNG); latents="sample" draws them from the posterior
    (torch's RNG too)."""
    item = f.metadata()
    item["layout"] = layout
    if crop is not None and latents == "mean" and (mode == "sparse" or f.fill == "hold"):
        return _crop_item(f, item, mode, crop, dtype, layout, norm)
    if mode == "dense":
        item["latents"] = f.dense(dtype=dtype, layout=layout, norm=norm, latents=latents)
    else:
        item["mask"], tokens = _sparse_item(f._reader, latents)
        item["tokens"] = _item_tokens(tokens, dtype, norm)
    if crop is None:
        return item
    from adaptok_cli.format.collate import crop_frames
    return crop_frames(item, crop, _crop_start(f, crop))


def _crop_start(f: AtokFile, crop: int) -> int:
    """A crop's first latent frame, drawn from torch's RNG (each DataLoader worker draws its own)."""
    return int(torch.randint(0, max(1, f.latent_shape[0] - crop + 1), ()))


def _item_tokens(tokens: torch.Tensor, dtype, norm) -> torch.Tensor:
    """A sparse item's (kept, C) tokens normalised (norm, in float32) and cast to dtype."""
    return (norm(tokens, 1) if norm is not None else tokens).to(dtype)


def _crop_item(f: AtokFile, item: dict, mode: str, crop: int, dtype, layout: str, norm) -> dict:
    """item with the crop that collate.crop_frames would cut from the whole clip (the same start from
    torch's RNG, the same values), made from the crop's frames alone: the dense gather or the sparse
    tokens of the frames outside it are never built."""
    start = _crop_start(f, crop)
    stop = min(f.latent_shape[0], start + crop)
    if mode == "dense":
        item["latents"] = f._hold_frames(start, stop, dtype, layout, norm)
    else:
        item["mask"], tokens = _sparse_frames(f._reader, start, stop)
        item["tokens"] = _item_tokens(tokens, dtype, norm)
    item["latent_start"] = start
    return item


def _sparse_frames(r: AtokReader, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent frames start..stop-1 of the clip as _sparse_item gives them (mask (t, h, w), tokens
    (kept, C) float32), every chunk read and checked, only the tokens of the chunks they cross made."""
    kept = r.read_kept(0, r.num_chunks)
    mask = np.concatenate([k.mask for k in kept])
    first, last = r.chunk_holding(start), r.chunk_holding(stop - 1)
    skip, n = int(mask[r.first_latent(first):start].sum()), int(mask[start:stop].sum())
    return torch.from_numpy(mask)[start:stop], kept_tokens(kept[first:last + 1])[skip:skip + n]


def _sparse_item(r: AtokReader, latents: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole clip's mask (T, h, w) and kept tokens (kept, C) float32, as sparse() gives each chunk,
    its records read in one read; the mean straight from numpy arrays (read_kept, kept_tokens)."""
    if latents == "mean":
        kept = r.read_kept(0, r.num_chunks)
        return torch.from_numpy(np.concatenate([k.mask for k in kept])), kept_tokens(kept)
    chunks = r.read_chunks(0, r.num_chunks)
    return torch.cat([c.mask for c in chunks]), torch.cat([draw(kept_values(c), c.logvar).T for c in chunks])


class ShardDataset(torch.utils.data.IterableDataset):
    """Clips streamed from shards (shards.py), as AtokDataset items (plus "key"), for a DataLoader.

    Shards are split across ranks (rank/world, default torch.distributed's when it is initialised),
    then across DataLoader workers; shuffle=N keeps a buffer of N items and yields them in random
    order (seeded by seed, rank and worker). tokenizer=, layout=, dtype=, normalize=, settings=,
    on_error= and latents= as for AtokDataset; a skipped clip is left out of the stream. Batches without
    padding: collate.Bucketed."""

    def __init__(self, shards, mode: str = "sparse", fill: str = "hold", crop: int | None = None,
                 shuffle: int = 0, seed: int = 0, rank: int | None = None, world: int | None = None,
                 tokenizer: str | None = None, layout: str = "TCHW", dtype: torch.dtype | None = None,
                 normalize: bool = False, settings: dict | None = None, on_error: str = "raise",
                 latents: str = "mean"):
        self.items = Items(mode, fill, tokenizer, crop, layout, dtype, normalize, settings, on_error, latents)
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

    def _members(self, shard):
        """A shard's clips (shards.Member, read in place); a shard that stops being a tar is one skipped
        clip with on_error="skip"."""
        try:
            yield from members(shard)
        except (ContainerError, InputError) as e:
            if self.items.on_error == "raise":
                raise
            warnings.warn(f"adaptok: skipped the rest of a shard: {e}", RuntimeWarning, stacklevel=2)

    def _items(self):
        for shard in self._mine():
            for m in self._members(shard):
                item = self.items.read(m.atok, m.name, m.error)
                if item is not None:
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
