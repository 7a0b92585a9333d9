"""compress --store-logvar: the VAE posterior's log-variance kept at the kept positions (format 6), and
AtokFile / AtokDataset drawing latents from it. A tiny random Wan (tests/test_diffusers.py) at a real
frame size, 480x272: tiny weights, not tiny frames."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import adaptok_cli as atk  # noqa: E402
from adaptok_cli.format import container  # noqa: E402
from adaptok_cli.models import calibration  # noqa: E402
from adaptok_cli.format.atokfile import AtokDataset, Items  # noqa: E402
from adaptok_cli.core.codec import to_tensor  # noqa: E402
from adaptok_cli.format.container import AtokReader, write_bytes  # noqa: E402
from adaptok_cli.errors import CacheMismatchError, ContainerError, UsageError  # noqa: E402
from adaptok_cli.core.masking import gather_kept  # noqa: E402
from adaptok_cli.running.options import CompressOptions  # noqa: E402
from adaptok_cli.models.tokenizer import load_tokenizer  # noqa: E402
from adaptok_cli.running.video import read_frames  # noqa: E402
from conftest import static_frames, write_video  # noqa: E402
from test_cli import child_env, one_line_error, run  # noqa: E402
from test_diffusers import save_vae  # noqa: E402

WIDTH, HEIGHT, FRAMES = 480, 272, 13      # 1 + 3 x 4 frames: four latent frames of 34 x 60
COMPRESS = ("--keep-ratio", "0.5", "--chunk", "2")     # two chunks, half of the positions dropped


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The clip compressed twice with the same settings, with and without --store-logvar (the latter
    through the CLI), and the model's own posterior over the whole clip in one pass."""
    d = tmp_path_factory.mktemp("logvar")
    wan, cache = d / "wan", d / "cache"
    save_vae("wan", wan)
    src = write_video(d / "clip.mkv", static_frames(FRAMES, HEIGHT, WIDTH))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTOK_CACHE", str(cache))
        tok = load_tokenizer(str(wan), "cpu", "fp32")
        calibration.save(calibration.calibrate(tok, [src], short_side=64), calibration.stored_path(tok))
        atk.compress(src, d / "mean.atok", tokenizer=str(wan), device="cpu", loaded_tokenizer=tok, keep_ratio=0.5,
                     chunk=2)
        env = {**child_env(), "ADAPTOK_CACHE": str(cache)}
        p = run("compress", src, "--tokenizer", wan, *COMPRESS, "--store-logvar", "-o", d / "lv.atok", "-q",
                "--device", "cpu", env=env)
        assert p.returncode == 0, p.stderr
        posterior, _ = tok.encode_posterior(to_tensor(list(read_frames(src)), tok.pad_multiple))
    return {"dir": d, "wan": wan, "src": src, "mean": d / "mean.atok", "lv": d / "lv.atok", "tok": tok,
            "posterior": posterior, "env": env}


def test_the_log_variance_round_trips_at_the_kept_positions(made):
    """Format 6 holds the model's own log-variance at exactly the mean's kept positions, within the
    uint8 step (half a step of each channel's range in the chunk); the mean is what format 5 stores."""
    with AtokReader(made["lv"]) as r, AtokReader(made["mean"]) as plain:
        assert (r.version, plain.version) == (container.LOGVAR_VERSION, container.VERSION)
        assert (r.header.logvar, plain.header.logvar) == ("uint8", None)
        assert r.num_chunks == 2 and 0.3 < r.tokens_kept / r.tokens_total < 0.7
        first = 0
        for i in range(r.num_chunks):
            c, p = r.read_chunk(i), plain.read_chunk(i)
            assert torch.equal(c.mask, p.mask) and torch.equal(c.codes, p.codes) and p.logvar is None
            t = c.mask.shape[0]
            want = gather_kept(made["posterior"].logvar[first:first + t], c.mask)
            step = (want.amax(1) - want.amin(1)) / container.LOGVAR_STEPS
            assert c.logvar.shape == want.shape and c.logvar.dtype == torch.float32
            assert ((c.logvar - want).abs() <= step[:, None] / 2 + 1e-5).all()
            first += t
    assert (made["lv"].stat().st_size - made["mean"].stat().st_size) > 0


def test_inspect_shows_the_log_variance(made):
    p = run("inspect", made["lv"], "--json", env=made["env"])
    assert p.returncode == 0 and json.loads(p.stdout)["logvar"] == "uint8"
    assert atk.inspect(made["mean"]).to_dict()["logvar"] is None
    said = [run("inspect", made[k], env=made["env"]) for k in ("lv", "mean")]
    assert [p.returncode for p in said] == [0, 0]
    assert "log-variance: stored (uint8)" in said[0].stdout and "log-variance" not in said[1].stdout
    p = run("inspect", made["lv"], made["mean"], "--csv", env=made["env"])     # a training list can select on it
    rows = [line.split(",") for line in p.stdout.splitlines()]
    assert p.returncode == 0 and rows[0][-1] == "logvar" and [r[-1] for r in rows[1:]] == ["uint8", ""]


