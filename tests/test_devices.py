"""Devices: which GPU a worker of -j N runs on, what share of one a Ray actor asks for, and containers
that move between devices whose arithmetic differs (emulated on the CPU; docs/SCALE.md)."""
from multiprocessing import get_context

import numpy as np
import pytest
import torch

import adaptok_cli as atk
from adaptok_cli.running import batch
from adaptok_cli.errors import UsageError
from adaptok_cli.measure.metrics import psnr

from conftest import static_frames, write_video


def test_workers_spread_over_the_visible_gpus():
    assert [batch.spread_device("cuda", i, 3) for i in range(7)] == \
        ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert [batch.spread_device("auto", i, 2) for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert batch.spread_device("cuda", 5, 1) == "cuda"           # one GPU: every worker shares it
    assert batch.spread_device("cuda:1", 4, 3) == "cuda:1"       # a GPU the user named stays named
    assert batch.spread_device("cpu", 4, 3) == "cpu"
    assert batch.spread_device("auto", 3, 0) == "auto"           # no GPU: auto stays the CPU's
    assert batch.spread_device("cuda", None, 3) == "cuda"        # not in a pool


def test_a_pool_worker_takes_the_gpu_of_its_slot(monkeypatch):
    """The pool's counter hands out slots 0, 1, 2, ...; a worker's job then runs on GPU slot mod N
    (the device count mocked: no CUDA here)."""
    slots = get_context("spawn").Value("i", 0)
    taken = [batch.take_slot(slots) for _ in range(5)]
    assert taken == [0, 1, 2, 3, 4]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    got = []
    for slot in taken:
        monkeypatch.setattr(batch, "_WORKER_SLOT", slot)
        got.append(batch.worker_device("cuda"))
    assert got == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert batch.worker_device("cpu") == "cpu"
    monkeypatch.setattr(batch, "_WORKER_SLOT", None)
    assert batch.worker_device("cuda") == "cuda"


def test_ray_gpu_share_follows_the_model(tmp_path, small_tok_path):
    (tmp_path / "vae").mkdir()
    assert batch.gpus_per_worker("tinytok") == 0.25
    assert batch.gpus_per_worker(str(small_tok_path)) == 0.25
    assert batch.gpus_per_worker(str(tmp_path / "vae")) == 1.0
    assert batch.gpus_per_worker("hf:Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == 1.0
    for bad in (0, -1, 1.5):
        with pytest.raises(UsageError):
            batch.check_gpus_per_worker(bad)
    for good in (None, 0.25, 1, 2):
        batch.check_gpus_per_worker(good)


def frames_of(path):
    with atk.open(path, fill="lit") as f:
        return np.concatenate(list(f.iter_frames()))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_a_container_decodes_within_a_margin_under_other_arithmetic(tmp_path):
    """Containers move between devices but are not byte-identical across them: a GPU's convolutions
    round differently. On the CPU, oneDNN on and off are two such arithmetics. The container made with
    one decodes under the other to nearly the same frames, and both make the same token rate to a few
    positions. Measured here: 90 dB or more between the decodes, token rates within 0.001 (on an H200
    against a CPU, issue 28 measured 63.5 dB and 0.00003: the margin below is the GPU's)."""
    src = write_video(tmp_path / "a.mkv", static_frames(13, 480, 854))
    atk.compress(src, tmp_path / "on.atok")
    with torch.backends.mkldnn.flags(enabled=False):
        atk.compress(src, tmp_path / "off.atok")
        other = frames_of(tmp_path / "on.atok")
    here = frames_of(tmp_path / "on.atok")
    with atk.open(tmp_path / "on.atok") as a, atk.open(tmp_path / "off.atok") as b:
        assert abs(a.token_rate - b.token_rate) < 0.005
    assert here.shape == other.shape == (13, 480, 854, 3)
    print(f"decodes agree to {psnr(here, other):.1f} dB")
    assert psnr(here, other) >= 60
