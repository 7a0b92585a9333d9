"""Batches of clips that differ in size, length and token count, for a torch DataLoader.

    loader = DataLoader(AtokDataset("latents", mode="sparse", crop=8), batch_size=4, collate_fn=pad_collate)

Dense items ("latents" (T, C, h, w)) are zero-padded to the batch's largest T, h and w, with "valid"
(B, T, h, w) marking the real positions. Sparse items ("mask" (T, h, w), "tokens" (kept, C)) become
padded token sequences, as a transformer takes them: "tokens" (B, N, C), "attention_mask" (B, N) and
"positions" (B, N, 3), the (t, y, x) of each token (-1 where padded). Everything else (paths, sizes,
rates) becomes a list per key.
"""
from __future__ import annotations

import torch

ARRAYS = ("latents", "mask", "tokens")


def crop_frames(item: dict, length: int, start: int) -> dict:
    """The latent frames start .. start+length of an AtokDataset item (dense or sparse)."""
    out = dict(item)
    if "latents" in item:
        out["latents"] = item["latents"][start:start + length]
    if "mask" in item:
        mask = item["mask"]
        first = int(mask[:start].sum())
        out["mask"] = mask[start:start + length]
        out["tokens"] = item["tokens"][first:first + int(out["mask"].sum())]
    out["latent_start"] = start
    return out


def pad_collate(items: list[dict]) -> dict:
    """A list of AtokDataset items -> one padded batch (see the module docstring)."""
    batch = {k: [it[k] for it in items] for k in items[0] if k not in ARRAYS}
    if "latents" in items[0]:
        batch["latents"], batch["valid"] = _pad_dense([it["latents"] for it in items])
    if "mask" in items[0]:
        batch["tokens"], batch["attention_mask"], batch["positions"] = _pad_sparse(items)
    return batch


def _pad_dense(latents: list[torch.Tensor]):
    t, c = max(z.shape[0] for z in latents), latents[0].shape[1]
    h, w = max(z.shape[2] for z in latents), max(z.shape[3] for z in latents)
    out = latents[0].new_zeros(len(latents), t, c, h, w)
    valid = torch.zeros(len(latents), t, h, w, dtype=torch.bool)
    for i, z in enumerate(latents):
        out[i, :z.shape[0], :, :z.shape[2], :z.shape[3]] = z
        valid[i, :z.shape[0], :z.shape[2], :z.shape[3]] = True
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
