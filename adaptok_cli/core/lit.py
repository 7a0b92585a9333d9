"""Latent Inpainting Transformer (LIT): rebuilds dropped latent positions at decompression.

Tokens are latent positions. Each layer attends spatially within windows of a latent frame, then
temporally (causally) across frames at each position, with the previous chunk's filled frames
(C_fill) as a prefix so chunk boundaries do not show. Input per token: the hold-filled latent, the
mask bit and a context flag, the container's threshold τ (or a flag for keep-ratio containers: there the
bound is unknown), plus sinusoidal (t, y, x) position embeddings. The correction of a dropped position
is projected onto the L1 ball that τ guarantees, in training as at decompression. Output replaces
dropped positions only: kept positions pass through bit-exact.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import save_file

from adaptok_cli.running.outputs import atomic_path
from adaptok_cli.errors import ModelUnavailableError
from adaptok_cli.models.modelcheck import check_fields, integer, mismatch, one_of


@dataclass
class LITConfig:
    channels: int = 16
    dim: int = 48
    layers: int = 2
    heads: int = 4
    window: int = 8     # spatial attention inside window x window tiles of a latent frame
    context: int = 2    # C_fill: filled latent frames carried over from the previous chunk
    # What training showed it, so that decompression never asks more: training crops are pos_period
    # positions square and span latent frames long. Spatial positions repeat with that period (a whole
    # number of windows), and longer chunks are filled span by span, carrying C_fill.
    pos_period: int = 16
    span: int = 8
    base: str = "hold"            # the fill LIT corrects: "hold" or "interp" (codec.LATENT_FILLS)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "LITConfig":
        """A config read from a file, every field checked first (ValueError naming the field). Designs
        tried and not shipped (RETIRED) are refused; files made while they were options say false for
        them, and load."""
        if isinstance(d, dict):
            d = dict(d)
            for key in RETIRED:
                value = d.pop(key, False)
                if value is not False:
                    raise ValueError(f"LIT config field {key} is {str(value)[:20]!r}: a design tried and not shipped "
                                     f"(docs/EXPERIMENTS.md)")
        check_fields(d, CONFIG_FIELDS, "LIT", CONFIG_RULES)
        return cls(**d)


# LIT designs tried and not shipped, whose code left with this name (docs/EXPERIMENTS.md names the commit
# that has it): temporal attention over the whole chunk; every token attending to a coarse view of its frame.
RETIRED = ("bidirectional", "global_view")
# What a LIT config may say: depths and widths bound what a file can make us build (the shipped LIT is
# 48 wide, 2 layers, 4 heads); the position embeddings split dim in four; positions repeat every
# pos_period, a whole number of windows; base is one of the decoder's fills (codec.LATENT_FILLS).
CONFIG_FIELDS = {"channels": integer(1, 1024), "dim": integer(4, 2048), "layers": integer(1, 64),
                 "heads": integer(1, 64), "window": integer(1, 64), "context": integer(0, 64),
                 "pos_period": integer(1, 4096), "span": integer(1, 1024), "base": one_of("hold", "interp")}
CONFIG_RULES = [
    ("dim", lambda d: d.get("dim", 48) % 4 == 0, "must be a multiple of 4 (its position embeddings)"),
    ("heads", lambda d: d.get("dim", 48) % d.get("heads", 4) == 0, "must divide dim"),
    ("pos_period", lambda d: d.get("pos_period", 16) % d.get("window", 8) == 0, "must be a multiple of window"),
]


def sinusoid(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) sin/cos features."""
    freqs = torch.exp(-math.log(1000.0) * torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    a = pos.float()[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], 1)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, causal=False):
        n, s, d = x.shape
        q, k, v = self.qkv(x).view(n, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.proj(y.transpose(1, 2).reshape(n, s, d))


class Layer(nn.Module):
    """Windowed spatial attention, causal temporal attention, MLP; all pre-norm residual."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm_s, self.norm_t, self.norm_m = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.spatial, self.temporal = Attention(dim, heads), Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x, rows=None):
        """x: (tiles, t, window², dim), tokens grouped tile by tile (so spatial attention needs no copy).

        rows, a (tiles, t, window²) bool, keeps only those tokens for the MLP and returns them (N, dim):
        in the last layer, the MLP of a token feeds nothing but that token's output.
        """
        g, t, s, d = x.shape
        x = x + self.spatial(self.norm_s(x).view(g * t, s, d)).view(g, t, s, d)
        # temporal: every position attends to itself in earlier frames
        y = self.temporal(self.norm_t(x).transpose(1, 2).reshape(g * s, t, d), causal=True)
        x = x + y.view(g, s, t, d).transpose(1, 2)
        if rows is not None:
            x = x[rows]
            x = F.pad(x, (0, 0, 0, row_bucket(len(x)) - len(x)))
        return x + self.mlp(self.norm_m(x))


def rate_features(threshold: float | None) -> tuple[float, float]:
    """What LIT is told about the rule that made the mask: (log τ relative to 0.2, 0) or (0, 1) for a budget."""
    return (0.0, 1.0) if threshold is None else (math.log(max(threshold, 1e-3) / 0.2), 0.0)


def bounded(delta: torch.Tensor, threshold, to_unit=1) -> torch.Tensor:
    """The one bound on a correction: a dropped position lies within mean-channel distance τ of its held
    value, so a (..., C, h, w) correction is projected onto the L1 ball of radius τ·C, in the rule's unit.

    to_unit: what turns delta's units into the rule's ((C, 1, 1)-broadcastable, or 1); the result is
    in delta's units. threshold: τ, None (a keep-ratio budget: no bound), or per sample a tensor that
    broadcasts against (..., h, w, C) (inf: no bound), as in training."""
    d = delta * to_unit
    if threshold is not None:
        d = project_l1(d.movedim(-3, -1), threshold * d.shape[-3]).movedim(-1, -3)
    return d / to_unit


TILE_BATCH = 32      # tiles of window x window positions run together (bounds memory at any frame size)


def row_bucket(n: int) -> int:
    """The last layer's MLP runs on the wanted tokens only, padded to this many rows (the next power of
    two, at least 64): torch's CPU kernels keep a compiled kernel per input shape, and one per count of
    dropped positions made memory grow chunk after chunk (1.1 GB over 300 chunks of 480p, measured)."""
    return max(64, 1 << (n - 1).bit_length())


class LIT(nn.Module):
    def __init__(self, cfg: LITConfig = LITConfig()):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(cfg.channels + 4, cfg.dim)
        self.layers = nn.ModuleList(Layer(cfg.dim, cfg.heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.channels)
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)

    def forward(self, held, mask, context, rate, wanted=None):
        """held: (B, T, C, h, w) in scale units; mask, context: (B, T, h, w) float; rate: (B, 2) from
        rate_features -> correction (B, T, C, h, w), not yet bounded.

        Tokens are grouped in window x window tiles that never see each other (spatial attention is
        within a tile, temporal attention at one position), so tiles run TILE_BATCH at a time (LIT's
        memory does not grow with the frame) and, given `wanted` (a (B, T, h, w) bool: which outputs
        will be used), only tiles holding a wanted position run, the last layer's MLP and the output
        head only at those positions. They get what a full pass gives them (up to float rounding), the
        rest zero.
        """
        b, t, c, h, w = held.shape
        ws, d = self.cfg.window, self.cfg.dim
        rate = rate[:, None, None, None, :].expand(b, t, h, w, 2).to(held)
        x = torch.cat([held.permute(0, 1, 3, 4, 2), mask[..., None], context[..., None], rate], -1)
        ph, pw = -h % ws, -w % ws
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
        H, W = h + ph, w + pw
        nh, nw = H // ws, W // ws
        pos = (sinusoid(torch.arange(H) % self.cfg.pos_period, d // 2).to(x),
               sinusoid(torch.arange(W) % self.cfg.pos_period, d // 2).to(x), sinusoid(torch.arange(t), d).to(x))
        tiles, ids, rows = to_tiles(x, ws), torch.arange(b * nh * nw, device=x.device), None
        if wanted is not None:
            rows = to_tiles(F.pad(wanted[..., None], (0, 0, 0, pw, 0, ph)), ws)[..., 0]
            ids = ids[rows.flatten(1).any(1)]           # tiles holding a wanted position
            if len(ids) == 0:
                return held.new_zeros(held.shape)
        out = []
        for a in range(0, len(ids), TILE_BATCH):
            g = ids[a:a + TILE_BATCH]
            xa = self.inp(tiles[g]) + self._tile_pos(g, nh, nw, pos)
            for i, layer in enumerate(self.layers):
                xa = layer(xa, rows[g] if rows is not None and i == len(self.layers) - 1 else None)
            n = len(xa) if rows is None else int(rows[g].sum())
            out.append(self.out(self.norm(xa))[:n])
        y = held.new_zeros(b * nh * nw, t, ws * ws, c)
        if rows is None:
            y[ids] = torch.cat(out)
        else:
            used = torch.zeros_like(rows)
            used[ids] = rows[ids]
            y[used] = torch.cat(out)
        y = y.view(b, nh, nw, t, ws, ws, c).permute(0, 3, 6, 1, 4, 2, 5).reshape(b, t, c, H, W)
        return y[..., :h, :w]

    def _tile_pos(self, g, nh, nw, pos):
        """Position embeddings of tiles g: (n, T, window², dim)."""
        ws, (py, px, pt) = self.cfg.window, pos
        ty, tx = (g % (nh * nw)) // nw, g % nw
        r = torch.arange(ws, device=g.device)
        y, x = py[ty[:, None] * ws + r], px[tx[:, None] * ws + r]                 # (n, ws, dim/2)
        yx = torch.cat([y[:, :, None].expand(-1, -1, ws, -1), x[:, None].expand(-1, ws, -1, -1)], -1)
        return yx.reshape(len(g), 1, ws * ws, -1) + pt[None, :, None]


def to_tiles(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, T, H, W, d) with H, W multiples of ws -> (B * H/ws * W/ws, T, ws², d): tokens grouped tile by tile."""
    b, t, H, W, d = x.shape
    return x.view(b, t, H // ws, ws, W // ws, ws, d).permute(0, 2, 4, 1, 3, 5, 6).reshape(-1, t, ws * ws, d)


def last_frames(x: torch.Tensor, k: int) -> torch.Tensor:
    """The last k frames (none for k = 0, where x[-0:] would give all)."""
    return x[x.shape[0] - k:]


def project_l1(delta: torch.Tensor, radius) -> torch.Tensor:
    """Euclidean projection of every row of delta (..., C) onto the L1 ball of the given radius.

    Sort-based, as in Duchi et al. (2008): rows inside the ball are returned unchanged. radius is a
    number or a tensor broadcastable to (..., 1) (inf: no bound); the projection is differentiable.
    """
    a = delta.abs()
    s = a.sort(-1, descending=True).values
    excess = s.cumsum(-1) - radius
    k = torch.arange(1, delta.shape[-1] + 1, dtype=delta.dtype)
    rho = (s > excess / k).sum(-1, keepdim=True).clamp_min(1)
    theta = (excess.gather(-1, rho - 1) / rho).clamp_min(0)
    # soft-thresholding by theta; rows inside the ball are passed through as they are, so that the gradient
    # at delta = 0 (where LIT starts training) is 1, not 0
    return torch.where(theta > 0, delta - torch.clamp(delta, -theta, theta), delta)


class Inpainter:
    """Streaming LIT: fills chunk after chunk, carrying C_fill; kept positions are never touched.

    With the container's threshold τ, a dropped position is known to lie within mean-channel distance
    τ (in the rule's unit, `unit`; None: the scale) of its held value: that is why it was dropped.
    LIT's correction is projected onto that L1 ball, so it can only move the fill towards where the
    truth must be. The model itself always works in scale units, as it was trained.
    """

    def __init__(self, model: LIT, scale: torch.Tensor, fingerprint: str, device="cpu", threshold=None,
                 unit: torch.Tensor | None = None):
        self.model, self.fingerprint = model.eval().to(device), fingerprint
        self.threshold, self.unit = threshold, unit
        self.scale = scale.view(1, -1, 1, 1)
        self.to_unit = 1 if unit is None else self.scale / unit.view(1, -1, 1, 1)   # scale units -> rule units
        self.device = torch.device(device)
        self.c_fill = None  # (k, C, h, w) last filled frames of the previous chunk, in scale units

    @torch.no_grad()
    def fill(self, held: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """held: (t, C, h, w) hold-filled latents; mask: (t, h, w) kept -> (t, C, h, w).

        The model always sees `context` frames before the chunk: C_fill, or at the start of a stream
        copies of its first latent frame (which is kept whole).
        """
        span = self.model.cfg.span
        if len(held) > span:        # as trained: span frames at a time, each with the last one's C_fill
            return torch.cat([self.fill(held[a:a + span], mask[a:a + span]) for a in range(0, len(held), span)])
        t, k = held.shape[0], self.model.cfg.context
        x = held / self.scale
        if self.c_fill is None:
            self.c_fill = x[:1].expand(k, -1, -1, -1)
        if bool(mask.all()):                   # nothing to fill: only the context moves on
            self.c_fill = last_frames(torch.cat([self.c_fill, x]), k)
            return held
        x = torch.cat([self.c_fill, x])
        m = torch.cat([torch.ones(k, *mask.shape[1:]), mask.float()])
        ctx = torch.cat([torch.ones(k), torch.zeros(t)])[:, None, None].expand_as(m)
        rate = torch.tensor([rate_features(self.threshold)])
        delta = self.model(*(v[None].to(self.device) for v in (x, m, ctx)), rate.to(self.device),
                           (m == 0)[None].to(self.device))[0].cpu()
        delta = bounded(delta[k:], self.threshold, self.to_unit)
        pred = (x[k:] + delta) * self.scale
        out = torch.where(mask[:, None], held, pred)
        self.c_fill = last_frames(torch.cat([self.c_fill, out / self.scale]), k)
        return out


def save_lit(model: LIT, path, tokenizer_fingerprint: str, extra: dict | None = None):
    tensors = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(model.cfg.to_dict()), "tokenizer_fingerprint": tokenizer_fingerprint, **(extra or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        tmp.chmod(0o644)


def load_lit(path, device="cpu"):
    """-> (LIT model, metadata). Safetensors only: nothing in a weights file can run code."""
    from adaptok_cli.format import safejson
    from adaptok_cli.models.tokenizer import MAX_CONFIG_JSON, read_safetensors
    try:
        tensors, meta = read_safetensors(path)
        cfg = LITConfig.from_dict(safejson.loads(meta["config"], MAX_CONFIG_JSON))
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise ModelUnavailableError(f"{path}: not a LIT weights file ({str(e)[:200]})") from None
    wrong = mismatch(lambda: LIT(cfg), {k: tuple(v.shape) for k, v in tensors.items()})
    if wrong:
        raise ModelUnavailableError(f"{path}: weights do not match their config ({wrong})")
    model = LIT(cfg)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.to(device).eval(), meta
