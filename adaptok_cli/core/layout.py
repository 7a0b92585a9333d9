"""How frames map to latent frames and latent positions to pixels: the one place these rules are written.

A tokeniser turns `time_factor` frames into one latent frame, except the first latent frame of a
stream, which covers one frame alone (causal video tokenisers code the first frame as an image).
A stateful tokeniser runs one stream through a whole video; a stateless one starts a stream in
every chunk. In space, frame sides are padded to the tokeniser's `pad_multiple` and every latent
position covers `space_factor` x `space_factor` pixels. The first latent frame of a stream, and every
`keyframe_interval`-th one, is a keyframe: kept whole. Imports nothing heavy (numpy only where an
array is made): the container reader and the options the CLI's help reads use it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def starts_stream(first: bool, stateful: bool) -> bool:
    """A chunk (or a call) begins a tokeniser stream: the first of a video, or any of a stateless tokeniser."""
    return first or not stateful


def frames_for(n_latent: int, time_factor: int, starts_stream: bool) -> int:
    """Frames that make n_latent latent frames."""
    return 1 + time_factor * (n_latent - 1) if starts_stream else time_factor * n_latent


def latents_for(n_frames: int, time_factor: int, starts_stream: bool) -> int:
    """Latent frames n_frames need (the last group padded)."""
    if starts_stream:
        return 1 + -(-(n_frames - 1) // time_factor)
    return -(-n_frames // time_factor)


def whole_latents(n_frames: int, time_factor: int, starts_stream: bool) -> int:
    """Latent frames n_frames fill completely (a short last group left out)."""
    return 1 + (n_frames - 1) // time_factor if starts_stream else n_frames // time_factor


def frame_spans(latent_counts, time_factor: int, stateful: bool, frames: int | None = None) -> list[tuple[int, int]]:
    """(first frame, frame count) of chunks of these latent frame counts; with `frames`, the last spans
    are cut to it. Format 3 stores each chunk's frame count, so only older files need this."""
    spans, start = [], 0
    for i, t in enumerate(latent_counts):
        n = frames_for(int(t), time_factor, starts_stream(i == 0, stateful))
        if frames is not None:
            n = max(0, min(n, frames - start))
        spans.append((start, n))
        start += n
    return spans


def latent_index(n_frames: int, time_factor: int, starts_stream: bool) -> np.ndarray:
    """For each of n_frames frames, the latent frame (counted from the first given) it belongs to."""
    import numpy as np
    j = np.arange(n_frames)
    return np.where(j == 0, 0, (j - 1) // time_factor + 1) if starts_stream else j // time_factor


def latent_starts(n_latent: int, time_factor: int, starts_stream: bool) -> np.ndarray:
    """For each of n_latent latent frames, its first frame (counted from the first given)."""
    import numpy as np
    i = np.arange(n_latent)
    return np.where(i == 0, 0, frames_for(i, time_factor, starts_stream))


def latent_side(side: int, pad_multiple: int, space_factor: int) -> int:
    """Latent positions along a frame side of `side` pixels (the side padded to pad_multiple)."""
    return -(-side // pad_multiple) * pad_multiple // space_factor


def pixels_for(n_positions: int, space_factor: int) -> int:
    """Pixels along a side that n_positions latent positions decode to."""
    return n_positions * space_factor


def pixel_map(latent_map: np.ndarray, n_frames: int, time_factor: int, starts_stream: bool, space_factor: int,
              height: int, width: int) -> np.ndarray:
    """A per-position map of latent frames (t, h, w) -> the same per pixel of each frame (n_frames, height, width)."""
    m = latent_map[latent_index(n_frames, time_factor, starts_stream)]
    return m.repeat(space_factor, 1).repeat(space_factor, 2)[:, :height, :width]


def is_keyframe(index: int, keyframe_interval: int) -> bool:
    """Latent frame `index` of a stream (counted from its first) is kept whole."""
    return index == 0 or (keyframe_interval > 0 and index % keyframe_interval == 0)
