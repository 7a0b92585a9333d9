"""The command line as scripts see it: exit codes, one-line errors, outputs never clobbered."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adaptok_cli import errors

from conftest import noise_frames, write_video
from waiting import HANG_GUARD

def child_env() -> dict:
    """The environment of a command a test runs: this process's as it is now (with the test's own
    ADAPTOK_CACHE, conftest.py), without Python's warnings."""
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def run(*args, cwd=None, env=None):
    p = subprocess.run([sys.executable, "-m", "adaptok_cli", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, env=env or child_env(), timeout=HANG_GUARD)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def one_line_error(p, code):
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaptok: "), p.stderr
    return lines[0]


@pytest.fixture
def atok(tmp_path, small_tok_path, videos):
    dst = tmp_path / "s.atok"
    p = run("compress", videos["static"], "-o", dst, "--tokenizer", small_tok_path, "-q")
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""   # -q: nothing but errors
    return dst


def test_compress_default_name_and_no_clobber(tmp_path, small_tok_path):
    src = write_video(tmp_path / "a.mkv", noise_frames(5, 16, 16))
    p = run("compress", src, "--tokenizer", small_tok_path)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "a.mkv.atok"
    before = out.read_bytes()
    p = run("compress", src, "--tokenizer", small_tok_path, "--threshold", "0")
    assert "already exists" in one_line_error(p, errors.EXIT_CANT_CREATE)
    assert out.read_bytes() == before
    assert run("compress", src, "--tokenizer", small_tok_path, "-f", "--threshold", "0").returncode == 0
    assert out.read_bytes() != before
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]   # no temp files left


def test_json_output(tmp_path, small_tok_path, videos, atok):
    p = run("inspect", atok, "--json")
    info = json.loads(p.stdout)
    for key in ("token_rate", "tokens_kept", "tokens_total", "bpp", "frames", "fps", "width", "height", "chunks"):
        assert key in info
    assert info["frames"] == 33 and (info["width"], info["height"]) == (64, 48)
    assert all("token_rate" in c for c in info["chunks"])
    assert sum(c["frames"] for c in info["chunks"]) == 33
    p = run("compress", videos["noise"], "-o", tmp_path / "n.atok", "--tokenizer", small_tok_path, "--json")
    rec = json.loads(p.stdout)
    assert rec["status"] == "ok" and rec["frames"] == 17 and 0 < rec["token_rate"] <= 1


def test_eval_json(small_tok_path, videos):
    p = run("eval", videos["static"], "--tokenizer", small_tok_path, "--json", "--short-side", "0")
    lines = [json.loads(l) for l in p.stdout.splitlines()]
    clip, mean = lines[0], lines[-1]["mean"]
    for key in ("psnr", "ssim", "token_rate", "bpp", "fps_compress", "fps_decompress", "psnr_full_rate", "psnr_hold_fill"):
        assert key in clip and key in mean
    assert clip["frames"] == 33
    assert clip["psnr_full_rate"] >= clip["psnr_hold_fill"] - 0.5
    assert "psnr_interp_fill" in mean and clip["latent_mse_dropped_interp"] >= 0
    # where the loss is: pixels of kept and of dropped positions, for every fill and at full rate
    for fill in ("full", "hold", "interp"):
        assert 10 < clip[f"psnr_kept_region_{fill}"] < 99 and 10 < clip[f"psnr_dropped_region_{fill}"] < 99
    assert clip["psnr_dropped_region_hold"] <= clip["psnr_dropped_region_full"] + 0.5


def test_decompress_needs_the_right_tokenizer(tmp_path, atok):
    p = run("decompress", atok, "-o", tmp_path / "o.mp4")
    line = one_line_error(p, errors.EXIT_UNAVAILABLE)
    assert "--tokenizer" in line and "fingerprint" in line
    assert not (tmp_path / "o.mp4").exists()


