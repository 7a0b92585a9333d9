"""Which latent positions to keep, and how the decoder fills the rest: both sides of C_sel.

The selector compares each latent frame with C_sel, the last kept value at each position *as the
decoder will see it* (after quantisation). Because the decoder's hold-fill rebuilds exactly the
same C_sel from the container, the error of a held position can never drift past the threshold.
"""
from __future__ import annotations

import math

import torch


def quantise(z: torch.Tensor, mode: str):
    """Chunk-wise quantisation -> (codes, per-channel scale or None). int8 uses scale = max|z| / 127."""
    if mode == "fp16":
        return z.half(), None
    if mode != "int8":
        raise ValueError(f"unknown quantisation {mode!r}")
    qscale = z.abs().amax(dim=(0, 2, 3)).clamp_min(1e-8) / 127
    codes = torch.round(z / qscale[None, :, None, None]).clamp(-127, 127).to(torch.int8)
    return codes, qscale.float()


def dequantise(codes: torch.Tensor, qscale: torch.Tensor | None) -> torch.Tensor:
    """Inverse of quantise; codes may be (t, C, h, w) or (C, n)."""
    if qscale is None:
        return codes.float()
    return codes.float() * (qscale[:, None] if codes.dim() == 2 else qscale[None, :, None, None])


def change(z: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean over channels of |z - ref| in units of the tokeniser's per-channel scale: (C,h,w) -> (h,w)."""
    return ((z - ref).abs() / scale[:, None, None]).mean(0)


class Selector:
    """Encoder side: decides the mask latent frame by latent frame, keeping C_sel up to date.

    threshold: keep positions whose change exceeds it (content decides the rate);
    keep_ratio: keep the round(r * h * w) largest changes of every latent frame (the rate is fixed).
    The first latent frame of a stream, and every keyframe_interval-th one, is kept whole.
    """

    def __init__(self, scale, threshold=None, keep_ratio=None, keyframe_interval=0):
        if (threshold is None) == (keep_ratio is None):
            raise ValueError("give exactly one of threshold and keep_ratio")
        self.scale, self.threshold, self.keep_ratio = scale, threshold, keep_ratio
        self.keyframe_interval = keyframe_interval
        self.c_sel = None
        self.index = 0  # latent frames seen so far in the stream

    def is_keyframe(self, i):
        return i == 0 or (self.keyframe_interval > 0 and i % self.keyframe_interval == 0)

    def select(self, z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """z: raw latents (t,C,h,w); zq: the same after quantise/dequantise. Returns mask (t,h,w) bool."""
        t, _, h, w = z.shape
        mask = torch.ones(t, h, w, dtype=torch.bool)
        for i in range(t):
            if not self.is_keyframe(self.index):
                d = change(z[i], self.c_sel, self.scale)
                if self.threshold is not None:
                    mask[i] = d > self.threshold
                else:
                    k = round(self.keep_ratio * h * w)
                    mask[i] = False
                    if k:
                        mask[i].view(-1)[d.view(-1).topk(k).indices] = True
                self.c_sel = torch.where(mask[i][None], zq[i], self.c_sel)
            else:
                self.c_sel = zq[i].clone()
            self.index += 1
        return mask


class HoldFill:
    """Decoder side: rebuilds dense latents, each dropped position holding its last kept value."""

    def __init__(self):
        self.c_sel = None

    def fill(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """values: (C, kept) dequantised kept latents in (t, h, w) order; mask: (t, h, w) -> (t, C, h, w)."""
        t, h, w = mask.shape
        c = values.shape[0]
        out = torch.empty(t, c, h, w)
        start = 0
        for i in range(t):
            m = mask[i]
            n = int(m.sum())
            frame = torch.zeros(c, h, w) if self.c_sel is None else self.c_sel.clone()
            frame[:, m] = values[:, start:start + n]
            start += n
            out[i] = frame
            self.c_sel = frame
        return out


def gather_kept(zq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(t, C, h, w) and (t, h, w) -> (C, kept), positions in (t, h, w) order."""
    return zq.permute(1, 0, 2, 3)[:, mask]


def packed_mask_bytes(n_positions: int) -> int:
    return math.ceil(n_positions / 8)
