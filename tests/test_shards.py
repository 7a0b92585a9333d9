"""WebDataset-style shards: compress --shard-size, resume, inspect/verify/open on members, the
streaming dataset with DataLoader workers, and the webdataset library reading our shards."""
import io
import json
import tarfile
import tracemalloc

import pytest
from torch.utils.data import DataLoader

import adaptok_cli as atk
from adaptok_cli import errors
from adaptok_cli.format.container import Limits
from adaptok_cli.errors import ContainerError, InputError
from adaptok_cli.format.atokfile import ShardDataset
from adaptok_cli.format.shards import members
from conftest import noise_frames, static_frames, write_video
from test_cli import one_line_error, run
from test_security import peak_run


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
    got = {m.key: (member_bytes(m.atok), m.meta) for s in shards for m in members(s)}
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
    assert [m.key for m in members(tmp_path / "out" / "shard-000002.tar")] == ["c3_mp4"]
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
    mine = {m.key: member_bytes(m.atok) for m in members(shard_dir / "shard-000000.tar")}
    for s in samples:
        assert s["atok"] == mine[s["__key__"]] and json.loads(s["json"])["source"] in ("c0.mp4", "c1.mp4")
    with tarfile.open(shard_dir / "shard-000000.tar") as t:
        assert all(m.mtime == 0 and m.uid == 0 for m in t.getmembers())        # same clips, same bytes


# --- shards from strangers: what a member declares costs nothing, every member is checked and named ---

def tar_bytes(entries, end=True) -> bytes:
    """A tar (USTAR, as compress writes) of (name, bytes) members in order; end=False: without the
    end-of-archive blocks, for more members to follow."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        members_end = t.offset
    return buf.getvalue() if end else buf.getvalue()[:members_end]


def sparse_member(name: str, declared: int, stored: int = 512) -> bytes:
    """An old-GNU sparse member: `declared` bytes long, `stored` of them in the file (one data block)."""
    info = tarfile.TarInfo(name)
    info.size, info.type = stored, tarfile.GNUTYPE_SPARSE
    b = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    b[386:410] = b"%011o\0%011o\0" % (0, stored)             # one sparse map entry: offset 0, stored bytes
    b[483:495] = b"%011o\0" % declared                        # the size it claims to have
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b[:512])
    return bytes(b) + b"\0" * stored


def huge_pax_member(name: str, declared: int) -> bytes:
    """A PAX member whose size record says `declared` bytes; none of them are in the file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size = 0
        info.pax_headers = {"size": str(declared)}
        t.addfile(info, io.BytesIO(b""))
    return buf.getvalue()[:3 * tarfile.BLOCKSIZE]           # pax header, its record, the member's header


@pytest.fixture(scope="module")
def atok(shard_dir):
    """A real container (bytes) and its metadata, taken from a shard compress made."""
    m = next(members(shard_dir / "shard-000000.tar"))
    return member_bytes(m.atok), json.dumps(m.meta).encode()


def test_a_small_shard_declaring_gigabytes_is_refused_small(tmp_path, atok):
    """Four 512-byte sparse members declaring 2 GiB each, 300 .atok members without their .json, a good
    clip, then a member declaring 2^50 bytes: each bad member is refused by name, the good one
    still checked, and reading the shard holds a few MB (issue 29: 4.1 GB, then MemoryError)."""
    data, meta = atok
    body = b"".join(sparse_member(f"sparse{i}.atok", 2 << 30) for i in range(4))
    body += tar_bytes([(f"orphan{i:03d}.atok", b"not a container") for i in range(300)]
                      + [("good.atok", data), ("good.json", meta)], end=False)
    body += huge_pax_member("huge.atok", 1 << 50) + b"\0" * tarfile.RECORDSIZE
    shard = tmp_path / "hostile.tar"
    shard.write_bytes(body)
    assert shard.stat().st_size < 400_000
    tracemalloc.start()
    got = list(members(shard))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak                               # measured: 0.2 MB
    assert [m.key for m in got[:4]] == [f"sparse{i}" for i in range(4)] and len(got) == 306
    assert all("sparse" in str(m.error) for m in got[:4]) and f"over the budget of {Limits().max_file_bytes}" in str(got[-1].error)
    assert got[-2].key == "good" and got[-2].error is None and member_bytes(got[-2].atok) == data
    for cmd in ("verify", "inspect"):
        p, _, peak_mb = peak_run(cmd, shard, "--json")
        assert p.returncode == errors.EXIT_SOME_FAILED, p.stderr
        lines = p.stderr.splitlines()
        assert len(lines) == 305 and all(line.startswith(f"adaptok: {shard}:") for line in lines)
        assert f"{shard}:sparse0: member sparse0.atok is a sparse file" in lines[0]
        rows = [json.loads(line) for line in p.stdout.splitlines()]
        assert [r["file"] for r in rows if r.get("status", "ok") == "ok"] == [f"{shard}:good"]
        assert peak_mb < 300, (cmd, peak_mb)                  # refused before torch: measured 67 MB
    with pytest.raises(ContainerError, match="sparse0.atok is a sparse file"):
        next(iter(ShardDataset(shard)))
    with atk.open(shard, member="good") as f:                 # read in place
        assert f.path == shard.parent / "hostile.tar:good" and f.dense().shape[0] == f.latent_shape[0]