def test_samples_are_the_posterior_and_follow_the_generator(made):
    """latents="sample": mean + exp(logvar / 2) x noise, the noise from the generator (the same seed
    gives the same latents); the log-variance holds at dropped positions as the mean does."""
    with atk.open(made["lv"]) as f:
        mean, logvar = f.dense(), f.dense_logvar()
        draw = lambda seed: f.dense(latents="sample", generator=torch.Generator().manual_seed(seed))  # noqa: E731
        a, b, c = draw(1), draw(1), draw(2)
        assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == mean.shape == logvar.shape
        noise = (a - mean) / logvar.mul(0.5).exp()
        assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02
        torch.testing.assert_close(noise, torch.randn(mean.shape, generator=torch.Generator().manual_seed(1)),
                                   rtol=1e-3, atol=1e-3)
        mask = torch.cat([f.sparse(i)[0] for i in range(f.num_chunks)])
        dropped = ~mask[1:]
        assert dropped.any()
        held = logvar[1:].permute(1, 0, 2, 3)[:, dropped]
        assert torch.equal(held, logvar[:-1].permute(1, 0, 2, 3)[:, dropped])
        second = f.dense(1, 2, latents="sample", layout="CTHW", dtype=torch.bfloat16,
                         generator=torch.Generator().manual_seed(3))
        assert second.shape == (4, 2, 34, 60) and second.dtype == torch.bfloat16
        torch.testing.assert_close(f.dense_logvar(1), logvar[2:])
        m, tokens = f.sparse(0, latents="sample", generator=torch.Generator().manual_seed(4))
        assert tokens.shape == f.sparse(0)[1].shape and not torch.equal(tokens, f.sparse(0)[1])


def test_datasets_sample_deterministically_from_torchs_rng(made, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "lv.atok").write_bytes(made["lv"].read_bytes())
    items = {}
    for mode in ("dense", "sparse"):
        ds = AtokDataset(folder, mode=mode, latents="sample", layout="CTHW")
        torch.manual_seed(0)
        one = ds[0]
        torch.manual_seed(0)
        assert all(torch.equal(one[k], v) for k, v in ds[0].items() if isinstance(v, torch.Tensor))
        items[mode] = one
    mean = AtokDataset(folder)[0]["latents"]
    assert items["dense"]["latents"].shape == mean.transpose(0, 1).shape
    assert not torch.equal(items["dense"]["latents"], mean.transpose(0, 1))


def test_sampling_a_file_without_the_log_variance_is_refused(made, tmp_path):
    with atk.open(made["mean"]) as f:
        assert not f.has_logvar
        with pytest.raises(CacheMismatchError, match="store-logvar"):
            f.dense(latents="sample")
        with pytest.raises(CacheMismatchError, match="store-logvar"):
            f.dense_logvar()
        with pytest.raises(ValueError, match="latents must be"):
            f.dense(latents="mode")
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "mean.atok").write_bytes(made["mean"].read_bytes())
    with pytest.raises(CacheMismatchError, match="store-logvar"):     # at once, not in training
        AtokDataset(folder, latents="sample")
    with pytest.raises(CacheMismatchError):     # never skipped as a corrupt clip would be
        Items(latents="sample", on_error="skip").read(folder / "mean.atok")


def test_a_tokeniser_without_a_posterior_is_refused(small_tok_path, videos, tmp_path):
    """TinyTok is deterministic: --store-logvar is refused with one line (exit 2), and nothing is written."""
    line = one_line_error(run("compress", videos["static"], "--tokenizer", small_tok_path, "--store-logvar",
                              "-o", tmp_path / "a.atok"), 2)
    assert "--store-logvar" in line and "no posterior" in line and not (tmp_path / "a.atok").exists()
    with pytest.raises(UsageError, match="no posterior"):
        atk.compress(videos["static"], tmp_path / "b.atok", tokenizer=str(small_tok_path), store_logvar=True)


def test_asking_for_the_log_variance_makes_an_old_output_stale(made):
    from adaptok_cli.running.batch import stale_reason
    from adaptok_cli.running.pipeline import expected_settings
    opts = CompressOptions(keep_ratio=0.5, chunk=2, tokenizer=str(made["wan"])).check()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTOK_CACHE", str(made["dir"] / "cache"))
        want = expected_settings(CompressOptions(**{**vars(opts), "store_logvar": True}), made["tok"], made["src"])
        assert stale_reason(made["src"], made["mean"], expected_settings(opts, made["tok"], made["src"])) is None
        assert "logvar None (asked: uint8)" in stale_reason(made["src"], made["mean"], want)