def test_decompress_refuses_other_weights(tmp_path, atok):
    import torch
    from adaptok_cli.models.tinytok import TinyTok, TinyTokConfig
    from adaptok_cli.models.tokenizer import save_tinytok
    other = tmp_path / "other.safetensors"
    save_tinytok(TinyTok(TinyTokConfig(width=16, shallow=8, enc_blocks=1, dec_blocks=1)), torch.ones(16), other)
    p = run("decompress", atok, "-o", tmp_path / "o.mp4", "--tokenizer", other)
    assert "fingerprint" in one_line_error(p, errors.EXIT_UNAVAILABLE)


@pytest.mark.slow
def test_error_paths(tmp_path, small_tok_path, atok):
    notvideo = tmp_path / "notes.mp4"
    notvideo.write_text("hello")
    one_line_error(run("compress", notvideo, "--tokenizer", small_tok_path), errors.EXIT_BAD_INPUT)
    one_line_error(run("compress", tmp_path / "missing.mp4", "--tokenizer", small_tok_path), errors.EXIT_BAD_INPUT)
    one_line_error(run("compress", notvideo, "--tokenizer", "nosuchtok"), errors.EXIT_UNAVAILABLE)
    one_line_error(run("inspect", notvideo), errors.EXIT_BAD_CONTAINER)
    one_line_error(run("decompress", tmp_path / "missing.atok"), errors.EXIT_BAD_INPUT)
    one_line_error(run("inspect", tmp_path / "missing.atok"), errors.EXIT_BAD_INPUT)
    data = bytearray(atok.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.atok"
    bad.write_bytes(bytes(data))
    line = one_line_error(run("decompress", bad, "-o", tmp_path / "x.mkv", "--tokenizer", small_tok_path),
                          errors.EXIT_BAD_CONTAINER)
    assert "corrupt" in line
    assert not (tmp_path / "x.mkv").exists() and not list(tmp_path.glob(".x.mkv*"))
    one_line_error(run("compress", notvideo, "--threshold", "1", "--keep-ratio", "0.5"), errors.EXIT_USAGE)
    assert run("compress").returncode == errors.EXIT_USAGE
    assert run("decompress", atok, "-o", tmp_path / "x.avi", "--tokenizer", small_tok_path).returncode == errors.EXIT_USAGE


def test_batch_continues_past_failures(tmp_path, small_tok_path, videos):
    write_video(tmp_path / "in" / "good.mkv", noise_frames(5, 16, 16))
    (tmp_path / "in" / "sub").mkdir()
    write_video(tmp_path / "in" / "sub" / "also.mkv", noise_frames(5, 16, 16))
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\0" * 100)
    p = run("compress", tmp_path / "in", "-o", tmp_path / "out", "--tokenizer", small_tok_path, "--json")
    assert p.returncode == errors.EXIT_SOME_FAILED
    recs = [json.loads(l) for l in p.stdout.splitlines()]
    assert sorted(r["status"] for r in recs) == ["error", "ok", "ok"]
    assert (tmp_path / "out" / "good.mkv.atok").exists() and (tmp_path / "out" / "sub" / "also.mkv.atok").exists()


def test_version_and_module_entry():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("adaptok ")


def test_man_page_is_current():
    """man/adaptok.1 is generated from the CLI help: `make man` after changing an option."""
    import importlib.util
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_man", root / "scripts" / "make_man.py")
    make_man = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_man)
    assert (root / "man" / "adaptok.1").read_text() == make_man.man_page(), "run `make man`"


def test_readme_documents_setup_and_exit_codes():
    from adaptok_cli import errors
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for name in dir(errors):
        if name.startswith("EXIT_"):
            assert f"| {getattr(errors, name)} |" in readme, name


def test_shell_completion_scripts_and_completions():
    for shell, marker in (("bash", "complete "), ("zsh", "compdef"), ("fish", "complete ")):
        p = run("completion", shell)
        assert p.returncode == 0 and marker in p.stdout, (shell, p.stdout[:200])
    p = subprocess.run([sys.executable, "-m", "adaptok_cli"], capture_output=True, text=True, timeout=HANG_GUARD,
                       env={**child_env(), "_ADAPTOK_COMPLETE": "complete_bash", "COMP_WORDS": "adaptok decomp",
                            "COMP_CWORD": "1"})
    assert p.stdout.split() == ["decompress"]
    assert run("completion", "tcsh").returncode == errors.EXIT_USAGE
