"""The latent A/B's plumbing (experiments/latent_ab.py) on generated 854x480 clips: each arm's data is
what its reader gives, the sparse arm's loss ignores dropped positions, and a rerun trains nothing."""
import json

import pytest
import torch

import adaptok_cli as atk
from experiments import latent_ab as ab

from conftest import static_frames, write_video


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """Two train clips and one dev clip, the whole experiment run for 2 steps, one seed."""
    root = tmp_path_factory.mktemp("latent_ab")
    for split, seeds in (("train", (0, 1)), ("dev", (2,))):
        (root / "data" / split).mkdir(parents=True)
        for s in seeds:
            write_video(root / "data" / split / f"clip{s}.mp4", static_frames(13, 480, 854, seed=s))
    (root / "data" / "train" / "notes.txt").write_text("not a video")
    argv = ["--data", str(root / "data"), "--out", str(root / "out"), "--steps", "2", "--seeds", "1",
            "--eval-every", "1", "--context", "2", "--crop", "8", "--batch", "2",
            "--results", str(root / "summary.json"), "--plot", str(root / "ab.png")]
    assert ab.main(argv) == 0
    return root, argv


def test_summary_covers_every_arm(done, capsys):
    root, argv = done
    s = json.loads((root / "summary.json").read_text())
    assert list(s["arms"]) == list(ab.ARMS) and s["skipped"] == ["notes.txt"]
    for arm, r in s["arms"].items():
        assert r["seeds"] == [0] and r["final_loss"][0] > 0 and r["load"]["cpu_s"] >= 0
    assert s["arms"]["fp32"]["minus_fp32"][0] == 0
    assert 0 < s["arms"]["sparse"]["train_data"]["positions_seen"] < 1      # the rule dropped some, kept some
    assert (root / "ab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert ab.main(argv) == 0                                               # resumed: nothing trains again
    assert "done " not in capsys.readouterr().out


def test_each_arm_reads_its_own_data(done):
    root, argv = done
    args = ab.parse(argv)
    cache = ab.cache_dir(args)
    names = ["clip0", "clip1"]
    arms = {a: ab.load_arm(a, cache, names) for a in ab.ARMS}
    ref = arms["fp32"]
    for a in ab.ARMS:
        assert [c.shape for c in arms[a]] == [c.shape for c in ref]
    assert ref[0].shape[2:] == (32, 57)                                      # 854x480 read at short side 256
    for r, b in zip(ref, arms["bf16"]):
        assert b.z.dtype == torch.bfloat16 and torch.allclose(b.z.float(), r.z, rtol=2 ** -8, atol=1e-6)
    for i, name in enumerate(names):
        with atk.open(cache / "train-atok" / f"{name}.atok") as f:
            mask = torch.cat([f.sparse(c)[0] for c in range(f.num_chunks)])
        sp, hold = arms["sparse"][i], arms["hold"][i]
        assert torch.equal(sp.idx >= 0, mask) and 0 < mask.float().mean() < 1
        kept = hold.z.permute(0, 2, 3, 1)[mask]
        assert torch.equal(kept, sp.tokens)                                  # hold-fill keeps stored tokens exactly
        assert not torch.equal(arms["lit"][i].z, hold.z)                     # LIT changed dropped positions
        assert torch.equal(arms["lit"][i].z.permute(0, 2, 3, 1)[mask], sp.tokens)
        z, m, kept = ab.window(sp, 0, 0, 0, 2, (32, 57))
        assert torch.equal(m.bool(), mask[:3]) and torch.equal(kept, m) and torch.all(z.permute(0, 2, 3, 1)[~mask[:3]] == 0)
        z, m, kept = ab.window(hold, 0, 0, 0, 2, (32, 57))
        assert torch.all(m == 1) and torch.all(kept == 1) and torch.equal(z, hold.z[:3])
        z, m, kept = ab.window(arms["hold-kept"][i], 0, 0, 0, 2, (32, 57))
        assert torch.all(m == 1) and torch.equal(kept.bool(), mask[:3]) and torch.equal(z, hold.z[:3])
    scale = torch.ones(16)
    wins = [(0, 0, 0, 0), (1, 1, 3, 5)]
    *_, loss_mask = ab.batch_of(arms["sparse"], wins, 2, 8, scale, masked=True)
    assert torch.equal(loss_mask.bool(), torch.stack([mask_of(arms["sparse"][i], t + 2, y, x) for i, t, y, x in wins]))
    *_, loss_mask = ab.batch_of(arms["hold-kept"], wins, 2, 8, scale, masked=True)
    assert torch.equal(loss_mask.bool(), torch.stack([mask_of(arms["sparse"][i], t + 2, y, x) for i, t, y, x in wins]))
    *_, loss_mask = ab.batch_of(arms["hold"], wins, 2, 8, scale, masked=False)
    assert torch.all(loss_mask == 1)


def mask_of(c, t, y, x):
    return c.idx[t, y:y + 8, x:x + 8] >= 0


def test_masked_loss_ignores_dropped_positions():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g)
    m = (torch.rand(2, 8, 8, generator=g) < 0.5).float()
    loss = ab.masked_mse(pred, target, m)
    moved = pred + 100 * (1 - m)[:, None]                                    # change only dropped positions
    assert torch.equal(ab.masked_mse(moved, target, m), loss)
    assert ab.masked_mse(pred + 0.1 * m[:, None], target, m) != loss         # kept positions count
    assert torch.allclose(ab.masked_mse(pred, target, torch.ones_like(m)), ((pred - target) ** 2).mean())
    kept = m.bool()
    assert torch.allclose(loss, ((pred - target).permute(0, 2, 3, 1)[kept] ** 2).mean())
