"""The tokeniser protocol every family implements, and how a weights file is known (its fingerprint).

The families themselves (tokenizer.py, diffusers_tok.py) import this; the loader that chooses among
them (tokenizer.KINDS) imports them: the import graph has no cycle.
"""
from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

import torch

from adaptok_cli.models import cache
from adaptok_cli.core import layout


def host_frames(x: torch.Tensor, uint8: bool) -> torch.Tensor:
    """Decoded frames (T, 3, H, W) to the CPU. uint8 frames, the ones written out, are laid out channels
    last (memory (T, H, W, 3), as video frames are) on the device before the one copy, so the host never
    transposes them; the shape and values are the same. From a GPU they land in pinned memory (a copy
    at full speed) and this waits for them: the caller reads them next."""
    if not uint8:
        return x.cpu()
    x = x.contiguous(memory_format=torch.channels_last)
    if x.device.type != "cuda":
        return x
    try:
        out = torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, pin_memory=True)
    except RuntimeError:          # no pinned memory to be had: the plain copy
        return x.cpu()
    out.copy_(x, non_blocking=True)
    torch.cuda.current_stream(x.device).synchronize()
    return out


_FINGERPRINTS: dict[str, str] = {}
FINGERPRINT = re.compile(r"[0-9a-f]{16}")
KEEP_FROM_BYTES = 1 << 26    # files this large in all keep their hash across processes (hashing them takes seconds)


def file_fingerprint(*paths) -> str:
    """sha256 of the files' bytes (16 hex digits), hashed once while the files stay the same (path,
    inode, size, mtime, ctime): within a process a large VAE is named, checked and loaded without
    being read thrice, and across processes (from KEEP_FROM_BYTES) the cache keeps it (cache.py)."""
    ident = cache.file_identity(paths)
    key = repr(ident)
    if key not in _FINGERPRINTS:
        keep = sum(size for _, _, _, size, _, _ in ident) >= KEEP_FROM_BYTES
        stored = cache.get("fingerprints", ident) if keep else None
        fp = stored.get("sha256") if stored else None
        if not (isinstance(fp, str) and FINGERPRINT.fullmatch(fp)):
            h = hashlib.sha256()
            for p in paths:
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            fp = h.hexdigest()[:16]
            if keep:
                cache.put("fingerprints", ident, {"sha256": fp})
        _FINGERPRINTS[key] = fp
    return _FINGERPRINTS[key]


class Posterior(NamedTuple):
    """A VAE's posterior over latents, each (t, C, h, w) float32 on the CPU: its mean (what encode
    gives) and its log-variance (compress --store-logvar keeps it so a trainer can sample)."""
    mean: torch.Tensor
    logvar: torch.Tensor

    @staticmethod
    def cat(parts: list) -> "Posterior":
        """Posteriors of consecutive latent frames joined in time."""
        return Posterior(torch.cat([p.mean for p in parts]), torch.cat([p.logvar for p in parts]))


class Tokenizer:
    """The protocol. Subclasses set the attributes and implement encode/decode; a tokeniser with a
    posterior (a VAE) sets has_posterior and implements encode_posterior too."""

    name: str                 # what the container records, e.g. "tinytok" or "cosmos:CV4x8x8"
    source: str               # "builtin" (shipped, by name) or "file" (a file or folder the user named)
    fingerprint: str          # hash of the weights
    time_factor: int
    space_factor: int
    pad_multiple: int         # frame sides are padded to a multiple of this
    channels: int
    scale: torch.Tensor       # (C,) per-channel latent scale: the unit of the masking threshold
    stateful: bool
    measured_scale = True     # False: scale is a placeholder, and the rule's unit needs `adaptok calibrate`
    chunks_per_call = 1       # a stateless tokeniser may code this many whole chunks in one call (encode_many)
    has_posterior = False     # True: encode_posterior gives the log-variance too (deterministic ones have none)

    def frames_for(self, n_latent: int, at_start: bool) -> int:
        """Frames that make n_latent latent frames, at the start of a video or later (layout.py)."""
        return layout.frames_for(n_latent, self.time_factor, layout.starts_stream(at_start, self.stateful))

    def latents_for(self, n_frames: int, at_start: bool = True) -> int:
        """Latent frames n_frames need (the last group padded), at the start of a video or later."""
        return layout.latents_for(n_frames, self.time_factor, layout.starts_stream(at_start, self.stateful))

    def encode(self, frames: torch.Tensor, state=None):
        raise NotImplementedError

    def encode_posterior(self, frames: torch.Tensor, state=None) -> tuple[Posterior, object]:
        """-> (Posterior, state): encode()'s latents as its mean, with the log-variance beside them."""
        raise NotImplementedError(f"tokeniser {self.name} has no posterior")

    def decode(self, latents: torch.Tensor, state=None, uint8=False):
        """-> (frames in [-1, 1], or uint8 0..255 with uint8=True (laid out by host_frames), state), on the CPU."""
        raise NotImplementedError

    def identity(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "time_factor": self.time_factor,
                "space_factor": self.space_factor, "channels": self.channels}
