"""The codec core: tokeniser + dropping rule + quantisation + fill, chunk by chunk.

    encode: frames -> pad/normalise -> tokeniser.encode -> quantise -> mask vs C_sel -> Encoded
    decode: Encoded (or a container Chunk) -> dequantise -> hold-fill (C_sel) -> LIT (C_fill) -> decode -> frames

A `Codec` names what is fixed for a stream (tokeniser, rule, quantisation); its `encoder()` and
`decoder()` carry the per-stream state (tokeniser state, C_sel, C_fill). compress/decompress, eval,
the benchmark, LIT training and the experiments all code through these two, so the chain exists once.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from itertools import chain, islice
from typing import Iterable, Iterator

import numpy as np
import torch

from adaptok_cli.core.masking import (HoldFill, InterpFill, Selector, as_numpy, dequantise, gather_kept, hold_gather,
                                      quantise)
from adaptok_cli.models.tinytok import to_uint8
from adaptok_cli.models.tokenizer import Tokenizer
from adaptok_cli.models.tokenizer_base import Posterior

# A stateful tokeniser encodes and decodes at most this many pixels of frames per call (at least one
# latent frame), so memory follows the frame size, not the chunk length: small frames still go several
# latent frames at a time, large ones one by one.
ENCODE_PIXELS = DECODE_PIXELS = 1 << 21
BATCH_PIXELS = 1 << 23       # frames x pixels of the chunks batched in one call (stateless tokenisers)


def to_tensor(frames: list, multiple: int) -> torch.Tensor:
    """uint8 (H, W, 3) frames -> uint8 (T, 3, H', W'), edge-padded to the tokeniser's multiple. Frames stay
    uint8, a quarter of float32, until the network reads them (Tokenizer.encode takes uint8 or [-1, 1]).
    Frames already on a device (staged()) are stacked and laid out there."""
    if isinstance(frames[0], torch.Tensor):
        x = torch.stack(frames).permute(0, 3, 1, 2)
        ph, pw = -x.shape[2] % multiple, -x.shape[3] % multiple
        if ph:
            x = torch.cat([x, x[:, :, -1:].expand(-1, -1, ph, -1)], 2)
        if pw:
            x = torch.cat([x, x[:, :, :, -1:].expand(-1, -1, -1, pw)], 3)
        return x.contiguous()
    a = np.stack(frames)
    ph, pw = -a.shape[1] % multiple, -a.shape[2] % multiple
    if ph or pw:
        a = np.pad(a, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def to_frames(x: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(T, 3, H', W') in [-1, 1] (used up: worked on in place) or uint8 -> cropped uint8 (T, H, W, 3) whose
    rows are C-contiguous, as video encoders take them. A tokeniser's uint8 frames come laid out channels
    last (tokenizer.host_frames), so the crop is a view (rows keep the padded width's stride)."""
    x = x[:, :, :height, :width]
    x = (x if x.dtype == torch.uint8 else to_uint8(x)).permute(0, 2, 3, 1)
    if x.stride()[2:] != (3, 1):
        x = x.contiguous()
    return x.numpy()


def staged(frames: Iterable[np.ndarray], device) -> Iterator:
    """Frames on their way to the tokeniser's device: on the CPU the arrays as they are; to a GPU each frame
    crosses once, as uint8 from pinned memory, without waiting (to_tensor lays it out there)."""
    if torch.device(device).type != "cuda":
        yield from frames
        return
    for a in frames:
        try:
            pinned = torch.empty(a.shape, dtype=torch.uint8, pin_memory=True)
        except RuntimeError:       # no pinned memory to be had: the plain copy
            yield torch.from_numpy(a).to(device)
            continue
        pinned.copy_(torch.from_numpy(a))      # the one host copy (PyAV's rows may be padded)
        yield pinned.to(device, non_blocking=True)     # pinned memory is kept until the copy is done


@dataclass
class Rule:
    """Which positions are kept: above a threshold of change, or a fixed share of each chunk."""
    threshold: float | None = None
    keep_ratio: float | None = None
    keyframe_interval: int = 0
    unit: torch.Tensor | None = None      # (C,) per-channel unit of change (calibration); None: tok.scale