def test_a_deep_or_huge_shard_index_means_not_finished(tmp_path):
    """A shard's index (shard-NNNNNN.json) says whether a resumed run may keep the shard: nested past 32
    or over its bound it is not believed (the shard is made again), never a RecursionError."""
    from adaptok_cli.format.shards import MAX_INDEX_BYTES, is_finished
    (tmp_path / "shard-000000.tar").write_bytes(b"")
    index = tmp_path / "shard-000000.json"
    index.write_text(json.dumps({"keys": ["a"], "failed": {}}))
    assert is_finished(tmp_path, 0, ["a"])
    for text in ('{"keys": ["a"], "x": ' + "[" * 20000 + "]" * 20000 + "}", " " * (MAX_INDEX_BYTES + 1) + "{}"):
        index.write_text(text)
        assert not is_finished(tmp_path, 0, ["a"])


def member_bytes(section) -> bytes:
    with open(section.file, "rb") as f:
        f.seek(section.offset)
        return f.read(section.size)


def test_decompress_copies_a_large_member_out_a_block_at_a_time(tmp_path):
    """decompress stages a shard's clips as files: an 8 MB member is copied without holding it
    (issue 29's review: it was read whole, so a member up to the file budget, 2^46 bytes, would be)."""
    import numpy as np

    from adaptok_cli.running.shard_inputs import _copy_out
    big = np.random.default_rng(0).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    shard = tmp_path / "big.tar"
    shard.write_bytes(tar_bytes([("big.atok", big), ("big.json", b"{}")]))
    staging = tmp_path / "staging"
    staging.mkdir()
    tracemalloc.start()
    staged = list(_copy_out(shard, None, staging))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 << 20, peak                             # measured 2.1 MB (over 8 MB when read whole)
    (key, path, error), = staged
    assert key == "big" and error is None and path.read_bytes() == big


def test_every_member_is_checked_and_named(tmp_path, atok):
    """A bad member does not stop the check of the rest; errors name shard.tar:key; duplicates, members
    apart from their clip and deeply nested metadata are reported; a broken tar header is not the end."""
    data, meta = atok
    shard = tmp_path / "s.tar"
    shard.write_bytes(tar_bytes([("bad.atok", data[:-9]), ("a.atok", data), ("deep.atok", data),
                                 ("deep.json", b"[" * 20000 + b"]" * 20000), ("b.atok", data), ("a.json", meta),
                                 ("b.atok", data), ("c.atok", data), ("c.json", meta)]))
    p = run("verify", shard, "--json")
    rows = {}
    for line in p.stdout.splitlines():
        r = json.loads(line)
        rows.setdefault(r["file"].split(":")[-1], []).append(r)
    assert p.returncode == errors.EXIT_SOME_FAILED and "Traceback" not in p.stderr
    assert {k: [r["status"] for r in v] for k, v in rows.items()} == {
        "bad": ["error"], "a": ["ok", "error"], "deep": ["error"], "b": ["ok", "error"], "c": ["ok"]}
    assert rows["bad"][0]["error"].startswith(f"{shard}:bad: corrupt container") and rows["bad"][0]["exit_code"] == 65
    assert "nested" in rows["deep"][0]["error"] and rows["deep"][0]["exit_code"] == 65
    assert "a.json is apart from the clip" in rows["a"][1]["error"]
    assert "b.atok appears twice" in rows["b"][1]["error"]
    # a shard cut inside a member: that member is refused, no later one can be found
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[:shard.read_bytes().index(b"deep.atok") + 1000])
    p = run("verify", cut)
    assert p.returncode == errors.EXIT_SOME_FAILED and p.stdout.count(": ok (") == 1
    assert f"{cut}:deep: member deep.atok declares {len(data)} bytes, past the end of the shard" in p.stderr
    # a header block overwritten in the middle: the clips before it are checked, then the shard fails
    raw = bytearray(shard.read_bytes())
    at = raw.index(b"b.atok")
    raw[at:at + 512] = b"\x07" * 512
    shard.write_bytes(bytes(raw))
    p = run("verify", shard)
    assert p.returncode == errors.EXIT_SOME_FAILED and f"{shard}:c" not in p.stdout
    assert f"{shard}:a: ok" in p.stdout and f"corrupt tar header at byte {at}" in p.stderr
    # a PAX header that says it is 100 MB long is refused before tarfile reads it whole
    big = tmp_path / "pax.tar"
    head = tarfile.TarInfo("././@PaxHeader")
    head.size, head.type = 100 << 20, tarfile.XHDTYPE
    big.write_bytes(head.tobuf(format=tarfile.USTAR_FORMAT) + b"9 a=b\n" * 100)
    assert "needs more than" in one_line_error(run("verify", big), errors.EXIT_BAD_CONTAINER)
