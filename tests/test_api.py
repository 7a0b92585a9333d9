"""The Python API: docs/API.md runs as written; the reader and Dataset give what they promise."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import adaptok_cli as atk
from adaptok_cli.running.video import VideoReader

from conftest import static_frames, write_video

ROOT = Path(__file__).resolve().parents[1]


def test_api_md_examples_run(tmp_path, monkeypatch):
    """Every ```python block of docs/API.md, in order, in one namespace, with the built-in tokeniser."""
    text = (ROOT / "docs" / "API.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    (tmp_path / "sample_videos").symlink_to(ROOT / "sample_videos")
    monkeypatch.chdir(tmp_path)
    ns = {}
    for code in blocks:
        exec(compile(code, "docs/API.md", "exec"), ns)
    assert (tmp_path / "ball.mkv").exists() and len(list((tmp_path / "latents").glob("*.atok"))) == 2


@pytest.fixture(scope="module")
def clip_atok(tmp_path_factory, small_tok_path):
    d = tmp_path_factory.mktemp("api")
    src = write_video(d / "a.mp4", static_frames(23, 40, 56))
    atk.compress(src, d / "a.atok", tokenizer=str(small_tok_path), chunk=2, threshold=0.3)
    return d / "a.atok"


def test_decompress_options_as_keywords_or_object(tmp_path, clip_atok, small_tok_path):
    """decompress and decompress_many take a DecompressOptions or its keywords (not both), checked
    before any work; both give the same frames, and decompress_many reports one Outcome per clip."""
    opts = atk.DecompressOptions(tokenizer=str(small_tok_path), use_lit=False, device="cpu")
    a = atk.decompress(clip_atok, tmp_path / "a.y4m", opts)
    b = atk.decompress(clip_atok, tmp_path / "b.y4m", tokenizer=str(small_tok_path), use_lit=False, device="cpu")
    assert (a.frames, b.frames) == (23, 23)
    assert (tmp_path / "a.y4m").read_bytes() == (tmp_path / "b.y4m").read_bytes()
    with pytest.raises(atk.errors.UsageError, match="not both"):
        atk.decompress(clip_atok, tmp_path / "c.y4m", opts, crf=20)
    for bad, message in ((dict(crf=52), "--crf"), (dict(codec="gif"), "unknown codec"), (dict(dtype="fp8"), "--dtype"),
                         (dict(device="tpu"), "unknown device")):
        with pytest.raises(atk.errors.UsageError, match=message):
            atk.DecompressOptions(**bad).check()
    outcomes = atk.decompress_many([clip_atok], f"{tmp_path}/many/", opts)
    assert [(o.error, o.skipped, o.result.frames) for o in outcomes] == [(None, False, 23)]
    again = atk.decompress_many(clip_atok, f"{tmp_path}/many/", tokenizer=str(small_tok_path), use_lit=False,
                                device="cpu")
    assert [o.skipped for o in again] == [True]         # up to date with the same settings, given as keywords


def test_reader_matches_decompress(tmp_path, clip_atok, small_tok_path):
    """Frames from open().iter_frames() equal what decompress writes (lossless), chunk by chunk."""
    atk.decompress(clip_atok, tmp_path / "out.mkv", tokenizer=str(small_tok_path))
    with VideoReader(tmp_path / "out.mkv") as r:
        written = np.stack(list(r))
    with atk.open(clip_atok, tokenizer=str(small_tok_path)) as f:
        assert f.num_chunks == 4 and len(f) == f.frames == 23 and (f.width, f.height) == (56, 40)   # 7 latent frames: 2+2+2+1
        frames = np.concatenate(list(f.iter_frames()))
        dense_all = f.dense()
        assert dense_all.shape == f.latent_shape == (7, 16, 5, 7)
        assert torch.equal(f.dense(1, 3), dense_all[2:6])
        assert np.allclose(f.chunk_token_rates, [c["token_rate"] for c in atk.inspect(clip_atok)["chunks"]])
        for i in range(f.num_chunks):
            mask, tokens = f.sparse(i)
            z = dense_all[2 * i: 2 * i + 2]
            assert torch.equal(z.permute(0, 2, 3, 1)[mask], tokens)
    assert np.array_equal(frames, written)


def test_dataset_shapes(tmp_path, small_tok_path):
    for i, t in enumerate((9, 13)):
        sub = tmp_path / f"d{i}"
        sub.mkdir()
        src = write_video(tmp_path / f"v{i}.mp4", static_frames(t, 32, 48, seed=i))
        atk.compress(src, sub / f"v{i}.atok", tokenizer=str(small_tok_path))
    dense = atk.AtokDataset(tmp_path, mode="dense")
    assert len(dense) == 2
    z0, z1 = dense[0]["latents"], dense[1]["latents"]
    assert z0.shape == (3, 16, 4, 6) and z1.shape == (4, 16, 4, 6) and z0.dtype == torch.float32
    assert {k: dense[1][k] for k in ("width", "height", "frames", "fps")} == {"width": 48, "height": 32, "frames": 13, "fps": 25}
    assert dense[1]["path"].endswith("v1.atok")
    sparse = atk.AtokDataset(tmp_path, mode="sparse")
    item = sparse[1]
    assert item["mask"].shape == (4, 4, 6) and item["mask"][0].all()
    assert item["tokens"].shape == (int(item["mask"].sum()), 16)
    with pytest.raises(ValueError):
        atk.AtokDataset(tmp_path, mode="pixels")
    with pytest.raises(atk.errors.InputError, match="no such folder"):
        atk.AtokDataset(tmp_path / "nonexistent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(atk.errors.InputError, match="no .atok files"):
        atk.AtokDataset(tmp_path / "empty")


def test_one_default_fill_slices_and_ranges(tmp_path, clip_atok, small_tok_path, monkeypatch):
    """open() and AtokDataset agree by default (hold-fill); slices cost what they cover and check their
    bounds; frame ranges equal the same frames of a full decode; errors have documented types."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "c.atok").write_bytes(clip_atok.read_bytes())
    with atk.open(folder / "c.atok", tokenizer=str(small_tok_path)) as f:
        assert torch.equal(f.dense(), atk.AtokDataset(folder)[0]["latents"])
        whole = np.concatenate(list(f.iter_frames()))
        assert np.array_equal(f.read_frames(5, 17), whole[5:17]) and np.array_equal(f.read_frames(22, 23), whole[22:23])
        # dense(3, 4) builds only chunk 3's dense tensor (earlier chunks update the hold state only)
        from adaptok_cli.core import codec
        expected, built = f.dense()[6:7], []
        real_gather = codec.hold_gather
        monkeypatch.setattr(codec, "hold_gather", lambda t, m, *a: built.append(len(m)) or real_gather(t, m, *a))
        assert torch.equal(f.dense(3, 4), expected) and built == [1]
        for bad in ((5, 2), (2, 2), (0, 99), (-1, 2)):
            with pytest.raises(IndexError, match="out of range"):
                f.dense(*bad)
        with pytest.raises(IndexError, match="out of range"):
            f.sparse(99)
        with pytest.raises(IndexError, match="out of range"):
            f.read_frames(20, 24)
        with pytest.raises(ValueError):
            f.dense(fill="magic")
    if not torch.cuda.is_available():
        with pytest.raises(atk.errors.ModelUnavailableError, match="CUDA"):
            atk.open(clip_atok, device="cuda")


def test_compress_keyword_options(tmp_path, small_tok_path):
    src = write_video(tmp_path / "a.mp4", static_frames(9, 32, 48))
    res = atk.compress(src, tmp_path / "a.atok", tokenizer=str(small_tok_path), keep_ratio=0.5)
    assert atk.inspect(tmp_path / "a.atok")["keep_ratio"] == 0.5 and res.frames == 9
    with pytest.raises(atk.errors.UsageError):
        atk.compress(src, tmp_path / "b.atok", atk.CompressOptions(), threshold=0.1)


def test_modules_named_before_the_folders_still_import_as_the_same_modules():
    """docs named `adaptok_cli.collate`, `.shards`, `.calibration`, `.batch`, ... before the package had
    sub-folders: those imports still work and give the module itself, so a patch through either name is
    seen through the other."""
    code = ("import adaptok_cli, importlib\n"
            "from adaptok_cli.collate import BucketBatchSampler\n"
            "from adaptok_cli.shards import members\n"
            "for old, new in adaptok_cli.MOVED.items():\n"
            "    a = importlib.import_module('adaptok_cli.' + old)\n"
            "    b = importlib.import_module('adaptok_cli.' + new)\n"
            "    assert a is b and a.__spec__.name == b.__name__ == 'adaptok_cli.' + new, old\n"
            "    assert getattr(adaptok_cli, old) is b\n"
            "assert BucketBatchSampler is adaptok_cli.BucketBatchSampler\n"
            "print(len(adaptok_cli.MOVED))\n")
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and p.stdout.strip() == "7", p.stderr[-2000:]


def test_the_package_folders_hold_every_module():
    """The top level keeps only what every part shares (errors, defaults) and the entry points."""
    top = sorted(p.name for p in (ROOT / "adaptok_cli").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "defaults.py", "errors.py", "main.py"]
    for folder in ("core", "format", "models", "running", "measure", "cli", "training"):
        init = ROOT / "adaptok_cli" / folder / "__init__.py"
        assert init.is_file() and len(list(init.parent.glob("*.py"))) > 1, folder