@dataclass
class Encoded:
    """One chunk as compress stores it: mask (t, h, w), kept codes (C, kept) and their scales, the
    number of real frames it holds, (encoder side) the dequantised latents every position had, and
    (a Codec with logvar) the kept positions' log-variance (C, kept) float32, which the container quantises."""
    mask: torch.Tensor
    codes: torch.Tensor
    qscale: torch.Tensor | None
    frames: int = 0
    latents: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


class Codec:
    """What is fixed for a stream: the tokeniser, the rule and the quantisation; logvar: also keep the
    posterior's log-variance at the kept positions (a tokeniser with has_posterior)."""

    def __init__(self, tok: Tokenizer, rule: Rule, quant: str = "int8", logvar: bool = False):
        if logvar and not tok.has_posterior:
            raise ValueError(f"tokeniser {tok.name} has no posterior: no log-variance to keep")
        self.tok, self.rule, self.quant, self.logvar = tok, rule, quant, logvar

    def encoder(self, selector: Selector | None = None) -> "Encoder":
        """selector: decides the masks instead of the rule's Selector (an experiment's variant of the
        rule, experiments/rule_variants.py); quantisation and gathering stay these."""
        return Encoder(self, selector)

    def masked(self, z: torch.Tensor, mask: torch.Tensor) -> Encoded:
        """Latents (t, C, h, w) coded with a mask chosen elsewhere (the benchmark's baselines: full
        rate, random dropping): quantised and gathered as compress does, no C_sel followed."""
        codes, qscale, zq = _quantised(z, self.quant)
        return Encoded(mask, gather_kept(codes, mask), qscale, latents=zq)

    def decoder(self, inpainter=None, fill: str = "hold") -> "Decoder":
        """A decoder that fills dropped positions (LATENT_FILLS), then runs `inpainter` (a lit.Inpainter) if given."""
        r = self.rule
        return Decoder(self.tok, inpainter, fill, r.threshold if r else None, r.unit if r else None)

    def frame_chunks(self, frames: Iterable[np.ndarray], chunk: int) -> Iterator[tuple[list, int]]:
        """Frames grouped into chunks of `chunk` latent frames -> (frames padded to whole groups, real count)."""
        it, starts = iter(frames), True
        while True:
            group, real, need = take_frames(self.tok, it, chunk, starts)
            if not real:
                return
            yield group, real
            if real < need:
                return
            starts = False


def take_frames(tok: Tokenizer, it: Iterator[np.ndarray], n: int, starts: bool) -> tuple[list, int, int]:
    """The frames of the next n latent frames of a stream (`starts`: its first), a short last group
    padded with its last frame up to whole latent frames -> (frames, how many are real, how many n take)."""
    need = tok.frames_for(n, starts)
    group = list(islice(it, need))
    real = len(group)
    if 0 < real < need:
        group += [group[-1]] * (tok.frames_for(tok.latents_for(real, starts), starts) - real)
    return group, real, need


