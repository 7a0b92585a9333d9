"""The built-in tokeniser: the shipped file is intact, real footage survives, training runs."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from adaptok_cli.measure.metrics import psnr
from adaptok_cli.running.pipeline import CompressOptions, compress, decompress
from adaptok_cli.models.tokenizer import builtin_path, load_tokenizer
from adaptok_cli.running.video import VideoReader, VideoWriter

from conftest import SHARED_DATA, static_frames, write_video
from make_reference import REFERENCE, run_reference
from waiting import HANG_GUARD


def test_shipped_weights_reproduce_reference():
    tok = load_tokenizer("tinytok")
    ref = np.load(REFERENCE)
    assert str(ref["fingerprint"]) == tok.fingerprint, "weights changed: run tests/make_reference.py if on purpose"
    z, frames = run_reference(tok)
    assert z.shape == (3, 16, 4, 6) and tok.scale.shape == (16,)
    np.testing.assert_allclose(z, ref["latents"], atol=1e-3, rtol=1e-3)
    assert np.abs(frames.astype(int) - ref["frames"].astype(int)).max() <= 1


def test_streaming_equals_whole_clip():
    """The encoder and decoder carry state across chunks: chunked processing equals one pass."""
    tok = load_tokenizer("tinytok")
    from make_reference import reference_input
    x = reference_input()
    z_whole, _ = tok.encode(x)
    z1, s = tok.encode(x[:5])
    z2, _ = tok.encode(x[5:], s)
    torch.testing.assert_close(torch.cat([z1, z2]), z_whole, atol=1e-4, rtol=1e-4)
    y_whole, _ = tok.decode(z_whole)
    y1, s = tok.decode(z_whole[:1])
    y2, _ = tok.decode(z_whole[1:], s)
    torch.testing.assert_close(torch.cat([y1, y2]), y_whole, atol=1e-4, rtol=1e-4)


DEV = SHARED_DATA / "dev"


@pytest.mark.skipif(not (DEV / "cotracker_cat.mp4").exists(), reason=f"{DEV} is not here (ADAPTOK_DATA)")
def test_real_clip_round_trip_above_psnr_floor(tmp_path):
    """21 frames of a real dev clip at short side 160, full rate, through the container and back."""
    clip = tmp_path / "cat.mkv"
    with VideoReader(DEV / "cotracker_cat.mp4", short_side=160) as r:
        frames = [f for _, f in zip(range(21), r)]
    w = VideoWriter(clip, frames[0].shape[1], frames[0].shape[0], r.info.fps, "ffv1")
    for f in frames:
        w.write(f)
    w.close()
    compress(clip, tmp_path / "cat.atok", CompressOptions(threshold=0))
    decompress(tmp_path / "cat.atok", tmp_path / "out.mkv")
    with VideoReader(tmp_path / "out.mkv") as r:
        out = list(r)
    assert len(out) == 21 and out[0].shape == frames[0].shape
    assert np.mean([psnr(a, b) for a, b in zip(frames, out)]) > 26.0


@pytest.mark.slow
def test_training_command_runs_two_steps_and_resumes(tmp_path):
    data = tmp_path / "clips"
    data.mkdir()
    write_video(data / "a.mp4", static_frames(12, 72, 96))
    run = lambda *a: subprocess.run([sys.executable, "-m", "adaptok_cli.training.tokenizer", "--data", data,
                                     "--cache", tmp_path / "cache", "--out", tmp_path / "run", "--batch", "1",
                                     "--crop", "64", "--frames", "5", "--sizes", "64", "--threads", "1", *a],
                                    capture_output=True, text=True, timeout=HANG_GUARD)
    p = run("--steps", "2")
    assert p.returncode == 0, p.stderr
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["step"] == 2
    p = run("--steps", "3")
    assert p.returncode == 0 and "resumed from step 2" in p.stderr, p.stdout + p.stderr
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3
    p = run("--export", tmp_path / "mine.safetensors")
    assert p.returncode == 0, p.stderr
    tok = load_tokenizer(str(tmp_path / "mine.safetensors"))
    assert tok.channels == 16 and (tok.time_factor, tok.space_factor) == (4, 8) and bool((tok.scale > 0).all())


def test_training_refuses_dev(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    p = subprocess.run([sys.executable, "-m", "adaptok_cli.training.tokenizer", "--data", dev, "--out", tmp_path / "r",
                        "--steps", "1"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert p.returncode != 0 and "dev/" in p.stderr


def test_the_data_folder_comes_from_adaptok_data(tmp_path):
    """Training, the benchmark and the tests find the clips in $ADAPTOK_DATA; unset, the developers'
    folder; a test that needs them skips when they are absent (as here, in an empty folder)."""
    code = "from adaptok_cli.training import data; print(data.DATA); print(data.TRAIN); print(data.DEV)"
    env = {k: v for k, v in os.environ.items() if k != "ADAPTOK_DATA"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD,
                       env={**env, "ADAPTOK_DATA": str(tmp_path)})
    assert p.stdout.split() == [str(tmp_path), str(tmp_path / "train"), str(tmp_path / "dev")], p.stderr
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD, env=env)
    assert p.stdout.split()[0].endswith(os.path.join("shared", "data")), p.stderr
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                        f"{__file__}::test_real_clip_round_trip_above_psnr_floor", "-rs"],
                       capture_output=True, text=True, timeout=HANG_GUARD, env={**env, "ADAPTOK_DATA": str(tmp_path)})
    assert p.returncode == 0 and "1 skipped" in p.stdout and str(tmp_path / "dev") in p.stdout, p.stdout[-2000:]


def test_hold_filled_follows_the_dropping_rule_and_passes_gradients():
    from adaptok_cli.training.tokenizer import channel_spread, hold_filled
    torch.manual_seed(0)
    z = torch.randn(3, 6, 16, 4, 5).cumsum(1).mul(0.3).requires_grad_()
    tau = torch.tensor([0.0, 0.5, 1e9])
    h = hold_filled(z, tau)
    unit = channel_spread(z).detach()[:, None, None]
    for b in range(3):
        assert torch.equal(h[b, 0], z[b, 0])
        for t in range(1, 6):
            change = ((z[b, t] - h[b, t - 1]).abs() / unit).mean(0)
            keep = change > tau[b]
            assert torch.equal(h[b, t][:, keep], z[b, t][:, keep])
            assert torch.equal(h[b, t][:, ~keep], h[b, t - 1][:, ~keep])
    assert torch.equal(h[0], z[0]) and torch.equal(h[2], z[2, :1].expand(6, -1, -1, -1))
    assert 0 < (h[1] == z[1]).float().mean() < 1
    h.sum().backward()                      # held values pass gradients to the frame they were kept from
    assert z.grad[2, 0].eq(6).all() and z.grad[2, 1:].eq(0).all()


def test_fine_tune_starts_from_the_given_weights(tmp_path):
    data = tmp_path / "clips"
    data.mkdir()
    write_video(data / "a.mp4", static_frames(12, 72, 96))
    shipped = builtin_path("tinytok")
    p = subprocess.run([sys.executable, "-m", "adaptok_cli.training.tokenizer", "--data", data, "--cache", tmp_path / "cache",
                        "--out", tmp_path / "run", "--batch", "1", "--crop", "64", "--frames", "5", "--sizes", "64",
                        "--threads", "1", "--steps", "2", "--lr", "1e-9", "--init", shipped,
                        "--temporal-l1", "0.1", "--hold-weight", "1"], capture_output=True, text=True, timeout=HANG_GUARD)
    assert p.returncode == 0, p.stderr
    ema = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["ema"]
    start = load_tokenizer("tinytok").model.state_dict()
    assert max((ema[k] - start[k]).abs().max().item() for k in start) < 1e-4


def test_large_frames_run_in_stripes_equal_to_one_pass(small_tok_path, monkeypatch):
    """Memory: the full-resolution layers run in horizontal stripes with a halo that covers their
    receptive field, so a 4K frame's activations never exist at once; the result equals one pass."""
    from adaptok_cli.models import tinytok
    tok = load_tokenizer(str(small_tok_path))
    x = torch.rand(5, 3, 72, 40) * 2 - 1                     # 9 latent rows: stripes of 8 and 1
    whole_z, s = tok.encode(x[:1])
    whole_z2, _ = tok.encode(x[1:], s)
    whole_x, _ = tok.decode(torch.cat([whole_z, whole_z2]))
    monkeypatch.setattr(tinytok, "STRIPE_PIXELS", 8 * 40)    # one latent row (8 frame rows) per stripe
    z, s = tok.encode(x[:1])
    z2, _ = tok.encode(x[1:], s)
    out, _ = tok.decode(torch.cat([z, z2]))
    torch.testing.assert_close(torch.cat([z, z2]), torch.cat([whole_z, whole_z2]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, whole_x, atol=1e-5, rtol=1e-5)
    as_bytes, _ = tok.decode(torch.cat([z, z2]), None, uint8=True)   # converted stripe by stripe: same bytes
    assert as_bytes.dtype == torch.uint8 and torch.equal(as_bytes, tinytok.to_uint8(out.clone()))


def test_weights_are_hashed_once_while_unchanged(tmp_path, monkeypatch):
    """A large VAE's weights are read once per process for its fingerprint, however often it is named;
    a changed file is hashed again."""
    import adaptok_cli.models.tokenizer_base as tk
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 5000)
    first = tk.file_fingerprint(f)
    reads = []
    monkeypatch.setattr(tk, "open", lambda *a, **k: reads.append(a[0]) or open(*a, **k), raising=False)
    assert tk.file_fingerprint(f) == first and reads == []
    f.write_bytes(b"b" * 5000)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert tk.file_fingerprint(f) != first and reads == [f]


