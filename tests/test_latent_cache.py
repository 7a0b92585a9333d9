"""adaptok as a training loop's latent cache: the fast hold-fill path, trainer layout, dtype and the VAE's
own normalisation, bucketed batches without padding, corrupt files that do not stop a DataLoader, caches
of another tokeniser or other settings refused, and `verify --jobs` over a cache."""
import gc
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader

import adaptok_cli as atk
from adaptok_cli.format.atokfile import ShardDataset
from adaptok_cli.format.collate import BucketBatchSampler, Bucketed, item_key
from adaptok_cli.errors import CacheMismatchError, ContainerError, ModelUnavailableError
from adaptok_cli.format.latent_norm import for_spec, from_config
from adaptok_cli.format.shards import write_shard
from adaptok_cli.models.tinytok import TinyTok, TinyTokConfig
from adaptok_cli.models.tokenizer import save_tinytok
from conftest import noise_frames, static_frames, write_video
from test_cli import one_line_error, run
from waiting import HANG_GUARD

# (name, frames, height, width, quant): a and b share a bucket; 854x480 is what users cache
CLIPS = [("a", 9, 480, 854, "int8"), ("b", 9, 480, 854, "fp16"), ("c", 13, 480, 854, "int8"), ("d", 9, 360, 640, "int8")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, small_tok_path):
    d = tmp_path_factory.mktemp("cache")
    for i, (name, t, h, w, quant) in enumerate(CLIPS):
        src = write_video(d / f"{name}.mp4", (noise_frames if name == "b" else static_frames)(t, h, w, seed=i))
        atk.compress(src, d / "atok" / f"{name}.atok", tokenizer=str(small_tok_path), chunk=2, threshold=0.2,
                     quant=quant)
    return d / "atok"


def naive_hold(path) -> torch.Tensor:
    """The hold rule written out frame by frame: each dropped position keeps its last kept value."""
    with atk.open(path) as f:
        frames, held = [], None
        for i in range(f.num_chunks):
            mask, tokens = f.sparse(i)
            at = 0
            for m in mask:
                frame = torch.zeros(tokens.shape[1], *m.shape) if held is None else held.clone()
                n = int(m.sum())
                frame[:, m] = tokens[at:at + n].T
                at += n
                frames.append(frame)
                held = frame
        return torch.stack(frames)


def test_fast_hold_fill_is_the_hold_rule_exactly(cache, small_tok_path):
    scale = for_spec(str(small_tok_path), 16).gain
    for name, *_ in CLIPS:
        want = naive_hold(cache / f"{name}.atok")
        with atk.open(cache / f"{name}.atok") as f:
            assert torch.equal(f.dense(), want) and torch.equal(torch.cat(list(f.iter_dense())), want)
            first = int(f._reader.latent_starts[1])
            assert torch.equal(f.dense(1), want[first:])                  # from the hold state of chunk 0
            assert torch.equal(f.dense(layout="CTHW"), want.transpose(0, 1))
            assert torch.equal(f.dense(dtype=torch.bfloat16), want.to(torch.bfloat16))
            norm = f.dense(norm=for_spec(str(small_tok_path), 16), layout="CTHW")
            assert torch.equal(norm, (want * scale.view(1, -1, 1, 1)).transpose(0, 1))


