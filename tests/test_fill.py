"""The non-learned fills: hold and interp (temporal interpolation within a chunk, inside the τ bound)."""
import torch

from adaptok_cli.core.masking import HoldFill, InterpFill, Selector, change, dequantise, gather_kept, quantise


def stream(t=12, c=4, h=3, w=5, seed=0):
    """Latents drifting slowly with a jump, and the masks the real rule gives them at τ 0.3."""
    g = torch.Generator().manual_seed(seed)
    z = torch.cumsum(torch.randn(t, c, h, w, generator=g) * 0.2, 0)
    z[7:, :, 1, 2] += 3.0
    codes, qscale = quantise(z, "int8")
    zq = dequantise(codes, qscale)
    mask = Selector(torch.ones(c), threshold=0.3).select(z, zq)
    return z, zq, mask


def test_interp_keeps_kept_positions_and_stays_within_the_bound():
    z, zq, mask = stream()
    held = HoldFill().fill(gather_kept(zq, mask), mask)
    out = InterpFill(torch.ones(4), 0.3).fill(gather_kept(zq, mask), mask)
    kept = mask[:, None].expand_as(zq)
    assert torch.equal(out[kept], zq[kept])
    assert bool((change(out, held, torch.ones(4)) <= 0.3 + 1e-5).all())      # never further than τ from C_sel
    assert (out != held).any() and not mask.all()


def test_interp_moves_linearly_towards_the_next_kept_value():
    mask = torch.zeros(5, 1, 1, dtype=torch.bool)
    mask[0] = mask[4] = True
    values = torch.tensor([[0.0, 4.0]])                       # one channel, kept at t=0 and t=4
    out = InterpFill(torch.ones(1), None).fill(values, mask)  # no threshold: no bound (a keep-ratio file)
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    bounded = InterpFill(torch.ones(1), 0.5).fill(values, mask)
    assert torch.allclose(bounded[:, 0, 0, 0], torch.tensor([0.0, 0.5, 0.5, 0.5, 4.0]))


def test_interp_holds_where_nothing_later_is_kept_and_carries_across_chunks():
    mask = torch.zeros(6, 1, 1, dtype=torch.bool)
    mask[0] = mask[5] = True
    values = torch.tensor([[1.0, 6.0]])
    whole = InterpFill(torch.ones(1), None).fill(values, mask)
    f = InterpFill(torch.ones(1), None)
    first = f.fill(values[:, :1], mask[:3])                   # chunk 1: no later kept value yet: hold
    second = f.fill(values[:, 1:], mask[3:])                  # chunk 2: knows when the held value was kept
    assert torch.equal(first[:, 0, 0, 0], torch.ones(3))
    assert torch.allclose(second[:, 0, 0, 0], whole[3:, 0, 0, 0]) and torch.allclose(whole[3, 0, 0, 0], torch.tensor(4.0))
