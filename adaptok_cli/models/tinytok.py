"""The built-in video tokeniser network: a tiny causal 4x8x8 autoencoder with 16 latent channels.

Each latent frame covers a group of 4 frames (the first latent frame covers frame 0 alone, which
is repeated 4 times). The 4 frames of a group are space-to-depth'ed and stacked in channels, so
almost all work happens at 1/8 resolution. Temporal context comes from memory blocks that see the
previous group's features; their state is carried across calls, so encoding a clip chunk by chunk
gives exactly the latents of encoding it whole.
"""
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from adaptok_cli.models.modelcheck import check_fields, integer, one_of


@dataclass
class TinyTokConfig:
    latent_channels: int = 16
    width: int = 128        # channels of the 1/8-resolution trunk
    shallow: int = 64       # channels of the 1/4-resolution layers
    enc_blocks: int = 2     # (memory block, block) pairs in the encoder
    dec_blocks: int = 3     # (memory block, block) pairs in the decoder
    group: int = 4          # frames per latent frame
    patch: int = 8          # pixels per latent side

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "TinyTokConfig":
        """A config read from a file, every field checked first (ValueError naming the field)."""
        check_fields(d, CONFIG_FIELDS, "tinytok", CONFIG_RULES)
        return cls(**d)


# What a TinyTok config may say. The network downsamples by 8 with three fixed 2x steps, so patch is 8;
# shallow is halved at 1/2 resolution. Widths and depths bound what a config can make us build (the
# built-in is 128/64 wide, 2 and 3 pairs deep).
CONFIG_FIELDS = {"latent_channels": integer(1, 1024), "width": integer(1, 1024), "shallow": integer(2, 1024),
                 "enc_blocks": integer(0, 16), "dec_blocks": integer(0, 16), "group": integer(1, 16),
                 "patch": one_of(8)}
CONFIG_RULES = [("shallow", lambda d: d.get("shallow", 64) % 2 == 0, "must be even (it is halved)")]


def conv(cin, cout, k=3):
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class Block(nn.Module):
    """Residual pair of 3x3 convs."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(conv(c, c), nn.ReLU(inplace=True), conv(c, c))

    def forward(self, x):
        return F.relu(x + self.conv(x))


class MemBlock(nn.Module):
    """Residual conv that also sees the previous group's input: the only temporal path."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(conv(2 * c, c), nn.ReLU(inplace=True), conv(c, c))

    def forward(self, x, past):
        return F.relu(x + self.conv(torch.cat([x, past], 1)))


