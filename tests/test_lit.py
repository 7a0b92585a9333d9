"""LIT: the shipped weights, the exactness of kept positions, chunking, and the training command."""
import json
import subprocess
from pathlib import Path
import sys

import numpy as np
import pytest
import torch

from adaptok_cli.core import lit as lit_module

import adaptok_cli as atk
from adaptok_cli.format.container import LitInfo
from adaptok_cli.core.lit import LIT, LITConfig, Inpainter, load_lit, project_l1
from adaptok_cli.core.masking import HoldFill, gather_kept
from adaptok_cli.measure.metrics import psnr
from adaptok_cli.models.matching import LIT_FROM_THRESHOLD, shipped_lit
from adaptok_cli.models.tokenizer import load_tokenizer
from adaptok_cli.running.video import read_frames

from conftest import static_frames, write_video
from make_reference import LIT_REFERENCE, run_lit_reference
from waiting import HANG_GUARD


@pytest.fixture(scope="module")
def shipped():
    tok = load_tokenizer("tinytok")
    ref = shipped_lit(tok)
    assert ref is not None, "the package ships lit-tinytok.safetensors for the shipped tokeniser"
    return tok, (ref.load_lit(), ref.fingerprint)


def test_shipped_weights_reproduce_the_reference(shipped):
    tok, (model, fp) = shipped
    ref = np.load(LIT_REFERENCE)
    assert str(ref["fingerprint"]) == fp, "LIT weights changed: rerun tests/make_reference.py on purpose"
    held, mask, out = run_lit_reference(tok, Inpainter(model, tok.scale, fp))
    np.testing.assert_array_equal(mask, ref["mask"])
    np.testing.assert_allclose(held, ref["held"], atol=1e-4)
    np.testing.assert_allclose(out, ref["filled"], atol=1e-3)
    dropped = ~mask[:, None].repeat(out.shape[1], 1)
    assert np.abs(out - held)[dropped].mean() > 1e-3   # LIT did change the dropped positions


def test_kept_positions_pass_through_bit_exact():
    torch.manual_seed(0)
    lit = Inpainter(LIT(LITConfig(dim=32, layers=1)), torch.rand(16) + 0.5, "x")
    hold = HoldFill()
    for step in range(3):                        # across chunks, with C_fill carried over
        z = torch.randn(5, 16, 9, 13)
        mask = torch.rand(5, 9, 13) < 0.4
        if step == 0:
            mask[0] = True
        held = hold.fill(gather_kept(z, mask), mask)
        out = lit.fill(held, mask)
        m = mask[:, None].expand_as(z)
        assert torch.equal(out[m], z[m])
        assert not torch.equal(out[~m], held[~m])


def random_lit(seed=0, std=0.5, **cfg):
    """A small LIT with random output weights: a model whose corrections are not zero."""
    torch.manual_seed(seed)
    model = LIT(LITConfig(dim=32, layers=1, **cfg))
    torch.nn.init.normal_(model.out.weight, std=std)
    return model


def test_lit_runs_few_distinct_shapes_whatever_the_number_dropped():
    """Every count of dropped positions used to give the last MLP a new input shape, and the CPU kernel
    library keeps one compiled kernel per shape: memory grew chunk after chunk of a long video."""
    assert [lit_module.row_bucket(n) for n in (1, 64, 65, 300, 1024, 1025)] == [64, 64, 128, 512, 1024, 2048]
    model, shapes = random_lit(seed=1), set()
    model.layers[-1].mlp.register_forward_pre_hook(lambda mod, args: shapes.add(args[0].shape[0]))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 16, 24, 40)
    for share in torch.linspace(0.05, 0.95, 40):
        mask = torch.rand(8, 24, 40, generator=g) > share
        mask[0] = True
        Inpainter(model, torch.ones(16), "x", threshold=0.5).fill(HoldFill().fill(gather_kept(z, mask), mask), mask)
    assert len(shapes) <= 6            # 40 different counts of dropped positions, a handful of shapes


