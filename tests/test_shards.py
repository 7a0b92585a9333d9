"""WebDataset-style shards: compress --shard-size, resume, inspect/verify/open on members, the
streaming dataset with DataLoader workers, and the webdataset library reading our shards."""
import json
import tarfile

import pytest
from torch.utils.data import DataLoader

import adaptok_cli as atk
from adaptok_cli.errors import InputError
from adaptok_cli.atokfile import ShardDataset
from adaptok_cli.shards import members
from conftest import noise_frames, static_frames, write_video
from test_cli import one_line_error, run


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    for i in range(4):
        write_video(d / f"c{i}.mp4", (static_frames if i % 2 else noise_frames)(9 + 4 * i, 32, 48))
    (d / "broken.mp4").write_bytes(b"not a video")
    return d


@pytest.mark.slow
def test_shards_hold_the_local_batch_bytes_and_resume(tmp_path, clips, small_tok_path):
    tok = ["--tokenizer", small_tok_path, "--chunk", "2"]
    local = run("compress", clips, "-o", tmp_path / "local", *tok, "-q")
    assert local.returncode != 0                                          # the broken clip fails, the rest go on
    p = run("compress", clips, "-o", tmp_path / "out", "--shard-size", "2", *tok, "-q")
    assert p.returncode == local.returncode and "broken.mp4" in p.stderr
    shards = sorted((tmp_path / "out").glob("shard-*.tar"))
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not [f for f in (tmp_path / "out").iterdir() if f.name.startswith(".")]    # no staging left
    index = json.loads((tmp_path / "out" / "shard-000000.json").read_text())
    assert index == {"keys": ["broken_mp4", "c0_mp4"][1:], "failed": {"broken_mp4": index["failed"]["broken_mp4"]}}
    got = {k: (data, meta) for s in shards for k, data, meta in members(s)}
    assert sorted(got) == ["c0_mp4", "c1_mp4", "c2_mp4", "c3_mp4"]
    for k, (data, meta) in got.items():
        name = k.replace("_mp4", ".mp4")
        assert data == (tmp_path / "local" / f"{name}.atok").read_bytes()       # byte-identical to a local run
        assert meta["source"] == name and meta["frames"] == atk.inspect(tmp_path / "local" / f"{name}.atok").frames
    # resume: finished shards are kept as they are, the one with a failure and a deleted one are redone
    before = {s.name: s.stat().st_mtime_ns for s in shards}
    (tmp_path / "out" / "shard-000002.tar").unlink()
    p = run("compress", clips, "-o", tmp_path / "out", "--shard-size", "2", *tok, "-q")
    after = {s.name: s.stat().st_mtime_ns for s in sorted((tmp_path / "out").glob("shard-*.tar"))}
    assert after["shard-000001.tar"] == before["shard-000001.tar"]
    assert after["shard-000000.tar"] != before["shard-000000.tar"] and "shard-000002.tar" in after
    assert [k for k, _, _ in members(tmp_path / "out" / "shard-000002.tar")] == ["c3_mp4"]
    # the same shards, written to a filesystem URL from Python, with finished ones reported as skipped
    url = f"file://{tmp_path}/url-out"
    first = atk.compress_many(clips, url, shard_size=2, chunk=2, tokenizer=str(small_tok_path), workers=1)
    assert sorted(str(o.dst) for o in first if o.error is None) == [f"{url}/shard-00000{(i + 1) // 2}.tar:c{i}_mp4"
                                                                     for i in range(4)]     # after broken.mp4
    for s in ("shard-000001.tar", "shard-000002.tar", "shard-000001.json"):
        assert (tmp_path / "url-out" / s).read_bytes() == (tmp_path / "out" / s).read_bytes()
    again = atk.compress_many(clips, url, shard_size=2, chunk=2, tokenizer=str(small_tok_path), workers=1)
    assert sorted(o.src.name for o in again if o.skipped) == ["c1.mp4", "c2.mp4", "c3.mp4"]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, clips, small_tok_path):
    out = tmp_path_factory.mktemp("shards")
    (out / "in").mkdir()
    for i in range(4):
        (out / "in" / f"c{i}.mp4").write_bytes((clips / f"c{i}.mp4").read_bytes())
    assert run("compress", out / "in", "-o", out / "s", "--shard-size", "2", "--tokenizer", small_tok_path,
               "-q").returncode == 0
    return out / "s"


def test_inspect_verify_and_open_read_members(shard_dir, small_tok_path):
    p = run("inspect", shard_dir / "shard-000000.tar", "--json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and [r["file"].split(":")[-1] for r in rows] == ["c0_mp4", "c1_mp4"]
    p = run("verify", shard_dir)
    assert p.returncode == 0 and p.stdout.count(": ok (") == 4
    with atk.open(shard_dir / "shard-000001.tar", member="c3_mp4", tokenizer=str(small_tok_path)) as f:
        assert f.frames == 21 and f.dense().shape[1] == 16
    assert "no such file" in one_line_error(run("inspect", shard_dir / "missing.tar"), 66)
    (shard_dir.parent / "junk.tar").write_bytes(b"\x00\x01not a tar" * 100)
    assert "not a readable shard" in one_line_error(run("verify", shard_dir.parent / "junk.tar"), 65)
    with pytest.raises(InputError, match="no member"):
        atk.open(shard_dir / "shard-000001.tar", member="nope")


def test_dataset_streams_every_clip_once_across_workers(shard_dir):
    ds = ShardDataset(shard_dir, mode="sparse", shuffle=3, seed=1)
    keys = []
    for batch in DataLoader(ds, batch_size=2, collate_fn=atk.pad_collate, num_workers=2):
        keys += batch["key"]
        assert batch["tokens"].shape[0] == len(batch["key"])
    assert sorted(keys) == ["c0_mp4", "c1_mp4", "c2_mp4", "c3_mp4"]
    ranks = [sorted(it["key"] for it in ShardDataset(shard_dir, rank=r, world=2)) for r in range(2)]
    assert ranks == [["c0_mp4", "c1_mp4"], ["c2_mp4", "c3_mp4"]]              # ranks split by shard


def test_the_webdataset_library_reads_our_shards(shard_dir):
    wds = pytest.importorskip("webdataset")
    samples = list(wds.WebDataset(str(shard_dir / "shard-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["c0_mp4", "c1_mp4"]
    mine = {k: data for k, data, _ in members(shard_dir / "shard-000000.tar")}
    for s in samples:
        assert s["atok"] == mine[s["__key__"]] and json.loads(s["json"])["source"] in ("c0.mp4", "c1.mp4")
    with tarfile.open(shard_dir / "shard-000000.tar") as t:
        assert all(m.mtime == 0 and m.uid == 0 for m in t.getmembers())        # same clips, same bytes