def test_items_in_trainer_layout_dtype_and_normalisation(cache, small_tok_path):
    spec = str(small_tok_path)
    ds = atk.AtokDataset(cache, tokenizer=spec, layout="CTHW", dtype=torch.bfloat16, normalize=True)
    item = ds[0]
    want = naive_hold(cache / "a.atok") * for_spec(spec, 16).gain.view(1, -1, 1, 1)
    assert item["latents"].shape == (16, 3, 60, 107) and item["latents"].dtype == torch.bfloat16
    assert torch.equal(item["latents"], want.transpose(0, 1).to(torch.bfloat16)) and item["layout"] == "CTHW"
    sparse = atk.AtokDataset(cache, "sparse", tokenizer=spec, normalize=True)[0]
    with atk.open(cache / "a.atok") as f:
        tokens = torch.cat([f.sparse(i)[1] for i in range(f.num_chunks)])
    assert torch.equal(sparse["tokens"], tokens * for_spec(spec, 16).gain)
    crop = atk.AtokDataset(cache, layout="CTHW", crop=2)[2]                  # c: 4 latent frames
    s = crop["latent_start"]
    assert crop["latents"].shape == (16, 2, 60, 107)
    assert torch.equal(crop["latents"], naive_hold(cache / "c.atok")[s:s + 2].transpose(0, 1))
    batch = atk.pad_collate([atk.AtokDataset(cache, layout="CTHW")[i] for i in (2, 3)])   # 854x480 and 640x360
    assert batch["latents"].shape == (2, 16, 4, 60, 107) and batch["valid"].shape == (2, 4, 60, 107)
    assert int(batch["valid"][1].sum()) == 3 * 45 * 80
    with pytest.raises(ValueError, match="tokenizer="):
        atk.AtokDataset(cache, normalize=True)
    with pytest.raises(ValueError, match="layout"):
        atk.AtokDataset(cache, layout="THWC")
    with pytest.raises(ValueError, match="dtype"):
        atk.AtokDataset(cache, dtype=torch.int8)


def test_normalisation_from_diffusers_configs_is_validated(tmp_path):
    wan = {"latents_mean": [0.5, -1.0], "latents_std": [2.0, 4.0]}
    n = from_config(wan, 2, "wan")
    z = torch.tensor([[1.5], [3.0]])
    assert torch.equal(n(z), torch.tensor([[0.5], [1.0]]))                      # (z - mean) / std
    mochi = {**wan, "scaling_factor": 2.0}
    assert torch.equal(from_config(mochi, 2, "mochi")(z), torch.tensor([[1.0], [2.0]]))
    hunyuan = {"scaling_factor": 0.5, "shift_factor": 1.0}
    assert torch.equal(from_config(hunyuan, 2, "h")(z), torch.tensor([[0.25], [1.0]]))   # (z - shift) * sf
    for bad, what in (({"latents_mean": [0.0], "latents_std": [1.0, 1.0]}, "latents_mean"),
                      ({"latents_mean": [0.0, float("nan")], "latents_std": [1.0, 1.0]}, "latents_mean"),
                      ({"latents_mean": [0.0, 0.0], "latents_std": [1.0, 0.0]}, "latents_std"),
                      ({"latents_mean": [0.0, 0.0], "latents_std": [1.0, True]}, "latents_std"),
                      ({"latents_mean": [0.0, 0.0]}, "latents_std"),
                      ({"scaling_factor": -1.0}, "scaling_factor"), ({"scaling_factor": "2"}, "scaling_factor"),
                      ({}, "no latents_mean")):
        with pytest.raises(ModelUnavailableError, match=what):
            from_config(bad, 2, "cfg")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ltx = diffusers.AutoencoderKLLTXVideo(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                          layers_per_block=(1, 1, 1, 1, 1), decoder_block_out_channels=(8, 8, 8, 8),
                                          decoder_layers_per_block=(1, 1, 1, 1, 1), scaling_factor=0.5)
    ltx.latents_mean.copy_(torch.arange(4.0))
    ltx.latents_std.copy_(torch.full((4,), 2.0))
    ltx.save_pretrained(tmp_path / "ltx", safe_serialization=True)
    n = for_spec(str(tmp_path / "ltx"), 4)                       # LTX keeps them as weights, not in its config
    assert torch.equal(n.shift, torch.arange(4.0)) and torch.equal(n.gain, torch.full((4,), 0.25))
    with pytest.raises(ModelUnavailableError, match="not 8 numbers|8 numbers"):
        for_spec(str(tmp_path / "ltx"), 8)


