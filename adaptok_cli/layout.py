"""How frames map to latent frames: the one place this rule is written.

A tokeniser turns `time_factor` frames into one latent frame, except the first latent frame of a
stream, which covers one frame alone (causal video tokenisers code the first frame as an image).
A stateful tokeniser runs one stream through a whole video; a stateless one starts a stream in
every chunk. Imports nothing heavy: the container reader uses it for files older than format 3.
"""
from __future__ import annotations

import numpy as np


def frames_for(n_latent: int, time_factor: int, starts_stream: bool) -> int:
    """Frames that make n_latent latent frames."""
    return 1 + time_factor * (n_latent - 1) if starts_stream else time_factor * n_latent


def latents_for(n_frames: int, time_factor: int, starts_stream: bool) -> int:
    """Latent frames n_frames need (the last group padded)."""
    if starts_stream:
        return 1 + -(-(n_frames - 1) // time_factor)
    return -(-n_frames // time_factor)


def frame_spans(latent_counts, time_factor: int, stateful: bool, frames: int | None = None) -> list[tuple[int, int]]:
    """(first frame, frame count) of chunks of these latent frame counts; with `frames`, the last spans
    are cut to it. Format 3 stores each chunk's frame count, so only older files need this."""
    spans, start = [], 0
    for i, t in enumerate(latent_counts):
        n = frames_for(int(t), time_factor, i == 0 or not stateful)
        if frames is not None:
            n = max(0, min(n, frames - start))
        spans.append((start, n))
        start += n
    return spans


def latent_index(n_frames: int, time_factor: int, starts_stream: bool) -> np.ndarray:
    """For each of n_frames frames, the latent frame (counted from the first given) it belongs to."""
    j = np.arange(n_frames)
    return np.where(j == 0, 0, (j - 1) // time_factor + 1) if starts_stream else j // time_factor
