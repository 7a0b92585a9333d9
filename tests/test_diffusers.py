"""diffusers video VAEs as tokenisers: tiny random models saved with save_pretrained (no network, no
downloaded weights), checked against the models' own encode and decode, through the whole CLI."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import adaptok_cli as atk  # noqa: E402
from adaptok_cli.models import calibration  # noqa: E402
from adaptok_cli import errors  # noqa: E402
from adaptok_cli.format.container import AtokReader  # noqa: E402
from adaptok_cli.errors import ModelUnavailableError  # noqa: E402
from adaptok_cli.models.tokenizer import load_tokenizer, spec_fingerprint  # noqa: E402
from adaptok_cli.running.video import VideoReader  # noqa: E402
from conftest import round_trip, static_frames, write_video  # noqa: E402
from test_cli import child_env, one_line_error, run  # noqa: E402

# six families: Wan 2.1 and 2.2 (its own causal cache: streams; 2.2 patched 2x2, residual), CogVideoX,
# HunyuanVideo, Mochi and Cosmos (causal, coded chunk by chunk; Mochi 6x temporal; Cosmos with its Haar
# patching), LTX-Video (non-causal decoder, 8x temporal and 32x spatial)
FAMILIES = {
    "wan": ("AutoencoderKLWan", dict(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     temperal_downsample=[False, True, True])),
    "wan2.2": ("AutoencoderKLWan", dict(base_dim=8, decoder_base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                        temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
                                        out_channels=12, patch_size=2)),
    "cogvideox": ("AutoencoderKLCogVideoX", dict(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                                 layers_per_block=1, norm_num_groups=4)),
    "hunyuanvideo": ("AutoencoderKLHunyuanVideo", dict(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                                       layers_per_block=1, norm_num_groups=4)),
    "mochi": ("AutoencoderKLMochi", dict(encoder_block_out_channels=(32, 32, 32, 32),
                                         decoder_block_out_channels=(32, 32, 32, 32), latent_channels=4,
                                         layers_per_block=(1, 1, 1, 1, 1), act_fn="silu")),
    "ltx": ("AutoencoderKLLTXVideo", dict(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                          layers_per_block=(1, 1, 1, 1, 1), decoder_block_out_channels=(8, 8, 8, 8),
                                          decoder_layers_per_block=(1, 1, 1, 1, 1))),
    "cosmos": ("AutoencoderKLCosmos", dict(latent_channels=4, encoder_block_out_channels=(8, 8, 8, 8),
                                           decode_block_out_channels=(8, 8, 8, 8), attention_resolutions=(),
                                           resolution=64, num_layers=1, temporal_compression_ratio=4,
                                           latents_mean=None, latents_std=None)),
}
FACTORS = {"wan": (4, 8), "wan2.2": (4, 16), "cogvideox": (4, 8), "hunyuanvideo": (4, 8), "mochi": (6, 8), "ltx": (8, 32), "cosmos": (4, 8)}


def save_vae(name, folder):
    cls, cfg = FAMILIES[name]
    torch.manual_seed(0)
    model = getattr(diffusers, cls)(**cfg).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def vae(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, folder, save_vae(request.param, folder)


def clip(t, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, h, w, generator=g) * 2 - 1


def test_latents_and_frames_are_the_models_own(vae):
    name, folder, model = vae
    tok = load_tokenizer(str(folder), "cpu", "fp32")
    assert (tok.time_factor, tok.space_factor) == FACTORS[name] and tok.channels == 4
    assert tok.stateful == name.startswith("wan")
    x = clip(1 + 2 * tok.time_factor)
    z, _ = tok.encode(x)
    with torch.no_grad():
        own = model.encode(x.permute(1, 0, 2, 3)[None]).latent_dist.mode()[0].permute(1, 0, 2, 3)
        own_frames = model.decode(own.permute(1, 0, 2, 3)[None]).sample[0].permute(1, 0, 2, 3).clamp(-1, 1)
    torch.testing.assert_close(z, own, rtol=1e-4, atol=1e-5)
    frames, _ = tok.decode(z)     # frames in [-1, 1]; the oneDNN 3-D convolutions round apart (measured 1.3e-5)
    torch.testing.assert_close(frames, own_frames, rtol=1e-4, atol=5e-5)


def test_reduced_precision_runs_on_the_cpu(tmp_path):
    """--dtype bf16 runs the VAE in bfloat16 (what a GPU would use); latents come back float32 and close."""
    save_vae("wan", tmp_path)
    x = clip(5)
    full, _ = load_tokenizer(str(tmp_path), "cpu", "fp32").encode(x)
    tok = load_tokenizer(str(tmp_path), "cpu", "bf16")
    assert next(tok.vae.parameters()).dtype == torch.bfloat16
    half, _ = tok.encode(x)
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert (half - full).abs().max() < 0.05 * full.abs().max() + 1e-3
    frames, _ = tok.decode(half, uint8=True)
    assert frames.dtype == torch.uint8 and frames.shape == (5, 3, 64, 64)


def test_wan_chunk_by_chunk_equals_one_pass(tmp_path):
    save_vae("wan", tmp_path)
    tok = load_tokenizer(str(tmp_path), "cpu", "fp32")
    x = clip(1 + 4 * 5, seed=1)
    whole, _ = tok.encode(x)
    state, parts = None, []
    for a, b in ((0, 1), (1, 5), (5, 13), (13, 21)):  # the first frame alone (what 480p gets), then 4, 8, 8
        z, state = tok.encode(x[a:b], state)
        parts.append(z)
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-4, atol=1e-5)
    one, _ = tok.decode(whole)
    state, frames = None, []
    for i in range(len(whole)):
        f, state = tok.decode(whole[i:i + 1], state)
        frames.append(f)
    torch.testing.assert_close(torch.cat(frames), one, rtol=1e-4, atol=1e-5)


def test_wan_one_frame_clip_and_one_latent_chunks(tmp_path):
    """A stream whose first call holds its first frame alone: a one-frame clip, --chunk 1, and every
    frame size above 512x512 (ENCODE_PIXELS gives one latent frame per call). Wan's adapter once split
    the empty rest of that call into one empty group, which crashed its encoder."""
    from adaptok_cli.core.codec import Codec, Rule
    model = save_vae("wan", tmp_path)
    tok = load_tokenizer(str(tmp_path), "cpu", "fp32")
    x = clip(9, seed=3)
    with torch.no_grad():
        own = model.encode(x.permute(1, 0, 2, 3)[None]).latent_dist.mode()[0].permute(1, 0, 2, 3)
    torch.testing.assert_close(tok.encode(x[:1])[0], own[:1], rtol=1e-4, atol=1e-5)
    frames = [np.asarray(f.permute(1, 2, 0).add(1).mul(127.5).round().byte()) for f in x]
    for n, chunk, counts in ((1, 4, [1]), (9, 1, [1, 4, 4])):
        chunks = list(Codec(tok, Rule(threshold=0.0)).encoder().chunks(iter(frames[:n]), chunk))
        assert [c.frames for c in chunks] == counts


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wan", "wan2.2"])
def test_wan_at_480p_streams_like_one_pass(tmp_path, video_480p, name):
    """Calibrate, compress and decompress 854x480 (the size of issue 28's crash): compress codes one
    latent frame per call, its first frame alone, and decompress one latent frame per call; the
    container's latents are those of Wan's own one-pass encode (to int8 rounding) and the decoded
    frames those of its one-pass decode of them (chunked == whole at the size users use)."""
    from adaptok_cli.core.codec import to_tensor
    from adaptok_cli.models.tinytok import to_uint8
    from adaptok_cli.running.video import read_frames
    model = save_vae(name, tmp_path / name)
    tok, ours = round_trip(str(tmp_path / name), video_480p, tmp_path, chunk=2, threshold=0.0)
    x = to_tensor(list(read_frames(video_480p)), tok.pad_multiple).float().div(127.5).sub(1)
    with torch.no_grad():
        own = model.encode(x.permute(1, 0, 2, 3)[None]).latent_dist.mode()[0].permute(1, 0, 2, 3)
    with atk.open(tmp_path / "a.atok") as f:
        dense = f.dense()
    step = float(own.abs().amax()) / 127                 # int8 quantisation, per channel and chunk
    torch.testing.assert_close(dense, own, rtol=0, atol=0.5 * step + 1e-4)
    with torch.no_grad():
        whole = model.decode(dense.permute(1, 0, 2, 3)[None]).sample[0].permute(1, 0, 2, 3).clamp(-1, 1)
    want = to_uint8(whole)[:, :, :480, :854].permute(0, 2, 3, 1).numpy()
    assert np.abs(ours.astype(int) - want).max() <= 1           # float order only: one level of rounding


SLOW_AT_480P = ("cogvideox", "mochi")      # over 10 s on one loaded core (13 and 39 s measured)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_AT_480P else n
                                  for n in FAMILIES if not n.startswith("wan")])
def test_round_trip_at_480p(tmp_path, video_480p, name):
    """Every family coding chunks as clips of their own, at 854x480 through calibrate, compress and
    decompress (Wan's is the test above): frame count, size and latent grid come back."""
    save_vae(name, tmp_path / name)
    tok, _ = round_trip(str(tmp_path / name), video_480p, tmp_path, chunk=2)
    assert tok.class_name == FAMILIES[name][0]


@pytest.mark.parametrize("name", ["cogvideox", "ltx"])
def test_several_chunks_per_call_equal_one_each(tmp_path, name):
    """A stateless VAE may code whole chunks as one batch (what --device cuda does for small frames):
    the same chunks, frame counts and latents as one call per chunk, the short last chunk included."""
    from adaptok_cli.core.codec import Codec, Rule
    save_vae(name, tmp_path)
    tok = load_tokenizer(str(tmp_path), "cpu", "fp32")
    frames = [np.asarray(f.permute(1, 2, 0).add(1).mul(127.5).round().byte()) for f in clip(4 * tok.frames_for(2, True) + 3)]
    runs = {}
    for k in (1, 3):
        tok.chunks_per_call = k
        runs[k] = list(Codec(tok, Rule(threshold=0.0)).encoder().chunks(iter(frames), 2))
    assert [c.frames for c in runs[3]] == [c.frames for c in runs[1]] == [tok.frames_for(2, True)] * 4 + [3]
    for one, batched in zip(runs[1], runs[3]):
        torch.testing.assert_close(batched.latents, one.latents, rtol=0, atol=2 * float(one.qscale.max()))
    batch = tok.encode_many([torch.as_tensor(clip(9, seed=s)) for s in (1, 2)])
    torch.testing.assert_close(batch[1], tok.encode(clip(9, seed=2))[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cogvideox", "ltx"])
def test_store_logvar_batches_chunks_as_means_do(tmp_path, name):
    """--store-logvar keeps a stateless VAE's batching (several whole chunks per call): the same masks,
    kept values and log-variances as one call per chunk, up to float rounding (measured: rounding only)."""
    from adaptok_cli.core.codec import Codec, Rule
    save_vae(name, tmp_path)
    tok = load_tokenizer(str(tmp_path), "cpu", "fp32")
    frames = [np.asarray(f.permute(1, 2, 0).add(1).mul(127.5).round().byte()) for f in clip(3 * tok.frames_for(2, True) + 2)]
    calls, encode_many = [], tok.encode_many
    tok.encode_many = lambda clips, **kw: calls.append(len(clips)) or encode_many(clips, **kw)
    runs, batches = {}, {}
    for k in (1, 3):
        tok.chunks_per_call, calls[:] = k, []
        runs[k] = list(Codec(tok, Rule(threshold=0.0), logvar=True).encoder().chunks(iter(frames), 2))
        batches[k] = list(calls)
    assert batches == {1: [1, 1, 1, 1], 3: [3, 1]}      # the short last chunk is coded alone
    assert [c.frames for c in runs[3]] == [c.frames for c in runs[1]] == [tok.frames_for(2, True)] * 3 + [2]
    for one, batched in zip(runs[1], runs[3]):
        assert torch.equal(batched.mask, one.mask) and batched.logvar is not None
        torch.testing.assert_close(batched.latents, one.latents, rtol=0, atol=2 * float(one.qscale.max()))
        torch.testing.assert_close(batched.logvar, one.logvar, rtol=1e-4, atol=1e-4)
    whole = tok.encode_many([torch.as_tensor(clip(9, seed=s)) for s in (1, 2)], posterior=True)[1]
    alone = tok.encode_posterior(clip(9, seed=2))[0]
    torch.testing.assert_close(whole.mean, alone.mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(whole.logvar, alone.logvar, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def odd_clip(tmp_path_factory):
    src = tmp_path_factory.mktemp("odd") / "in.mp4"
    write_video(src, static_frames(14, 37, 51))              # odd sides, 14 frames: no 1 + 4k, no 1 + 8k
    return src


def test_any_size_and_frame_count_round_trip(vae, odd_clip, tmp_path, monkeypatch):
    """Calibrate, compress, inspect and decompress (Python API): size and frame count come back."""
    name, folder, _ = vae
    monkeypatch.setenv("ADAPTOK_CACHE", str(tmp_path / "cache"))
    tok = load_tokenizer(str(folder))
    with pytest.raises(ModelUnavailableError, match="adaptok calibrate --tokenizer"):
        atk.compress(odd_clip, tmp_path / "a.atok", tokenizer=str(folder))
    calibration.save(calibration.calibrate(tok, [odd_clip]), calibration.stored_path(tok))
    atk.compress(odd_clip, tmp_path / "a.atok", tokenizer=str(folder), chunk=2)
    info = atk.inspect(tmp_path / "a.atok")
    assert info.frames == 14 and (info.width, info.height) == (51, 37)
    with AtokReader(tmp_path / "a.atok") as r:
        ident = r.header["tokenizer"]
        assert ident["class"] == FAMILIES[name][0] and ident["fingerprint"] == spec_fingerprint(str(folder))
        assert r.header["unit_name"] == "decoder"
        np.testing.assert_allclose(r.header["unit"], calibration.find(tok).unit("decoder").numpy())
    atk.decompress(tmp_path / "a.atok", tmp_path / "b.y4m", tokenizer=str(folder))
    with VideoReader(tmp_path / "b.y4m") as r:
        frames = list(r)
    assert len(frames) == 14 and frames[0].shape == (37, 51, 3)


@pytest.mark.slow
def test_the_cli_from_calibration_to_frames(tmp_path, odd_clip):
    """The user's path (docs/TOKENIZERS.md): calibrate, compress, decompress; a mismatched tokeniser is
    refused with one line and exit 69 (uncalibrated: the API test above, missing: test_security)."""
    wan, cog = tmp_path / "wan", tmp_path / "cog"
    save_vae("wan", wan)
    save_vae("cogvideox", cog)
    env = {**child_env(), "ADAPTOK_CACHE": str(tmp_path / "cache")}
    p = run("calibrate", "--tokenizer", wan, odd_clip, "--json", env=env)
    assert p.returncode == 0, p.stderr
    cal = json.loads(p.stdout)
    assert len(cal["unit"]) == 4 and cal["clips"] == 1
    p = run("compress", odd_clip, "--tokenizer", wan, "-o", tmp_path / "a.atok", "-q", env=env)
    assert p.returncode == 0, p.stderr
    p = run("inspect", tmp_path / "a.atok", "--tokenizer", wan, "--json", env=env)
    assert p.returncode == 0 and json.loads(p.stdout)["tokenizer"]["name"] == "diffusers:AutoencoderKLWan"
    assert "fingerprint" in one_line_error(run("inspect", tmp_path / "a.atok", "--tokenizer", cog, env=env), 69)
    line = one_line_error(run("decompress", tmp_path / "a.atok", "--tokenizer", cog, "-o", tmp_path / "x.y4m", env=env), 69)
    assert "fingerprint" in line and not (tmp_path / "x.y4m").exists()
    p = run("decompress", tmp_path / "a.atok", "--tokenizer", wan, "-o", tmp_path / "b.y4m", "-q", env=env)
    assert p.returncode == 0, p.stderr
    with VideoReader(tmp_path / "b.y4m") as r:
        assert sum(1 for _ in r) == 14


def test_probed_factors_are_kept_across_processes(tmp_path, monkeypatch):
    """A second load of the same files skips the probe (tens of seconds for a published VAE on a CPU);
    an entry that is damaged, or whose shape no probe could give, is ignored and the probe runs."""
    from adaptok_cli.models import cache
    from adaptok_cli.models.diffusers_tok import DiffusersTokenizer
    monkeypatch.setenv("ADAPTOK_CACHE", str(tmp_path / "cache"))
    save_vae("ltx", tmp_path / "v")
    probes = []
    encode_clip = DiffusersTokenizer._encode_clip
    monkeypatch.setattr(DiffusersTokenizer, "_encode_clip", lambda self, x: probes.append(len(x)) or encode_clip(self, x))
    factors = lambda t: (t.time_factor, t.space_factor, t.channels, t.pad_multiple)
    first = factors(load_tokenizer(str(tmp_path / "v")))
    assert probes == [25] and first == (8, 32, 4, 32)
    assert factors(load_tokenizer(str(tmp_path / "v"))) == first and probes == [25]
    (entry,) = (tmp_path / "cache" / "probes").glob("*.json")
    ident = json.loads(entry.read_text())["ident"]
    assert json.loads(entry.read_text())["value"] == {"latent_shape": [4, 4, 2]}    # 1 + 24 / 8 latent frames
    for shape in ([6, 4, 2], [4, 0, 2], [4, 4, 3], [4, 4, 2.0], "x", [4, 4]):
        cache.put("probes", ident, {"latent_shape": shape})      # well-formed entries, impossible shapes
        assert factors(load_tokenizer(str(tmp_path / "v"))) == first
    entry.write_text(entry.read_text().replace('"latent_shape": [4', '"latent_shape": [5'))   # edited by hand
    assert factors(load_tokenizer(str(tmp_path / "v"))) == first and len(probes) == 8


def test_unsupported_or_unsafe_folders_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "os.system"}))
    with pytest.raises(ModelUnavailableError, match="not a supported video VAE"):
        load_tokenizer(str(tmp_path))
    save_vae("wan", tmp_path / "w")
    for f in (tmp_path / "w").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))                  # pickled weights could run code: never read
    with pytest.raises(ModelUnavailableError, match="safetensors"):
        load_tokenizer(str(tmp_path / "w"))


def test_pipeline_folder_and_hf_cache(tmp_path, monkeypatch):
    """A pipeline folder's vae/, and hf:ORG/REPO/vae from the local cache; an uncached repo names the command."""
    save_vae("cogvideox", tmp_path / "pipe" / "vae")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    assert load_tokenizer(str(tmp_path / "pipe")).name == "diffusers:AutoencoderKLCogVideoX"
    cache = tmp_path / "hub"
    snap = cache / "models--org--video" / "snapshots" / ("0" * 40)
    save_vae("cogvideox", snap / "vae")
    (cache / "models--org--video" / "refs").mkdir(parents=True)
    (cache / "models--org--video" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for mod in [m for m in sys.modules if m.startswith("huggingface_hub")]:
        monkeypatch.delitem(sys.modules, mod)           # it reads its cache folder at import
    tok = load_tokenizer("hf:org/video/vae")
    assert tok.fingerprint == load_tokenizer(str(tmp_path / "pipe")).fingerprint
    with pytest.raises(ModelUnavailableError, match="hf download org/missing"):
        load_tokenizer("hf:org/missing")


def test_without_the_extra_a_diffusers_tokenizer_names_it(tmp_path, monkeypatch):
    save_vae("wan", tmp_path)
    monkeypatch.setitem(sys.modules, "diffusers", None)     # as if not installed
    with pytest.raises(ModelUnavailableError, match=r"adaptok\[diffusers\]"):
        load_tokenizer(str(tmp_path))
    np.testing.assert_equal(load_tokenizer("tinytok").channels, 16)    # everything else works


def test_train_lit_resumes_and_decompress_uses_it(tmp_path, monkeypatch):
    """calibrate + a few steps of train-lit make a LIT that compress records and decompress runs."""
    from adaptok_cli.models.matching import ModelRef
    from adaptok_cli.training.user_lit import TrainLitOptions, run_dir, train_lit
    monkeypatch.setenv("ADAPTOK_CACHE", str(tmp_path / "cache"))
    save_vae("wan", tmp_path / "wan")
    clips = []
    for i in range(2):
        clips.append(tmp_path / f"c{i}.mp4")
        write_video(clips[-1], static_frames(13, 32, 48, seed=i))
    tok = load_tokenizer(str(tmp_path / "wan"))
    with pytest.raises(ModelUnavailableError, match="calibrate"):
        train_lit(tok, clips, tmp_path / "lit.safetensors")
    calibration.save(calibration.calibrate(tok, clips), calibration.stored_path(tok))
    opts = TrainLitOptions(steps=3, batch=2, crop=8, val_every=2)
    told = []
    report = train_lit(tok, clips, tmp_path / "lit.safetensors", opts, progress=lambda *a: told.append(a))
    assert (report.steps, report.clips, report.held_out) == (3, 2, "last 1 clip(s)")
    # progress: the clips' pixels as they are encoded, then the steps with the loss and held-out gain
    stages = [t[0] for t in told]
    assert stages == sorted(stages) and stages[0] == "encode" and told[-1][:3] == ("train", 3, 3)
    assert told[-1][3].startswith("loss ") and "held-out gain" in told[-1][3]
    assert report.hold_mse > 0 and np.isfinite(report.gain_db)
    opts.steps = 5                                            # the same command, longer: resumes at step 3
    assert train_lit(tok, clips, tmp_path / "lit.safetensors", opts).steps == 5
    log = [json.loads(line) for line in (run_dir(tmp_path / "lit.safetensors") / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 5]
    lit = ModelRef(tmp_path / "lit.safetensors")
    assert lit.metadata["tokenizer_fingerprint"] == tok.fingerprint and len(json.loads(lit.metadata["scale"])) == 4
    atk.compress(clips[0], tmp_path / "a.atok", tokenizer=str(tmp_path / "wan"), lit=str(lit.path), threshold=0.3)
    with AtokReader(tmp_path / "a.atok") as r:
        assert r.header["lit"]["fingerprint"] == lit.fingerprint
    with pytest.raises(ModelUnavailableError, match="--lit"):
        atk.decompress(tmp_path / "a.atok", tmp_path / "x.y4m", tokenizer=str(tmp_path / "wan"))
    res = atk.decompress(tmp_path / "a.atok", tmp_path / "b.y4m", tokenizer=str(tmp_path / "wan"), lit=str(lit.path))
    assert res.frames == 13 and res.timing["lit"] > 0
    atk.decompress(tmp_path / "a.atok", tmp_path / "c.y4m", tokenizer=str(tmp_path / "wan"), use_lit=False)
    save_vae("cogvideox", tmp_path / "cog")
    with pytest.raises(ModelUnavailableError, match="a LIT for tokeniser"):
        atk.compress(clips[0], tmp_path / "d.atok", tokenizer=str(tmp_path / "cog"), lit=str(lit.path))


def test_fingerprint_covers_exactly_the_files_diffusers_loads(tmp_path, monkeypatch):
    """A sharded folder: the fingerprint hashes config, shard index and the shards it names, which are
    exactly the files diffusers opens; a stray file is not hashed, a changed shard is; an index naming
    a .bin shard (pickle) or a path is refused before anything loads (issue 29: a .bin shard was loaded
    and left outside the fingerprint)."""
    from safetensors import torch as st_torch

    from adaptok_cli.models.diffusers_tok import WEIGHTS_INDEX, model_files
    from adaptok_cli.models.tokenizer import file_fingerprint
    folder = tmp_path / "wan"
    cls, cfg = FAMILIES["wan"]
    torch.manual_seed(0)
    getattr(diffusers, cls)(**cfg).save_pretrained(folder, safe_serialization=True, max_shard_size="30KB")
    shards = sorted(folder.glob("*-of-*.safetensors"))
    assert len(shards) > 2 and (folder / WEIGHTS_INDEX).is_file()
    (folder / "stray.safetensors").write_bytes((folder / shards[0].name).read_bytes())     # never loaded
    opened = []
    real = st_torch.load_file
    monkeypatch.setattr(st_torch, "load_file", lambda f, *a, **k: opened.append(Path(f).name) or real(f, *a, **k))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail(f"pickle loaded: {a}"))
    tok = load_tokenizer(str(folder))
    assert sorted(opened) == [s.name for s in shards]
    assert model_files(folder) == [folder / "config.json", folder / WEIGHTS_INDEX, *shards]
    assert tok.fingerprint == spec_fingerprint(str(folder)) == file_fingerprint(*model_files(folder))
    data = bytearray(shards[-1].read_bytes())
    data[-1] ^= 1                                                      # one weight changed: another model
    shards[-1].write_bytes(bytes(data))
    assert spec_fingerprint(str(folder)) != tok.fingerprint
    index = json.loads((folder / WEIGHTS_INDEX).read_text())
    for bad in (shards[0].with_suffix(".bin").name, "../" + shards[0].name):
        swapped = {k: bad if v == shards[0].name else v for k, v in index["weight_map"].items()}
        (folder / WEIGHTS_INDEX).write_text(json.dumps({**index, "weight_map": swapped}))
        with pytest.raises(ModelUnavailableError, match="not a .safetensors file in the folder"):
            load_tokenizer(str(folder))
    torch.save({}, folder / shards[0].with_suffix(".bin").name)
    (folder / WEIGHTS_INDEX).write_text(json.dumps({**index, "weight_map": {
        k: shards[0].with_suffix(".bin").name if v == shards[0].name else v for k, v in index["weight_map"].items()}}))
    write_video(tmp_path / "c.mp4", static_frames(5, 32, 32))
    line = one_line_error(run("compress", tmp_path / "c.mp4", "-o", tmp_path / "c.atok", "--tokenizer", folder),
                          errors.EXIT_UNAVAILABLE)
    assert ".bin" in line and not (tmp_path / "c.atok").exists()
