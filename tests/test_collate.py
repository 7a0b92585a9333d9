"""Batches of clips of different sizes and token counts (collate.pad_collate), and temporal crops."""
import pytest
import torch
from torch.utils.data import DataLoader

import adaptok_cli as atk
from adaptok_cli.format.collate import crop_frames
from conftest import noise_frames, static_frames, write_video


@pytest.fixture(scope="module")
def folder(tmp_path_factory, small_tok_path):
    d = tmp_path_factory.mktemp("clips")
    for name, frames in (("a", static_frames(13, 48, 64)), ("b", noise_frames(21, 64, 96)),
                         ("c", static_frames(9, 40, 56, seed=3))):
        write_video(d / f"{name}.mp4", frames)
        atk.compress(d / f"{name}.mp4", d / "atok" / f"{name}.atok", tokenizer=str(small_tok_path), chunk=2,
                     threshold=0.2)
    return d / "atok"


def test_dense_batches_pad_and_mark_what_is_real(folder, small_tok_path):
    ds = atk.AtokDataset(folder, "dense", tokenizer=str(small_tok_path))
    items = [ds[i] for i in range(len(ds))]
    assert len({it["latents"].shape for it in items}) == 3          # torch's default collate cannot stack these
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=atk.pad_collate)))
    t = max(it["latents"].shape[0] for it in items)
    h, w = max(it["latents"].shape[2] for it in items), max(it["latents"].shape[3] for it in items)
    assert batch["latents"].shape == (3, t, 16, h, w) and batch["valid"].shape == (3, t, h, w)
    for i, it in enumerate(items):
        z = it["latents"]
        torch.testing.assert_close(batch["latents"][i, :z.shape[0], :, :z.shape[2], :z.shape[3]], z)
        assert int(batch["valid"][i].sum()) == z.shape[0] * z.shape[2] * z.shape[3]
        assert not batch["latents"][i].permute(1, 0, 2, 3)[:, ~batch["valid"][i]].any()     # padding is zero
    assert batch["path"] == [it["path"] for it in items]


def test_sparse_batches_are_token_sequences_with_positions(folder):
    ds = atk.AtokDataset(folder, "sparse")
    items = [ds[i] for i in range(len(ds))]
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=atk.pad_collate)))
    n = max(len(it["tokens"]) for it in items)
    assert batch["tokens"].shape == (3, n, 16) and batch["attention_mask"].shape == (3, n)
    for i, it in enumerate(items):
        k = len(it["tokens"])
        assert int(batch["attention_mask"][i].sum()) == k == int(it["mask"].sum())
        torch.testing.assert_close(batch["tokens"][i, :k], it["tokens"])
        rebuilt = torch.zeros_like(it["mask"])
        t, y, x = batch["positions"][i, :k].T
        rebuilt[t, y, x] = True
        assert torch.equal(rebuilt, it["mask"]) and bool((batch["positions"][i, k:] == -1).all())


def test_temporal_crops_in_workers(folder):
    full = atk.AtokDataset(folder, "sparse")
    ds = atk.AtokDataset(folder, "sparse", crop=2)
    loader = DataLoader(ds, batch_size=2, collate_fn=atk.pad_collate, num_workers=2)
    seen = 0
    for batch in loader:
        for i, start in enumerate(batch["latent_start"]):
            whole = full[full.files.index(next(f for f in full.files if str(f) == batch["path"][i]))]
            want = crop_frames(whole, 2, start)
            k = int(batch["attention_mask"][i].sum())
            assert want["mask"].shape[0] == 2 and k == len(want["tokens"])
            torch.testing.assert_close(batch["tokens"][i, :k], want["tokens"])
            seen += 1
    assert seen == 3
    dense = atk.AtokDataset(folder, "dense", crop=100)[0]            # shorter than the crop: whole
    assert dense["latent_start"] == 0 and dense["latents"].shape[0] == full[0]["mask"].shape[0]
