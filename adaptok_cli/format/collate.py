"""Batches of clips that differ in size, length and token count, for a torch DataLoader.

    loader = DataLoader(AtokDataset("latents", mode="sparse", crop=8), batch_size=4, collate_fn=pad_collate)

Dense items ("latents" (T, C, h, w), or (C, T, h, w) for layout "CTHW") are zero-padded to the batch's
largest T, h and w, with "valid" (B, T, h, w) marking the real positions. Sparse items ("mask" (T, h, w),
"tokens" (kept, C)) become padded token sequences, as a transformer takes them: "tokens" (B, N, C),
"attention_mask" (B, N) and "positions" (B, N, 3), the (t, y, x) of each token (-1 where padded).
Everything else (paths, sizes, rates) becomes a list per key. Items that are None (a clip skipped with
on_error="skip") are left out.

Batches that need no padding: BucketBatchSampler (map-style datasets: clips grouped by latent height,
width and length, from their headers) and Bucketed (streams such as ShardDataset: grouped in a buffer).
"""
from __future__ import annotations

from collections import defaultdict

import torch

ARRAYS = ("latents", "mask", "tokens")


def _time_dim(item: dict) -> int:
    return 1 if item.get("layout") == "CTHW" else 0


def crop_frames(item: dict, length: int, start: int) -> dict:
    """The latent frames start .. start+length of an AtokDataset item (dense or sparse)."""
    out = dict(item)
    if "latents" in item:
        frames = (slice(None),) * _time_dim(item) + (slice(start, start + length),)
        out["latents"] = item["latents"][frames].contiguous()
    if "mask" in item:
        mask = item["mask"]
        first = int(mask[:start].sum())
        out["mask"] = mask[start:start + length]
        out["tokens"] = item["tokens"][first:first + int(out["mask"].sum())]
    out["latent_start"] = start
    return out


def pad_collate(items: list[dict | None]) -> dict | None:
    """A list of AtokDataset items -> one padded batch (see the module docstring); None if every item is."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    batch = {k: [it[k] for it in items] for k in items[0] if k not in ARRAYS}
    if "latents" in items[0]:
        batch["latents"], batch["valid"] = _pad_dense([it["latents"] for it in items], _time_dim(items[0]))
    if "mask" in items[0]:
        batch["tokens"], batch["attention_mask"], batch["positions"] = _pad_sparse(items)
    return batch


def _pad_dense(latents: list[torch.Tensor], time_dim: int):
    """Zero-padded (B, *item shape) and valid (B, T, h, w); time_dim 1: items are (C, T, h, w)."""
    shape = [max(z.shape[d] for z in latents) for d in range(4)]
    out = latents[0].new_zeros(len(latents), *shape)
    t_h_w = [d for d in range(4) if d != 1 - time_dim]          # the dims that are not channels
    valid = torch.zeros(len(latents), *(shape[d] for d in t_h_w), dtype=torch.bool)
    for i, z in enumerate(latents):
        out[(i, *(slice(0, n) for n in z.shape))] = z
        valid[(i, *(slice(0, z.shape[d]) for d in t_h_w))] = True
    return out, valid


def _pad_sparse(items: list[dict]):
    n, c = max(len(it["tokens"]) for it in items), items[0]["tokens"].shape[1]
    tokens = items[0]["tokens"].new_zeros(len(items), n, c)
    attention = torch.zeros(len(items), n, dtype=torch.bool)
    positions = torch.full((len(items), n, 3), -1, dtype=torch.long)
    for i, it in enumerate(items):
        k = len(it["tokens"])
        tokens[i, :k], attention[i, :k] = it["tokens"], True
        positions[i, :k] = it["mask"].nonzero()          # row-major: the order tokens are stored in
    return tokens, attention, positions


def item_key(item: dict) -> tuple[int, int, int]:
    """(latent height, width, length) of an item: what must agree for a batch without padding."""
    if "mask" in item:
        t, h, w = item["mask"].shape
    else:
        z = item["latents"]
        t, h, w = z.shape[_time_dim(item)], z.shape[2], z.shape[3]
    return h, w, t


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of indices whose clips share latent height, width and length, so a dense batch needs no
    padding: DataLoader(ds, batch_sampler=BucketBatchSampler(ds, 8, seed=0), collate_fn=pad_collate).

    keys: a dataset with bucket_keys() (AtokDataset: read from headers, nothing decoded) or one key per
    index (None: left out). Each epoch shuffles within buckets and then the order of batches, from
    seed and the epoch (set_epoch), so every rank and restart draws the same batches; shuffle=False
    keeps index order. rank/world: each rank takes every world-th batch. A bucket's last batch may be
    short unless drop_last."""

    def __init__(self, keys, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world: int = 1):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not 0 <= rank < world:
            raise ValueError("rank must be in 0..world-1")
        keys = keys.bucket_keys() if hasattr(keys, "bucket_keys") else list(keys)
        self.buckets = defaultdict(list)
        for i, k in enumerate(keys):
            if k is not None:
                self.buckets[tuple(k)].append(i)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        batches = []
        for key in sorted(self.buckets):
            idx = self.buckets[key]
            if self.shuffle:
                idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            for a in range(0, len(idx), self.batch_size):
                if len(idx) - a >= self.batch_size or not self.drop_last:
                    batches.append(idx[a:a + self.batch_size])
        if self.shuffle:
            batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        return batches[self.rank::self.world]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self):
        return len(self._batches())


class Bucketed(torch.utils.data.IterableDataset):
    """A stream of items (ShardDataset) as batches without padding: DataLoader(Bucketed(ds, 8), batch_size=None).

    Items are held in one bucket per (latent height, width, length); a bucket that reaches batch_size
    is collated and yielded. buffer bounds the items held: when it is full, the fullest bucket goes
    out as a short batch. At the end, what is left goes out in short batches (or not, drop_last). Runs
    inside each DataLoader worker on that worker's share of the stream; deterministic for a given
    stream order (ShardDataset's shuffle is seeded)."""

    def __init__(self, dataset, batch_size: int, buffer: int = 256, drop_last: bool = False, collate_fn=pad_collate):
        if batch_size < 1 or buffer < batch_size:
            raise ValueError("batch_size must be at least 1 and buffer at least batch_size")
        self.dataset, self.batch_size, self.buffer = dataset, batch_size, buffer
        self.drop_last, self.collate_fn = drop_last, collate_fn

    def __iter__(self):
        buckets, held = {}, 0
        for item in self.dataset:
            if item is None:
                continue
            bucket = buckets.setdefault(item_key(item), [])
            bucket.append(item)
            held += 1
            if len(bucket) == self.batch_size:
                held -= len(bucket)
                yield self.collate_fn(buckets.pop(item_key(item)))
            elif held >= self.buffer:
                key = max(buckets, key=lambda k: len(buckets[k]))
                held -= len(buckets[key])
                yield self.collate_fn(buckets.pop(key))
        for key in list(buckets):
            if not self.drop_last:
                yield self.collate_fn(buckets.pop(key))