def test_full_frames_meet_only_position_codes_seen_in_training():
    """Training crops are pos_period positions square. On a wider frame positions repeat with that period,
    so a frame made of two identical halves gets two identical fills (no unseen position codes)."""
    model = random_lit(pos_period=16)
    z = torch.randn(6, 16, 8, 16)
    mask = torch.rand(6, 8, 16) < 0.5
    mask[0] = True
    z, mask = torch.cat([z, z], -1), torch.cat([mask, mask], -1)
    held = HoldFill().fill(gather_kept(z, mask), mask)
    out = Inpainter(model, torch.ones(16), "x", threshold=0.5).fill(held, mask)
    assert torch.equal(out[..., :16], out[..., 16:])
    assert not torch.equal(out, held)


def test_long_chunks_are_filled_span_by_span_as_trained():
    """A chunk longer than the training window is filled exactly as the same latents sent in spans."""
    model = random_lit(span=4)
    z = torch.randn(10, 16, 8, 8)
    mask = torch.rand(10, 8, 8) < 0.5
    mask[0] = True
    held = HoldFill().fill(gather_kept(z, mask), mask)
    whole = Inpainter(model, torch.ones(16), "x", threshold=0.5).fill(held, mask)
    spans = Inpainter(model, torch.ones(16), "x", threshold=0.5)
    parts = torch.cat([spans.fill(held[a:a + 4], mask[a:a + 4]) for a in (0, 4, 8)])
    assert torch.equal(whole, parts)
    one_pass = Inpainter(random_lit(span=10), torch.ones(16), "x", threshold=0.5).fill(held, mask)
    assert not torch.equal(whole, one_pass)      # the span does matter: LIT attends across it


def test_work_whose_output_is_unused_is_skipped_without_changing_the_fill(monkeypatch):
    """LIT runs only on the window x window tiles that hold a dropped position (tiles never see each
    other), and its last MLP only on dropped positions: the fill is what a full pass over every
    position gives, up to float rounding, odd frame sizes included."""
    model = random_lit(seed=2)
    z = torch.randn(12, 16, 13, 21)                 # 2 x 3 tiles of 8, the last row and column padded
    mask = torch.ones(12, 13, 21, dtype=torch.bool)
    mask[2:5, 9:13, 17:21] = torch.rand(3, 4, 4) < 0.5   # the bottom-right (padded) tile
    mask[10, 0, 0] = False                                # and, in the second span, the top-left one
    held = HoldFill().fill(gather_kept(z, mask), mask)
    tiles_run, tokens_in_mlp = [], []
    model.layers[0].register_forward_pre_hook(lambda mod, args: tiles_run.append(args[0].shape[0]))
    model.layers[-1].mlp.register_forward_pre_hook(lambda mod, args: tokens_in_mlp.append(args[0].shape[0]))
    skipped = Inpainter(model, torch.ones(16), "x", threshold=0.5).fill(held, mask)
    assert tiles_run == [1, 1]                        # one tile of six in each span
    # the last MLP ran on the dropped positions only, padded to a few fixed row counts (one kernel each)
    assert tokens_in_mlp == [lit_module.row_bucket(int((~m).sum())) for m in (mask[:8], mask[8:])] == [64, 64]
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a: forward(*a[:4]))   # every tile, every output computed
    full_pass = Inpainter(model, torch.ones(16), "x", threshold=0.5).fill(held, mask)
    torch.testing.assert_close(skipped, full_pass, rtol=0, atol=1e-5)   # fewer rows per matmul: rounding only
    assert (skipped - held).abs().max() > 1e-2
    nothing = torch.zeros(1, 3, 13, 21, dtype=torch.bool)               # no wanted output: no tile runs
    assert not forward(held[None, :3], mask[None, :3].float(), mask[None, :3].float(), torch.zeros(1, 2),
                     nothing).any()
    monkeypatch.setattr(lit_module, "TILE_BATCH", 1)                   # memory: one tile at a time, same fill
    one_by_one = Inpainter(model, torch.ones(16), "x", threshold=0.5).fill(held, mask)
    torch.testing.assert_close(one_by_one, full_pass, rtol=0, atol=1e-5)