class Encoder:
    """Encode + quantise + mask, chunk by chunk, carrying the tokeniser state and C_sel."""

    def __init__(self, codec: Codec, selector: Selector | None = None):
        self.codec, self.tok = codec, codec.tok
        r = codec.rule
        self.selector = selector or Selector(self.tok.scale if r.unit is None else r.unit, r.threshold, r.keep_ratio,
                                             r.keyframe_interval)
        self.state = None
        self._pixels = 1
        self.timing = {"encode": 0.0, "mask": 0.0}

    def chunks(self, frames: Iterable[np.ndarray], chunk: int) -> Iterator[Encoded]:
        """A whole stream of frames -> its chunks, encoded."""
        for z, real in self.latent_chunks(frames, chunk):
            enc = self.encode_latents(z)
            enc.frames = real
            yield enc

    def latent_chunks(self, frames: Iterable[np.ndarray], chunk: int) -> Iterator[tuple[torch.Tensor, int]]:
        """A whole stream of frames -> each chunk's latents and real frame count (encode_latents makes
        the rest; compress runs the two in different threads, the benchmark and LIT training keep the
        latents to mask them several ways).

        A stateful tokeniser is fed a few latent frames' worth of frames at a time (ENCODE_PIXELS), so
        only those frames and their activations are in memory, never a whole chunk of them; its state
        makes this equal to one call per chunk. A stateless one codes each chunk as a clip, so it
        gets each chunk whole (_chunks_batched)."""
        it = iter(frames)
        first = next(it, None)
        if first is None:
            return
        self._pixels = first.shape[0] * first.shape[1]
        it = chain([first], it)
        if not self.tok.stateful:
            yield from self._chunks_batched(it, chunk, self._chunks_at_once(chunk))
            return
        while True:
            zs, real, left, short = [], 0, chunk, False
            while left > 0 and not short:
                n = min(left, self._latents_per_call())
                group, got, need = self._next_group(it, n)
                if got:
                    zs.append(self._encode(group))
                real, left, short = real + got, left - n, got < need
            if zs:
                yield (Posterior.cat(zs) if self.codec.logvar else torch.cat(zs)), real
            if short:
                return

    def _chunks_at_once(self, chunk: int) -> int:
        """Whole chunks per call: up to the tokeniser's chunks_per_call, while they stay within
        BATCH_PIXELS (small frames, where one chunk leaves a GPU idle)."""
        per_chunk = self.tok.frames_for(chunk, True) * self._pixels
        return max(1, min(self.tok.chunks_per_call, BATCH_PIXELS // max(1, per_chunk)))

    def _chunks_batched(self, it, chunk: int, k: int) -> Iterator[tuple[torch.Tensor, int]]:
        """Chunks of a stateless tokeniser, each coded as a clip of its own; with k > 1, k whole chunks
        per call (a GPU codes them as one batch), the latents (and, with the log-variance kept, the
        Posteriors) those of one call per chunk up to float rounding."""
        short = False
        while not short:
            groups = []
            while len(groups) < k and not short:
                group, got, need = self._next_group(it, chunk)
                if got:
                    groups.append((group, got))
                short = got < need
            same = [g for g, _ in groups if len(g) == len(groups[0][0])] if groups else []
            t0 = time.perf_counter()
            zs = self.tok.encode_many([to_tensor(g, self.tok.pad_multiple) for g in same], posterior=self.codec.logvar
                                      ) if len(same) > 1 else []
            self.timing["encode"] += time.perf_counter() - t0
            for i, (group, got) in enumerate(groups):
                yield (zs[i] if i < len(zs) else self._encode(group)), got

    def _latents_per_call(self) -> int:
        return max(1, ENCODE_PIXELS // max(1, self._pixels * self.tok.time_factor))

    def _next_group(self, it, n: int) -> tuple[list, int, int]:
        return take_frames(self.tok, it, n, self.state is None)

    def _encode(self, frames: list[np.ndarray]) -> torch.Tensor | Posterior:
        """A group's latents; a Posterior when the codec keeps the log-variance."""
        t0 = time.perf_counter()
        encode = self.tok.encode_posterior if self.codec.logvar else self.tok.encode
        z, state = encode(to_tensor(frames, self.tok.pad_multiple), self.state)
        self.state = state if self.tok.stateful else None
        self.timing["encode"] += time.perf_counter() - t0
        return z

    def encode_latents(self, z: torch.Tensor | Posterior, rule: Rule | None = None) -> Encoded:
        """Latents (t, C, h, w) -> quantised, masked against C_sel, kept codes gathered. rule: this
        chunk's threshold or keep ratio instead of the codec's (the benchmark's allocators choose one
        chunk by chunk); the unit and the keyframes stay the codec's. A Posterior: its mean is masked,
        and its log-variance is gathered at the same kept positions (Encoded.logvar)."""
        logvar = None
        if isinstance(z, Posterior):
            z, logvar = z
        t0 = time.perf_counter()
        codes, qscale, zq = _quantised(z, self.codec.quant)
        sel = self.selector
        rate = sel.threshold, sel.keep_ratio
        if rule is not None:
            if (rule.threshold is None) == (rule.keep_ratio is None):
                raise ValueError("give exactly one of threshold and keep_ratio")
            sel.threshold, sel.keep_ratio = rule.threshold, rule.keep_ratio
        try:
            mask = sel.select(z, zq)
        finally:
            sel.threshold, sel.keep_ratio = rate
        self.timing["mask"] += time.perf_counter() - t0
        return Encoded(mask, gather_kept(codes, mask), qscale, latents=zq,
                       logvar=None if logvar is None else gather_kept(logvar, mask))

    def fork(self) -> "Encoder":
        """A copy whose C_sel goes on apart from this one's (to try several rules on the same chunk)."""
        e = copy.copy(self)
        e.selector, e.timing = copy.deepcopy(self.selector), dict(self.timing)
        return e


def kept_values(chunk) -> torch.Tensor:
    """A chunk's kept values (an Encoded or a container Chunk) as the decoder sees them: (C, kept) float32."""
    return dequantise(chunk.codes, chunk.qscale)


def hold_dense(before: Iterable, chunks: list, channels: int, dtype=torch.float32, layout: str = "TCHW",
               norm=None, frames: range | None = None) -> torch.Tensor:
    """Hold-filled latents of consecutive chunks as one gather from [held | every kept value]
    (masking.hold_gather), the values a Decoder's hold fill gives: `before`, the chunks that precede
    them in the stream, only move the hold state. norm runs on the kept values alone, before they are
    spread. (T, C, h, w), or (C, T, h, w) with layout "CTHW" (AtokFile.dense's fast path). chunks:
    container Chunks, or KeptArrays (AtokReader.read_kept: numpy all the way, no tensor per part).
    frames: only these latent frames of the chunks (counted from their first) are given; the others
    only move the hold state (a crop: the gather, most of the cost after zstd, runs on them alone)."""
    hold = HoldFill()
    for c in before:
        hold.update(kept_values(c), c.mask)
    masks = [as_numpy(c.mask) for c in chunks]
    mask = (masks[0] if len(masks) == 1 else np.concatenate(masks))[:None if frames is None else frames.stop]
    hw = mask.shape[1] * mask.shape[2]
    table = np.empty((channels, hw + sum(k.codes.shape[1] for k in chunks)), np.float32)
    table[:, :hw] = 0 if hold.c_sel is None else hold.held(channels, *mask.shape[1:]).numpy()
    _dequantise_into(table, hw, chunks)
    table = torch.from_numpy(table)
    if norm is not None:
        table = norm(table)
    first = 0 if frames is None else frames.start
    return hold_gather(table.to(dtype), mask, layout, first)      # cast the table, not the larger output: the same values


def _dequantise_into(table: np.ndarray, at: int, chunks: list):
    """Each chunk's kept values, dequantised as masking.dequantise does (float32 code x float32
    scale), written into table's columns from `at` on: no float copy of the values on the way."""
    for k in chunks:
        codes = as_numpy(k.codes)
        n = codes.shape[1]
        if k.qscale is None:
            table[:, at:at + n] = codes
        else:
            np.multiply(codes, as_numpy(k.qscale)[:, None], out=table[:, at:at + n])
        at += n


def kept_tokens(chunks: list) -> torch.Tensor:
    """The kept values of consecutive chunks (Chunks or KeptArrays) as the decoder sees them, one row
    per kept position in mask order: (kept, C) float32, what torch.cat([kept_values(c).T ...]) gives.
    Each chunk's (C, kept) values are dequantised into a temporary and written transposed into the
    rows: two passes, 0.37 against 0.66 ms per dev clip for float copies, transposes and a cat."""
    out = np.empty((sum(k.codes.shape[1] for k in chunks), chunks[0].codes.shape[0]), np.float32)
    at = 0
    for k in chunks:
        codes = as_numpy(k.codes)
        n = codes.shape[1]
        if k.qscale is not None:
            codes = np.multiply(codes, as_numpy(k.qscale)[:, None], dtype=np.float32)
        out[at:at + n] = codes.T
        at += n
    return torch.from_numpy(out)


def _quantised(z: torch.Tensor, quant: str):
    """-> (codes, per-channel scales or None, the dequantised latents the decoder will see)."""
    codes, qscale = quantise(z, quant)
    return codes, qscale, dequantise(codes, qscale)


# Fills that need no model: "hold" keeps each dropped position at its last kept value; "interp" moves
# it towards its next kept value in the chunk, within the threshold's bound (masking.InterpFill).
LATENT_FILLS = ("hold", "interp")


class Decoder:
    """Fill + inpainter + tokeniser decode, chunk by chunk, carrying C_sel, C_fill and decoder state.

    Takes an Encoded or a container Chunk (anything with mask, codes and qscale)."""

    def __init__(self, tok: Tokenizer, inpainter=None, fill: str = "hold", threshold: float | None = None,
                 unit: torch.Tensor | None = None):
        if inpainter is not None:     # LIT corrects the fill it was trained on
            fill, threshold, unit = inpainter.model.cfg.base, inpainter.threshold, inpainter.unit
        if fill not in LATENT_FILLS:
            raise ValueError(f"fill must be one of {', '.join(LATENT_FILLS)}, not {fill!r}")
        self.tok, self.inpainter = tok, inpainter
        self.filler = HoldFill() if fill == "hold" else InterpFill(tok.scale if unit is None else unit, threshold)   # carries C_sel
        self.state = None
        self.timing = {"fill": 0.0, "lit": 0.0, "decode": 0.0}

    def fill(self, chunk) -> torch.Tensor:
        """The chunk's latents (t, C, h, w), dropped positions filled by the fill alone (no inpainter):
        dense()'s first step, which decompress runs in its reading thread."""
        t0 = time.perf_counter()
        z = self.filler.fill(dequantise(chunk.codes, chunk.qscale), chunk.mask)
        self.timing["fill"] += time.perf_counter() - t0
        return z

    def dense(self, chunk, filled: torch.Tensor | None = None) -> torch.Tensor:
        """The chunk's latents (t, C, h, w), dropped positions filled (filled: fill(chunk), if made already)."""
        z = self.fill(chunk) if filled is None else filled
        t1 = time.perf_counter()
        if self.inpainter is not None:
            z = self.inpainter.fill(z, chunk.mask)
        self.timing["lit"] += time.perf_counter() - t1
        return z

    def skip(self, chunk):
        """Follow a chunk's hold state without filling or decoding it (to start later in a stream)."""
        self.filler.update(dequantise(chunk.codes, chunk.qscale), chunk.mask)

    def decode_chunk(self, chunk, n: int, height: int, width: int, filled: torch.Tensor | None = None):
        """A chunk -> (latent slice, uint8 frames cropped to height x width) group by group, its n real
        frames in all (the last chunk's padding frames are dropped); filled: fill(chunk), if made already."""
        for lat, x in self.frame_groups(self.dense(chunk, filled), height * width, uint8=True):
            frames = to_frames(x[:n], height, width)
            del x               # not kept alive while the next group decodes: memory is one group's
            n -= len(frames)
            yield lat, frames
            del frames

    def frame_groups(self, z: torch.Tensor, pixels: int, uint8=False):
        """Decode z in groups of latent frames small enough for DECODE_PIXELS -> (latent slice, frames).

        A stateful tokeniser carries its state from group to group, so this equals one call on z;
        a stateless one codes each chunk as one clip, so it gets z whole."""
        n = len(z)
        if self.tok.stateful:
            most = max(1, DECODE_PIXELS // max(1, pixels * self.tok.time_factor))
            n = -(-len(z) // -(-len(z) // most))     # even groups: fewer block sizes for the allocator
        for a in range(0, len(z), n):
            lat = slice(a, min(a + n, len(z)))
            yield lat, self.frames(z[lat], uint8)

    def frames(self, z: torch.Tensor, uint8=False) -> torch.Tensor:
        """Dense latents -> frames (T, 3, H', W') in [-1, 1] (uint8 with uint8=True), continuing the stream."""
        t0 = time.perf_counter()
        if self.tok.stateful:
            x, self.state = self.tok.decode(z, self.state, uint8)
        else:
            x, _ = self.tok.decode(z, None, uint8)
        self.timing["decode"] += time.perf_counter() - t0
        return x


def drop_and_fill(tok: Tokenizer, z: torch.Tensor, rule: Rule, quant: str = "int8", fill: str = "hold"):
    """Latents of a fresh stream through the rule and back, as compress + decompress see them
    -> (mask (t, h, w), quantised latents (t, C, h, w), filled latents (t, C, h, w))."""
    codec = Codec(tok, rule, quant)
    enc = codec.encoder().encode_latents(z)
    return enc.mask, enc.latents, codec.decoder(fill=fill).dense(enc)