def test_tokenizer_specs_that_name_nothing_say_what_is_accepted(tmp_path):
    """A wrong --tokenizer says what each kind it could be needs (exit 69, one line), and the help of
    every command that takes one names every kind."""
    from adaptok_cli.defaults import TOKENIZER_KINDS
    from adaptok_cli.errors import EXIT_UNAVAILABLE, ModelUnavailableError
    from test_cli import one_line_error, run
    for kind in ("tinytok", ".safetensors", "diffusers", "pipeline", "vae/", "hf:ORG/REPO", "Cosmos", "encoder.jit"):
        assert kind in TOKENIZER_KINDS
    for cmd in ("compress", "eval", "calibrate", "train-lit"):
        p = run(cmd, "--help")
        assert p.returncode == 0 and " ".join(TOKENIZER_KINDS.split()) in " ".join(p.stdout.split()), cmd
    (tmp_path / "empty").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    (tmp_path / "vae" / "w.safetensors").write_bytes(b"")
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("")
    cases = {"wan": "unknown tokeniser 'wan': give a built-in name",
             str(tmp_path / "nope"): "not found: give a built-in name",
             str(tmp_path / "empty"): "config.json and .safetensors weights, a pipeline folder vae/config.json, "
                                      "a Cosmos-Tokenizer folder encoder.jit and decoder.jit",
             str(tmp_path / "vae" / "config.json"): f"name the folder (--tokenizer {tmp_path / 'vae'})",
             str(tmp_path / "vae" / "w.safetensors"): f"name the folder (--tokenizer {tmp_path / 'vae'})",
             str(tmp_path / "pipe"): "a pipeline folder (model_index.json) without vae/config.json",
             str(tmp_path / "notes.txt"): "not a tokeniser: give a built-in name"}
    for spec, want in cases.items():
        with pytest.raises(ModelUnavailableError) as e:
            load_tokenizer(spec)
        assert want in str(e.value) and e.value.exit_code == EXIT_UNAVAILABLE, (spec, str(e.value))
    clip = tmp_path / "c.mp4"
    write_video(clip, static_frames(3, 32, 32))
    line = one_line_error(run("compress", clip, "--tokenizer", tmp_path / "empty", "-o", tmp_path / "c.atok"),
                          EXIT_UNAVAILABLE)
    assert "encoder.jit and decoder.jit" in line and not (tmp_path / "c.atok").exists()
    line = one_line_error(run("calibrate", clip, "--tokenizer", tmp_path / "vae" / "config.json"), EXIT_UNAVAILABLE)
    assert "name the folder" in line
