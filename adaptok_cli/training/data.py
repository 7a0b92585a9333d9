"""Training clips, decoded once into memory-mapped caches: frames (uint8) and a tokeniser's latents.

The clips live outside the repository (the project's train and dev clips, not distributed). DATA is
the one place their folder is named: $ADAPTOK_DATA, else shared/data beside the repository's folder
(where the project's developers keep them). Only its train/ part may train shipped weights: dev/ is refused.
Commands that read them also take --data.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from adaptok_cli.errors import UsageError
from adaptok_cli.core.layout import whole_latents
from adaptok_cli.running.outputs import atomic_path
from adaptok_cli.running.video import VIDEO_EXTENSIONS, VideoReader

DATA = Path(os.environ.get("ADAPTOK_DATA") or Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
TRAIN, DEV = DATA / "train", DATA / "dev"
FRAME_CACHE = Path(".cache/tokenizer-frames")
LATENT_CACHE = Path(".cache/lit-latents")
RAW_I420 = {"video_size": "320x240", "pixel_format": "yuv420p", "framerate": "30"}   # the headerless .i420 clip


def read_i420(path) -> np.ndarray:
    """A headerless planar I420 clip (320x240) -> (T, H, W, 3) uint8, through PyAV's rawvideo demuxer."""
    with av.open(str(path), format="rawvideo", options=RAW_I420) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _short_side(frames: np.ndarray, s: int) -> np.ndarray:
    t = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = frames.shape[1:3]
    size = (s, round(w * s / h)) if h < w else (round(h * s / w), s)
    return F.interpolate(t, size=size, mode="area").round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def build_cache(data: Path = TRAIN, cache: Path = FRAME_CACHE, sizes=(256, 400)) -> list[np.ndarray]:
    """Decode every clip in data at each short side once -> memory-mapped (T, H, W, 3) uint8 arrays."""
    if "dev" in Path(data).resolve().parts:
        raise UsageError("refusing to train on dev/: it is for evaluation only")
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    for path in sorted(p for p in Path(data).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS | {".i420"}):
        for s in sizes:
            dst = cache / f"{path.stem}_{s}.npy"
            if not dst.exists():
                if path.suffix == ".i420":
                    frames = _short_side(read_i420(path), s)
                else:
                    with VideoReader(path, short_side=s) as r:
                        frames = np.stack(list(r))
                with atomic_path(dst) as tmp, open(tmp, "wb") as f:
                    np.save(f, frames)
                print(f"cached {dst.name} {frames.shape}", flush=True)
            clips.append(np.load(dst, mmap_mode="r"))
    return clips


@torch.no_grad()
def latent_cache(tok, clips, folder: Path, chunk: int = 8) -> list[np.ndarray]:
    """Encode each cached clip once, chunk by chunk as compress does -> float16 (T, C, h, w) arrays.
    A clip from the frame cache keeps its cache file's name (clip and size), so a cache built for one
    list of sizes is never read for another; an in-memory clip is named by its place and size."""
    from adaptok_cli.core.codec import Codec, Rule
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, frames in enumerate(clips):
        name = getattr(frames, "filename", None)
        dst = folder / (Path(name).name if name else f"clip{i:03d}_{frames.shape[1]}x{frames.shape[2]}.npy")
        if not dst.exists():
            n = tok.frames_for(whole_latents(len(frames), tok.time_factor, True), True)   # whole latent frames only
            enc = Codec(tok, Rule(threshold=0.0)).encoder()
            z = torch.cat([z for z, _ in enc.latent_chunks((frames[j] for j in range(n)), chunk)]).half().numpy()
            with atomic_path(dst) as tmp, open(tmp, "wb") as f:
                np.save(f, z)
            print(f"cached latents {dst.name} {z.shape}", flush=True)
        out.append(np.load(dst, mmap_mode="r"))
    return out


def train_latents(tok, data: Path = TRAIN, frame_cache: Path = FRAME_CACHE, cache: Path = LATENT_CACHE, sizes=(256,)):
    """Latents of every clip of data at each short side, cached under cache/<tokeniser fingerprint>."""
    return latent_cache(tok, build_cache(data, frame_cache, sizes), cache / tok.fingerprint)