# The full-resolution layers (encoder stem, decoder head) run in horizontal stripes of at most this many
# pixels per frame group, each with a halo of rows that covers their receptive field, so a large frame's
# activations never exist at once and the result equals one pass (up to float rounding; tested). The
# 1/8-resolution trunk, whose receptive field is large, always runs whole: it is small.
STRIPE_PIXELS = 1 << 18
STEM_HALO = 16      # frame rows: the stem's 3x3 convs at 1/2 and 1/4 resolution reach 2 + 8 rows
HEAD_HALO = 2       # latent rows: the head's 3x3 convs at 1/4 and 1/2 resolution reach 1 + 1/2 of one


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Frames in [-1, 1] -> uint8 0..255 (rounded), in place where it can."""
    return x.clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)


def in_stripes(fn, x, halo: int, unit: int, scale: float, pixels: int):
    """fn over horizontal stripes of x (N, C, H, W), each widened by `halo` rows on both sides and cut
    back after; stripe heights are multiples of `unit` rows; fn maps H rows to H * scale rows."""
    n, c, h, w = x.shape
    per_row = w * max(1.0, scale) ** 2          # pixels of the larger side (input or output) per input row
    rows = max(unit, int(pixels // per_row) // unit * unit)
    if rows >= h:
        return fn(x)
    out = None
    for a in range(0, h, rows):
        lo, hi = max(0, a - halo), min(h, a + rows + halo)
        y = fn(x[:, :, lo:hi])
        if out is None:     # filled stripe by stripe: no list of stripes to join at the end
            out = y.new_empty(*y.shape[:2], round(h * scale), y.shape[3])
        out[:, :, round(a * scale):round(min(h, a + rows) * scale)] = \
            y[:, :, round((a - lo) * scale):round((min(h, a + rows) - lo) * scale)]
    return out


def shift_groups(x, groups, state):
    """Previous group's features for each group of x ((B*G, C, H, W)); state holds the last group."""
    bg, c, h, w = x.shape
    x = x.view(bg // groups, groups, c, h, w)
    first = torch.zeros_like(x[:, :1]) if state is None else state
    past = torch.cat([first, x[:, :-1]], 1)
    return past.reshape(bg, c, h, w), x[:, -1:].detach()


class Trunk(nn.Module):
    """Alternating memory blocks and blocks at 1/8 resolution, with streaming state."""

    def __init__(self, c, pairs):
        super().__init__()
        self.mem = nn.ModuleList(MemBlock(c) for _ in range(pairs))
        self.block = nn.ModuleList(Block(c) for _ in range(pairs))

    def forward(self, x, groups, state):
        state = state or [None] * len(self.mem)
        new_state = []
        for mem, block, s in zip(self.mem, self.block, state):
            past, last = shift_groups(x, groups, s)
            new_state.append(last)
            x = block(mem(x, past))
        return x, new_state


class Encoder(nn.Module):
    """Group of frames -> 1/2 (thin) -> 1/4 -> 1/8 trunk -> latents."""

    def __init__(self, cfg: TinyTokConfig):
        super().__init__()
        g, s = cfg.group, cfg.shallow
        self.at_half = nn.Sequential(conv(g * 3 * 4, s // 2), nn.ReLU(inplace=True))
        self.at_quarter = nn.Sequential(conv(2 * s, s, 1), nn.ReLU(inplace=True), Block(s))
        self.down = conv(4 * s, cfg.width, 1)
        self.trunk = Trunk(cfg.width, cfg.enc_blocks)
        self.out = conv(cfg.width, cfg.latent_channels)

    def stem(self, x):
        """(N, group*3, H, W) in [-1, 1], or uint8 (converted here, stripe by stripe)
        -> (N, width, H/8, W/8): the layers above 1/8 resolution."""
        if x.dtype == torch.uint8:
            x = x.float().div_(127.5).sub_(1)
        h = self.at_half(F.pixel_unshuffle(x, 2))
        h = self.at_quarter(F.pixel_unshuffle(h, 2))
        return self.down(F.pixel_unshuffle(h, 2))

    def forward(self, x, state=None):
        """x: (B, G, group*3, H, W) in [-1, 1] or uint8 -> latents (B, G, C, H/8, W/8)."""
        b, gr = x.shape[:2]
        h = in_stripes(self.stem, x.flatten(0, 1), STEM_HALO, 8, 1 / 8, STRIPE_PIXELS)
        h, state = self.trunk(h, gr, state)
        z = self.out(h)
        return z.view(b, gr, *z.shape[1:]), state


class Decoder(nn.Module):
    """Latents -> 1/8 trunk -> 1/4 -> 1/2 (thin) -> group of frames."""

    def __init__(self, cfg: TinyTokConfig):
        super().__init__()
        g, s = cfg.group, cfg.shallow
        self.inp = nn.Sequential(conv(cfg.latent_channels, cfg.width), nn.ReLU(inplace=True))
        self.trunk = Trunk(cfg.width, cfg.dec_blocks)
        self.up = conv(cfg.width, 4 * s, 1)
        self.at_quarter = nn.Sequential(Block(s), conv(s, 2 * s, 1))
        self.at_half = nn.Sequential(conv(s // 2, s // 2), nn.ReLU(inplace=True), conv(s // 2, g * 3 * 4))

    def head(self, h):
        """(N, width, h, w) -> (N, group*3, 8h, 8w): the layers above 1/8 resolution."""
        h = self.at_quarter(F.pixel_shuffle(self.up(h), 2))
        return F.pixel_shuffle(self.at_half(F.pixel_shuffle(h, 2)), 2)

    def forward(self, z, state=None, uint8=False):
        """z: (B, G, C, h, w) -> frames (B, G, group*3, 8h, 8w) in [-1, 1], or uint8 (converted stripe by
        stripe: a quarter of the memory)."""
        b, gr = z.shape[:2]
        h, state = self.trunk(self.inp(z.flatten(0, 1)), gr, state)
        head = (lambda t: to_uint8(self.head(t))) if uint8 else self.head
        x = in_stripes(head, h, HEAD_HALO, 1, 8, STRIPE_PIXELS)
        return x.view(b, gr, *x.shape[1:]), state


class TinyTok(nn.Module):
    """Encoder + decoder pair; frames are (B, T, 3, H, W) in [-1, 1]."""

    def __init__(self, cfg: TinyTokConfig = TinyTokConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def group_frames(self, x, at_start):
        """(B, T, 3, H, W) -> (B, G, group*3, H, W); at stream start frame 0 forms a group alone."""
        g = self.cfg.group
        if at_start:
            x = torch.cat([x[:, :1].expand(-1, g - 1, -1, -1, -1), x], 1)
        b, t = x.shape[:2]
        if t % g:
            raise ValueError(f"frame count {t} does not fill groups of {g}")
        return x.reshape(b, t // g, g * 3, *x.shape[3:])

    def encode(self, x, state=None):
        return self.encoder(self.group_frames(x, state is None), state)

    def decode(self, z, state=None, uint8=False):
        at_start = state is None
        x, state = self.decoder(z, state, uint8)
        b, gr = x.shape[:2]
        x = x.reshape(b, gr * self.cfg.group, 3, *x.shape[3:])
        if at_start:
            x = x[:, self.cfg.group - 1:]
        return x, state
