"""The rule's unit: TinyTok's shipped calibration, measuring and storing one, and containers that
record the unit they were made with."""
import numpy as np
import pytest
import torch

import adaptok_cli as atk
from adaptok_cli.models import calibration
from adaptok_cli.format.container import AtokReader
from adaptok_cli.errors import UsageError
from adaptok_cli.running.options import CompressOptions
from adaptok_cli.running.pipeline import expected_settings
from adaptok_cli.models.tokenizer import load_tokenizer
from conftest import noise_frames, static_frames, write_video


def test_shipped_calibration_is_for_the_shipped_tokenizer():
    tok = load_tokenizer("tinytok")
    cal = calibration.find(tok)
    assert cal is not None and cal.tokenizer_fingerprint == tok.fingerprint
    torch.testing.assert_close(cal.unit("spread"), tok.scale)           # the unit of formats 1 to 3
    assert cal.sensitivity.mean().item() == pytest.approx(1, abs=1e-5)
    assert cal.sensitivity.max() / cal.sensitivity.min() > 5            # the decoder uses channels unevenly
    u = cal.unit("decoder")
    assert u.log().mean().item() == pytest.approx(tok.scale.log().mean().item(), abs=1e-5)
    # a channel the decoder leans on gets a smaller unit relative to its spread: its changes count more
    ratio = u / tok.scale
    assert int(ratio.argmin()) == int(cal.sensitivity.argmax())


def test_measure_save_load(tmp_path, small_tok_path):
    tok = load_tokenizer(str(small_tok_path))
    x = torch.from_numpy(np.stack(noise_frames(9))).permute(0, 3, 1, 2).float() / 127.5 - 1
    z, _ = tok.encode(x)
    latents = [z, z * 2]
    cal = calibration.measure(tok, latents)
    both = torch.cat([latents[0], latents[1]]).transpose(0, 1).reshape(tok.channels, -1)
    torch.testing.assert_close(cal.spread, both.std(1, unbiased=False), rtol=1e-4, atol=1e-6)
    assert cal.sensitivity.shape == (tok.channels,) and bool((cal.sensitivity > 0).all())
    calibration.save(cal, tmp_path / "c.safetensors")
    back = calibration.load(tmp_path / "c.safetensors", tok)
    torch.testing.assert_close(back.spread, cal.spread)
    torch.testing.assert_close(back.sensitivity, cal.sensitivity)
    with pytest.raises(UsageError, match="another tokeniser"):
        calibration.load(tmp_path / "c.safetensors", load_tokenizer("tinytok"))
    cal.spread[3] = -1.0                                               # a hostile or broken file
    calibration.save(cal, tmp_path / "bad.safetensors")
    with pytest.raises(UsageError, match="positive"):
        calibration.load(tmp_path / "bad.safetensors", tok)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UsageError, match="not a calibration"):
        calibration.load(tmp_path / "junk.safetensors", tok)


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    path = tmp_path_factory.mktemp("unit") / "m.mp4"
    write_video(path, static_frames(17, 64, 96))
    return path


def test_containers_record_their_unit_and_decode_with_it(tmp_path, moving):
    tok = load_tokenizer("tinytok")
    a, b = tmp_path / "decoder.atok", tmp_path / "spread.atok"
    atk.compress(moving, a, threshold=0.25)
    atk.compress(moving, b, threshold=0.25, unit="spread")
    with AtokReader(a) as ra, AtokReader(b) as rb:
        assert ra.header["unit_name"] == "decoder" and rb.header["unit_name"] == "spread"
        np.testing.assert_allclose(ra.header["unit"], calibration.find(tok).unit("decoder").numpy())
        np.testing.assert_array_equal(rb.header["unit"], tok.scale.numpy())
        masks_a = [ra.read_chunk(i).mask for i in range(len(ra.chunks))]
        masks_b = [rb.read_chunk(i).mask for i in range(len(rb.chunks))]
    assert any(not torch.equal(x, y) for x, y in zip(masks_a, masks_b))   # the unit decides what is dropped
    for f in (a, b):
        atk.decompress(f, tmp_path / f"{f.stem}.y4m")
        assert (tmp_path / f"{f.stem}.y4m").stat().st_size > 0


def test_a_tokenizer_without_calibration_uses_its_spread(tmp_path, moving, small_tok_path):
    atk.compress(moving, tmp_path / "s.atok", tokenizer=str(small_tok_path))
    tok = load_tokenizer(str(small_tok_path))
    with AtokReader(tmp_path / "s.atok") as r:
        assert r.header["unit_name"] == "spread"
        np.testing.assert_array_equal(r.header["unit"], tok.scale.numpy())


def test_another_unit_makes_an_output_out_of_date(moving):
    tok = load_tokenizer("tinytok")
    a = expected_settings(CompressOptions().check(), tok, moving)
    b = expected_settings(CompressOptions(unit="spread").check(), tok, moving)
    assert a != b and a["unit"] != b["unit"]
    with pytest.raises(UsageError, match="--unit"):
        CompressOptions(unit="pixels").check()


def test_calibrate_probes_small_crops_spread_over_the_clips(tmp_path, small_tok_path):
    """calibrate at the size users use (854x480 shrunk to 256): the decoder is probed on at most
    SENSITIVITY_WINDOWS centre crops of PROBE_SIDE latent positions, taken from every clip, and
    progress ends at its total."""
    tok = load_tokenizer(str(small_tok_path))
    clips = [write_video(tmp_path / f"c{i}.mp4", static_frames(33, 480, 854, seed=i)) for i in range(3)]
    decoded, calls = [], []
    real_decode = tok.decode
    tok.decode = lambda z, *a, **k: decoded.append(tuple(z.shape)) or real_decode(z, *a, **k)
    cal = calibration.calibrate(tok, clips, progress=lambda done, total: calls.append((done, total)))
    side = calibration.PROBE_SIDE
    assert all(h <= side and w <= side for _, _, h, w in decoded)
    windows = len(decoded) // (tok.channels + 1)
    assert len(decoded) == windows * (tok.channels + 1) and cal.windows == windows
    # 3 clips of 33 frames: chunks of 8 and 1 latent frames each; the three full ones are all probed
    assert windows == 3 and decoded[0] == (calibration.SENSITIVITY_FRAMES, tok.channels, side, side)
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and calls[-1][0] == calls[-1][1] > 0


def test_evenly_spaced_windows_cover_the_whole_stream():
    for n_items, want in ((3, [0, 1, 2]), (16, [0, 2, 4, 6, 8, 10, 12, 14]), (100, [0, 8, 24, 32, 48, 64, 72, 88])):
        keep = calibration.EvenlySpaced(8)
        for i in range(n_items):
            keep.offer(lambda i=i: i)
        assert keep.result() == want and len(keep.items) < 16