def test_designs_not_shipped_are_refused_and_older_files_load(tmp_path):
    """Files written while the unshipped designs were options say False for them and load; a file that
    asks for one is refused in one line, not half-built."""
    from safetensors.torch import save_file
    from adaptok_cli.errors import ModelUnavailableError
    model = random_lit(seed=3)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    for name, extra, loads in (("old", {"bidirectional": False, "global_view": False}, True),
                               ("c", {"bidirectional": True, "global_view": True}, False)):
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"config": json.dumps({**model.cfg.to_dict(), **extra}),
                                                "tokenizer_fingerprint": "x"})
        if loads:
            assert load_lit(path)[0].cfg == model.cfg
        else:
            with pytest.raises(ModelUnavailableError, match="not shipped"):
                load_lit(path)


def test_fill_stays_within_the_threshold_of_the_held_value():
    """A dropped position changed by at most τ (mean over channels, scale units) since its held value;
    with the container's threshold, LIT's correction is projected into that bound."""
    torch.manual_seed(1)
    scale = torch.rand(16) + 0.5
    model = random_lit(seed=1, std=1.0)                       # a wild correction, to be bounded
    for unit in (None, torch.rand(16) + 0.1):                 # the rule's own unit, or the scale
        for tau in (0.0, 0.1, 0.5):
            lit = Inpainter(model, scale, "x", threshold=tau, unit=unit)
            z = torch.randn(4, 16, 8, 8)
            mask = torch.rand(4, 8, 8) < 0.5
            mask[0] = True
            held = HoldFill().fill(gather_kept(z, mask), mask)
            out = lit.fill(held, mask)
            change = ((out - held).abs() / (scale if unit is None else unit).view(1, -1, 1, 1)).mean(1)
            assert change[~mask].max() <= tau + 1e-5
            if tau > 0:
                assert change[~mask].max() > tau - 1e-3     # the bound is reached, not just zeroed


def test_l1_projection_is_exact_and_trainable_from_zero():
    """The projection matches a bisection on the soft-threshold level, leaves rows inside the ball alone,
    and passes gradient at a zero correction (where LIT starts training)."""
    torch.manual_seed(2)
    d = torch.randn(300, 16)
    radius = torch.rand(300, 1) * 8
    p = project_l1(d, radius)
    lo, hi = torch.zeros(300, 1), d.abs().amax(-1, keepdim=True)
    for _ in range(60):
        mid = (lo + hi) / 2
        over = (d.abs() - mid).clamp_min(0).sum(-1, keepdim=True) > radius
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    inside = d.abs().sum(-1, keepdim=True) <= radius
    expect = torch.where(inside, d, d.sign() * (d.abs() - hi).clamp_min(0))
    assert (p - expect).abs().max() < 1e-4
    assert torch.equal(p[inside[:, 0]], d[inside[:, 0]])
    zero = torch.zeros(3, 16, requires_grad=True)
    project_l1(zero, torch.tensor([[0.5], [2.0], [float("inf")]])).sum().backward()
    assert torch.equal(zero.grad, torch.ones(3, 16))


def test_small_and_large_chunks_decode_alike(tmp_path, shipped):
    frames = static_frames(61, 64, 96)
    src = write_video(tmp_path / "a.mkv", frames)
    ref = read_frames(src)
    scores = {}
    for chunk in (1, 64):
        atk.compress(src, tmp_path / f"c{chunk}.atok", chunk=chunk, threshold=0.3)
        atk.decompress(tmp_path / f"c{chunk}.atok", tmp_path / f"c{chunk}.mkv")
        out = read_frames(tmp_path / f"c{chunk}.mkv")
        assert out.shape == ref.shape
        scores[chunk] = float(np.mean([psnr(a, b) for a, b in zip(ref, out)]))
    assert abs(scores[1] - scores[64]) <= 0.3, scores