def test_buckets_batch_without_padding_deterministically(cache):
    ds = atk.AtokDataset(cache)
    keys = ds.bucket_keys()
    assert keys == [item_key(ds[i]) for i in range(len(ds))]                    # headers say what items hold
    assert atk.AtokDataset(cache, crop=3).bucket_keys()[2] == (60, 107, 3)
    sampler = BucketBatchSampler(ds, batch_size=2, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3] and len(sampler) == 3
    assert all(len({keys[i] for i in b}) == 1 for b in batches) and [0, 1] in [sorted(b) for b in batches]
    assert list(BucketBatchSampler(ds, batch_size=2, seed=3)) == batches        # same seed, same batches
    orders = set()
    for epoch in range(8):
        sampler.set_epoch(epoch)
        orders.add(tuple(map(tuple, sampler)))
    assert len(orders) > 1                                                      # each epoch its own order
    assert list(BucketBatchSampler(ds, 2, seed=3, drop_last=True)) in ([[0, 1]], [[1, 0]])
    halves = [list(BucketBatchSampler(ds, 2, seed=3, rank=r, world=2)) for r in range(2)]
    assert sorted(i for h in halves for b in h for i in b) == [0, 1, 2, 3]
    for batch in DataLoader(ds, batch_sampler=BucketBatchSampler(ds, 2, seed=0), collate_fn=atk.pad_collate):
        assert bool(batch["valid"].all())                                       # nothing padded


def test_buckets_over_a_stream_of_shards_with_workers(cache, tmp_path):
    for i, name in enumerate("acbd"):                 # two workers: shards 0 and 2 (a, b) go to the first
        write_shard(tmp_path, i, [(name, cache / f"{name}.atok", {})], {})

    def batches():
        stream = Bucketed(ShardDataset(tmp_path, mode="dense", shuffle=2, seed=1), batch_size=2, buffer=3)
        return [(b["key"], tuple(b["latents"].shape)) for b in DataLoader(stream, batch_size=None, num_workers=2)]
    got = batches()
    assert sorted(k for keys, _ in got for k in keys) == ["a", "b", "c", "d"]
    assert all(shape[0] == len(keys) for keys, shape in got)                    # one shape per batch: stacked
    assert sorted(len(keys) for keys, _ in got) == [1, 1, 2]                    # a and b met in one bucket
    assert got == batches()                                                     # deterministic


def damaged(cache, folder):
    """A copy of the cache with b.atok's middle byte flipped (inside a chunk record), d.atok cut short,
    and a FIFO named fifo.atok (opening it would block)."""
    shutil.copytree(cache, folder)
    raw = bytearray((folder / "b.atok").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (folder / "b.atok").write_bytes(bytes(raw))
    (folder / "d.atok").write_bytes((folder / "d.atok").read_bytes()[:200])
    os.mkfifo(folder / "fifo.atok")
    return folder


def test_a_corrupt_clip_is_skipped_inside_a_dataloader(cache, tmp_path):
    folder = damaged(cache, tmp_path / "c")
    ds = atk.AtokDataset(folder, on_error="skip")
    assert [f.name for f in ds.files] == ["a.atok", "b.atok", "c.atok", "d.atok"]
    with pytest.warns(RuntimeWarning, match="b.atok: corrupt container"):
        assert ds[1] is None
    seen = []
    for batch in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=atk.pad_collate):
        seen += [os.path.basename(p) for p in batch["path"]] if batch is not None else []
    assert sorted(seen) == ["a.atok", "c.atok"]
    shard = tmp_path / "s"
    shard.mkdir()
    write_shard(shard, 0, [(n, folder / f"{n}.atok", {}) for n in "abc"], {})
    keys = [it["key"] for it in ShardDataset(shard, mode="dense", on_error="skip")]
    assert keys == ["a", "c"]