def rewritten(made, monkeypatch, header_edit=None, block=None, version=None) -> bytes:
    """The logvar file's chunks written again through AtokWriter, changed on the way: the header map
    (header_edit), each log-variance block (block(bytes) -> bytes), or the version written."""
    with AtokReader(made["lv"]) as r:
        header = r.header.to_dict()
        chunks = [(c.mask, c.codes, c.qscale, r.entry(i).frames, c.logvar)
                  for i, c in enumerate(r.read_chunk(i) for i in range(r.num_chunks))]
        frames = r.frames
    if header_edit:
        header_edit(header)
    if block:
        encode = container.encode_logvar
        monkeypatch.setattr(container, "encode_logvar", lambda lv: block(encode(lv)))
    if version is not None:
        monkeypatch.setattr(container, "LOGVAR_VERSION", version)
    return write_bytes(header, chunks, frames)


@pytest.mark.parametrize("case, why", [
    ("same", None),
    ("cut", "chunk 0 size"),              # a block shorter than the header implies
    ("longer", "chunk 0 size"),           # longer: the payload size is fixed by (t, kept, C, quant, logvar)
    ("range", "log-variance range"),      # values the block can hold beyond -30..20
    ("nan", "log-variance range"),
    ("kind", "header field logvar"),      # an unknown storage
    ("version 5", "version and logvar disagree"),
])
def test_a_bad_log_variance_section_is_refused(made, monkeypatch, tmp_path, case, why):
    c = 4      # channels
    edits = {
        "cut": dict(block=lambda b: b[:-1]),
        "longer": dict(block=lambda b: b + b"\0" * 64),
        "range": dict(block=lambda b: b[:4 * c] + np.full(c, 1.0, "<f4").tobytes() + b[8 * c:]),
        "nan": dict(block=lambda b: np.full(c, np.nan, "<f4").tobytes() + b[4 * c:]),
        "kind": dict(header_edit=lambda h: h.update(logvar="fp8")),
        "version 5": dict(version=5),
    }
    data = rewritten(made, monkeypatch, **edits.get(case, {}))
    monkeypatch.undo()
    path = tmp_path / "x.atok"
    path.write_bytes(data)
    if why is None:
        assert data == made["lv"].read_bytes()      # the rewrite itself changes nothing
        return
    with pytest.raises(ContainerError, match=why):
        with AtokReader(path) as r:
            for i in range(r.num_chunks):
                r.read_chunk(i)
    p = run("verify", path, env=made["env"])
    assert p.returncode == 65 and why in p.stderr + p.stdout


def test_a_cut_file_keeps_its_log_variance_with_partial(made, tmp_path):
    """--partial walks the records of a cut version-6 file: the complete chunks come back whole."""
    data = made["lv"].read_bytes()
    with AtokReader(made["lv"]) as r:
        cut = r.entry(1).offset + 10
        want = r.read_chunk(0)
    (tmp_path / "cut.atok").write_bytes(data[:cut])
    with AtokReader(tmp_path / "cut.atok", partial=True) as r:
        assert r.salvaged and r.num_chunks == 1
        torch.testing.assert_close(r.read_chunk(0).logvar, want.logvar, rtol=0, atol=0)


def test_the_budget_covers_a_log_variance_block():
    """max_file_bytes, which shard members are held to, admits the largest version-6 payload."""
    lim = container.DEFAULT_LIMITS
    biggest = container.chunk_raw_size(1, lim.max_chunk_values, 1, lim.max_chunk_values, 1, "fp16", logvar=True)
    assert lim.max_file_bytes > lim.max_chunks * biggest


def test_only_vaes_with_a_gaussian_posterior_offer_one(tmp_path):
    """diffusers' Cosmos VAE encodes to a point (its IdentityDistribution): refused as TinyTok is."""
    from adaptok_cli.running.options import logvar_storage
    save_vae("cosmos", tmp_path)
    tok = load_tokenizer(str(tmp_path), "cpu", "fp32")
    assert not tok.has_posterior
    with pytest.raises(UsageError, match="no posterior"):
        logvar_storage(tok)


def test_decompress_reads_a_version_6_file_as_its_mean(made, tmp_path):
    """The log-variance changes nothing that decompress makes: the frames are those of the file without it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTOK_CACHE", str(made["dir"] / "cache"))
        for name in ("mean", "lv"):
            atk.decompress(made[name], tmp_path / f"{name}.y4m", tokenizer=str(made["wan"]), device="cpu",
                           loaded_tokenizer=made["tok"])
    assert np.array_equal(read_frames(tmp_path / "mean.y4m"), read_frames(tmp_path / "lv.y4m"))