@pytest.mark.slow
def test_training_command_runs_two_steps_on_generated_latents(tmp_path, small_tok_path):
    data = tmp_path / "clips"
    data.mkdir()
    write_video(data / "a.mp4", static_frames(45, 128, 160))
    write_video(data / "b.mp4", static_frames(29, 128, 160, seed=3))      # held out for validation
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "adaptok_cli.training.lit", "--data", data, "--tokenizer", small_tok_path,
         "--frame-cache", tmp_path / "frames", "--cache", tmp_path / "latents", "--out", tmp_path / "run",
         "--sizes", "128", "--batch", "2", "--crop", "8", "--threads", "1", "--val-clips", "1", *a],
        capture_output=True, text=True, timeout=HANG_GUARD)
    p = run("--steps", "2", "--val-every", "1", "--channel-weights", "decoder")
    assert p.returncode == 0, p.stderr
    weights = [float(w) for w in p.stdout.split("decoder channel weights ")[1].splitlines()[0].split()]
    assert len(weights) == 16 and min(weights) >= 0 and abs(sum(weights) / 16 - 1) < 0.01
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ck["step"] == 2
    assert ck["model"]["out.weight"].abs().sum() > 0      # LIT starts at zero correction and did move
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["step"] == 2
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert log[-1]["step"] == 2 and "val_loss" in log[-1]
    p = run("--export", tmp_path / "lit.safetensors")
    assert p.returncode == 0, p.stderr
    model, meta = load_lit(tmp_path / "lit.safetensors")
    assert meta["tokenizer_fingerprint"] == load_tokenizer(str(small_tok_path)).fingerprint
    assert meta["step"] == "2"
    p = run("--steps", "1", "--lr", "1e-12", "--init", tmp_path / "lit.safetensors", "--out", tmp_path / "tuned")
    assert p.returncode == 0, p.stderr                     # a fine-tune starts from the given weights
    tuned = torch.load(tmp_path / "tuned" / "last.pt", weights_only=False)["ema"]
    assert all(torch.allclose(tuned[k], v, atol=1e-6) for k, v in model.state_dict().items())


def test_default_threshold_on_the_samples(tmp_path):
    """The static sample keeps <= 5% of tokens after its first latent frame; the noise sample >= 90%."""
    root = Path(__file__).resolve().parents[1] / "sample_videos"
    rates = {}
    for name in ("static_ball", "noise"):
        atk.compress(root / f"{name}.mp4", tmp_path / f"{name}.atok")
        mask = torch.cat(_masks(tmp_path / f"{name}.atok"))
        assert bool(mask[0].all())
        rates[name] = mask[1:].float().mean().item()
    assert rates["static_ball"] <= 0.05 and rates["noise"] >= 0.90, rates


def test_lit_runs_only_where_it_measured_better(tmp_path, shipped):
    """Below LIT_FROM_THRESHOLD decompression hold-fills (LIT earned nothing there); from it up, LIT fills."""
    src = write_video(tmp_path / "a.mkv", static_frames(21, 64, 96))
    for tau, same in ((LIT_FROM_THRESHOLD * 0.7, True), (LIT_FROM_THRESHOLD, False), (0.6, False)):
        atk.compress(src, tmp_path / "a.atok", threshold=tau, force=True)
        with atk.open(tmp_path / "a.atok") as f:
            lit, hold = f.dense(fill="lit"), f.dense(fill="hold")
        mask = torch.cat(_masks(tmp_path / "a.atok"))
        assert not bool(mask.all())
        assert torch.equal(lit, hold) == same, tau


def _masks(path):
    """The mask of every chunk of a container."""
    with atk.open(path) as f:
        return [f.sparse(i)[0] for i in range(f.num_chunks)]