@pytest.mark.slow
def test_a_corrupt_clip_raises_through_a_dataloader(cache, tmp_path):
    """on_error="raise": the worker's ContainerError reaches the loop, naming the clip. (Slow only because
    torch's DataLoader takes 5 s per worker to shut down after a worker raised.)"""
    folder = damaged(cache, tmp_path / "c")
    batches = iter(DataLoader(atk.AtokDataset(folder), batch_size=2, num_workers=2, collate_fn=atk.pad_collate))
    with pytest.raises(ContainerError, match="b.atok: corrupt container"):
        for _ in batches:
            pass
    del batches
    gc.collect()                            # the workers' shutdown is this test's, not the next one's


def test_a_cache_of_another_tokenizer_or_other_settings_is_refused(cache, tmp_path, small_tok_path):
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_tinytok(TinyTok(TinyTokConfig(width=16, shallow=8, enc_blocks=1, dec_blocks=1)), torch.ones(16), other)
    for kw in ({}, {"on_error": "skip"}):
        with pytest.raises(CacheMismatchError, match=r"a.atok: made with tokeniser .* a cache of another tokeniser"):
            atk.AtokDataset(cache, tokenizer=str(other), **kw)
    with pytest.raises(CacheMismatchError, match="made with threshold 0.2, not 0.1"):
        atk.AtokDataset(cache, tokenizer=str(small_tok_path), settings={"threshold": 0.1})
    ds = atk.AtokDataset(cache, tokenizer=str(small_tok_path), settings={"threshold": 0.2, "chunk": 2})
    assert ds[0]["latents"].shape[0] == 3
    with pytest.raises(CacheMismatchError, match="b.atok: made with quant fp16, not int8"):
        atk.AtokDataset(cache, settings={"quant": "int8"})[1]                   # checked on every clip
    with pytest.raises(ValueError, match="settings may name"):
        atk.AtokDataset(cache, settings={"colour": "red"})
    write_shard(tmp_path, 0, [("a", cache / "a.atok", {})], {})
    with pytest.raises(CacheMismatchError, match="shard-000000.tar:a: made with tokeniser"):
        list(ShardDataset(tmp_path, tokenizer=str(other), on_error="skip"))


@pytest.mark.slow
def test_verify_a_whole_cache_in_parallel(cache, tmp_path):
    folder = tmp_path / "v"
    shutil.copytree(cache, folder)
    write_shard(folder, 0, [(n, cache / f"{n}.atok", {}) for n in "ab"], {})
    raw = bytearray((folder / "c.atok").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (folder / "c.atok").write_bytes(bytes(raw))
    one, two = run("verify", folder), run("verify", folder, "--jobs", "2")
    assert one.returncode == two.returncode == 1 and one.stdout == two.stdout    # input order, whatever the jobs
    assert one.stdout.splitlines() == [f"{folder}/{n}.atok: ok ({k} chunks)" for n, k in (("a", 2), ("b", 2), ("d", 2))] + [
        f"{folder}/shard-000000.tar:{n}: ok (2 chunks)" for n in "ab"]
    last = two.stderr.strip().splitlines()[-1]
    assert last == f"adaptok: verify: 4 of 5 files ok (5 containers checked); 1 bad: {folder}/c.atok"
    rows = [json.loads(x) for x in run("verify", folder, "-j", "3", "--json").stdout.splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "ok", "ok", "ok"] and rows[2]["exit_code"] == 65
    assert run("verify", folder / "a.atok", "-j", "2").returncode == 0
    assert "chunk" in one_line_error(run("verify", folder / "c.atok", "-j", "2"), 65)
    assert "--jobs" in one_line_error(run("verify", folder, "-j", "0"), 2)
    p = subprocess.run([sys.executable, "-c", "import sys, adaptok_cli.measure.verify, adaptok_cli.cli.commands; print('torch' in sys.modules)"],
                       capture_output=True, text=True, timeout=HANG_GUARD)
    assert p.stdout.strip() == "False"                                          # workers start without torch
