"""decompress reads shards (issue 32): every clip of a shard, mirrored as if the shard were a folder
of its clips, or one clip named shard.tar:key; a clip that failed keeps its error in the shard index."""
import io
import json
import tarfile

import numpy as np
import pytest

from adaptok_cli import errors
from adaptok_cli.running.video import read_frames

from conftest import noise_frames, static_frames, write_video
from test_cli import one_line_error, run


@pytest.fixture(scope="module")
def shards(tmp_path_factory, small_tok_path):
    """Two 854x480 clips (one in a subfolder) and a broken one, as shards of two and the same clips
    compressed to plain files."""
    d = tmp_path_factory.mktemp("unshard")
    (d / "in" / "sub").mkdir(parents=True)
    write_video(d / "in" / "a.mkv", static_frames(5, 480, 854))
    write_video(d / "in" / "sub" / "b.mkv", noise_frames(5, 480, 854))
    (d / "in" / "broken.mp4").write_bytes(b"not a video")
    tok = ["--tokenizer", small_tok_path, "-q"]
    assert run("compress", d / "in", "-o", d / "SH", "--shard-size", "2", *tok).returncode == errors.EXIT_SOME_FAILED
    assert run("compress", d / "in", "-o", d / "plain", *tok).returncode == errors.EXIT_SOME_FAILED
    return d


def decoded(src, dst, tok, *args):
    p = run("decompress", src, "-o", dst, "--tokenizer", tok, "--no-lit", "-q", *args)
    assert p.returncode == 0, p.stderr
    return p


def same_video(a, b):
    """The same container decoded the same way, in one process kind: FFV1 is lossless, so the frames
    are equal exactly (the .mkv bytes differ by the muxer's random segment id)."""
    fa, fb = read_frames(a), read_frames(b)
    assert fa.shape == fb.shape == (5, 480, 854, 3) and np.array_equal(fa, fb)


@pytest.mark.slow
def test_a_shard_decodes_every_clip_mirrored(tmp_path, shards, small_tok_path):
    assert sorted(p.name for p in (shards / "SH").iterdir()) == ["shard-000000.json", "shard-000000.tar",
                                                                  "shard-000001.json", "shard-000001.tar"]
    decoded(shards / "SH", f"{tmp_path}/out/", small_tok_path)
    got = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert got == ["shard-000000/a.decoded.mkv", "shard-000001/sub/b.decoded.mkv"]
    decoded(shards / "plain", f"{tmp_path}/ref/", small_tok_path)
    for shard_out, ref in (("shard-000000/a", "a"), ("shard-000001/sub/b", "sub/b")):
        same_video(tmp_path / "out" / f"{shard_out}.decoded.mkv", tmp_path / "ref" / f"{ref}.decoded.mkv")
    p = run("decompress", shards / "SH", "-o", f"{tmp_path}/out/", "--tokenizer", small_tok_path, "--no-lit")
    assert p.returncode == 0 and p.stderr.count("skipped (up to date)") == 2, p.stderr


@pytest.mark.slow
def test_one_clip_by_its_member_name(tmp_path, shards, small_tok_path):
    p = run("decompress", f"{shards}/SH/shard-000001.tar:sub/b_mkv", "-o", tmp_path / "b.mkv",
            "--tokenizer", small_tok_path, "--no-lit", "--json")
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)
    assert row["input"] == f"{shards}/SH/shard-000001.tar:sub/b_mkv" and row["frames"] == 5
    decoded(shards / "plain" / "sub" / "b.mkv.atok", tmp_path / "ref.mkv", small_tok_path)
    same_video(tmp_path / "b.mkv", tmp_path / "ref.mkv")
    line = one_line_error(run("decompress", f"{shards}/SH/shard-000001.tar:nokey", "-o", tmp_path / "x.mkv"),
                          errors.EXIT_BAD_INPUT)
    assert "no member 'nokey'" in line


def test_a_failed_clip_keeps_its_error_in_the_index(shards):
    index = json.loads((shards / "SH" / "shard-000000.json").read_text())
    assert index["keys"] == ["a_mkv"]
    assert "not a readable video" in index["failed"]["broken_mp4"]


def test_a_key_that_leaves_the_folder_is_refused(tmp_path, shards, small_tok_path):
    """Member names come from the file: a key is checked before it becomes a path."""
    atok = (shards / "plain" / "a.mkv.atok").read_bytes()
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        for name in ("/abs/escape_mkv.atok", "ok_mkv.atok"):
            info = tarfile.TarInfo(name)
            info.size = len(atok)
            tar.addfile(info, io.BytesIO(atok))
    (tmp_path / "out").mkdir()
    p = run("decompress", tmp_path / "evil.tar", "-o", f"{tmp_path}/out/", "--tokenizer", small_tok_path,
            "--no-lit", "-q")
    assert p.returncode == errors.EXIT_SOME_FAILED
    assert "evil.tar:/abs/escape_mkv: member key" in p.stderr
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["evil.tar", "out/evil/ok.decoded.mkv"]


def test_an_error_found_while_decoding_names_the_clip_in_its_shard(tmp_path, shards, small_tok_path):
    """A clip whose chunk is damaged fails while it is decoded, from its staged copy: the error names
    shard.tar:key, never the temporary file, and the shard's other clip is decoded."""
    from adaptok_cli.format.container import AtokReader
    path = shards / "plain" / "a.mkv.atok"
    atok = path.read_bytes()
    with AtokReader(path) as r:
        at = int(r.chunks[0, 0]) + 4 + int(r.chunks[0, 1]) // 2        # inside the first chunk's zstd frame
    damaged = atok[:at] + bytes([atok[at] ^ 0xFF]) + atok[at + 1:]
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in (("dmg_mkv.atok", damaged), ("ok_mkv.atok", atok)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    p = run("decompress", tmp_path / "s.tar", "-o", f"{tmp_path}/out/", "--tokenizer", small_tok_path, "--no-lit")
    assert p.returncode == errors.EXIT_SOME_FAILED, p.stderr
    errs = [line for line in p.stderr.splitlines() if line.startswith("adaptok: ")]
    assert errs[0].startswith(f"adaptok: {tmp_path / 's.tar'}:dmg_mkv: corrupt container (chunk 0"), errs
    assert errs[1:] == ["adaptok: 1 failed"], errs
    assert "clip.atok" not in p.stderr and "adaptok-shard-" not in p.stderr
    assert (tmp_path / "out" / "s" / "ok.decoded.mkv").is_file() and not (tmp_path / "out" / "s" / "dmg.decoded.mkv").exists()