def test_containers_made_with_an_earlier_shipped_lit_decode_with_it(tmp_path, monkeypatch, shipped):
    """A new LIT ships as lit-NAME.safetensors; earlier ones stay beside it under their fingerprint, so a
    container is filled by the LIT it records, and a LIT that is not shipped is refused (69)."""
    import shutil

    from adaptok_cli import errors
    from adaptok_cli.models import matching as models
    from adaptok_cli.core.lit import save_lit
    tok, (_, current_fp) = shipped
    shutil.copy(models.WEIGHTS_DIR / "lit-tinytok.safetensors", tmp_path / "lit-tinytok.safetensors")
    save_lit(random_lit(seed=5, channels=16), tmp_path / "lit-tinytok-old.safetensors", tok.fingerprint)
    save_lit(random_lit(seed=6, channels=16), tmp_path / "lit-tinytok-other.safetensors", "another tokeniser")
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(models, "_CACHE", {})
    old_fp = models.ModelRef(tmp_path / "lit-tinytok-old.safetensors").fingerprint
    other_fp = models.ModelRef(tmp_path / "lit-tinytok-other.safetensors").fingerprint
    assert models.shipped_lit(tok).fingerprint == current_fp                     # what compress records
    assert models.inpainter_for(tok, 0.3, LitInfo(old_fp))[0].fingerprint == old_fp
    assert models.inpainter_for(tok, 0.3, None)[0].fingerprint == current_fp
    for fp in (other_fp, "0" * 16):          # trained for another tokeniser, or not shipped at all
        with pytest.raises(errors.ModelUnavailableError, match="not installed"):
            models.inpainter_for(tok, 0.3, LitInfo(fp, "lit-tinytok"))


def test_latent_cache_is_keyed_by_clip_and_size_not_by_place(tmp_path, small_tok_path):
    """A cache built for one list of clips or sizes is never read for another (it once was: by list index)."""
    from adaptok_cli.training.data import build_cache, latent_cache
    tok = load_tokenizer(str(small_tok_path))
    data = tmp_path / "clips"
    data.mkdir()
    write_video(data / "a.mp4", static_frames(9, 64, 64))
    write_video(data / "b.mp4", static_frames(9, 64, 64, seed=3))
    both = latent_cache(tok, build_cache(data, tmp_path / "frames", (64,)), tmp_path / "latents")
    (data / "a.mp4").unlink()
    only_b = latent_cache(tok, build_cache(data, tmp_path / "frames", (64,)), tmp_path / "latents")
    assert len(both) == 2 and len(only_b) == 1
    assert np.array_equal(only_b[0], both[1]) and not np.array_equal(only_b[0], both[0])


def test_train_lit_refuses_other_outputs_and_warns_when_lit_does_not_help(tmp_path, monkeypatch):
    """-o must name a .safetensors file (exit 2, before any work); a LIT whose held-out gain over
    hold-fill is not positive is written, with a warning that says what to do."""
    from typer.testing import CliRunner

    from adaptok_cli.cli.commands import app
    from adaptok_cli.training import user_lit
    from test_cli import one_line_error, run
    clip = write_video(tmp_path / "c.mp4", static_frames(5))
    line = one_line_error(run("train-lit", clip, clip, "-o", tmp_path / "lit.pt"), 2)
    assert "lit.pt" in line and ".safetensors" in line and not list(tmp_path.glob("lit.pt*"))

    def fake(tok, clips, output, opts, progress=None):
        return user_lit.TrainLitReport(str(output), 10, 10, len(clips), "last 1 clip(s)", 1.0, 1.2, gain_db)
    monkeypatch.setattr(user_lit, "train_lit", fake)
    for gain_db, warned in ((-0.79, True), (0.0, True), (0.4, False)):
        res = CliRunner().invoke(app, ["train-lit", str(clip), str(clip), "-o", str(tmp_path / "lit.safetensors")])
        assert res.exit_code == 0 and ("warning: this LIT does no better than hold-fill" in res.stderr) == warned, res.stderr
