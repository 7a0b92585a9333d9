"""Write tests/data/reference/: containers and decoded-frame digests made by the shipped models
from fixed inputs, so that refactors can prove they change no byte (tests/test_reference.py).

    python tests/make_reference_containers.py

Run it only when a change to the format or the models is meant to change the output; the inputs
are the project's own sample videos plus one tiny clip with sound written here.
"""
import hashlib
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

import adaptok_cli as atk

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "data" / "reference"

# name -> (input, compress options)
CASES = {
    "pan": ("sample_videos/pan.mp4", {}),
    "ball-budget": ("sample_videos/static_ball.mp4", {"keep_ratio": 0.3, "keyframe_interval": 4, "chunk": 3,
                                                        "quant": "fp16"}),
    "sound": ("tests/data/reference/sound.mkv", {"threshold": 0.3, "chunk": 2}),
}


def write_sound_clip(path: Path):
    """13 frames of 37x29 (odd sizes) at 12 fps, with a second of a FLAC tone."""
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as c:
        v = c.add_stream("ffv1", rate=Fraction(12))
        v.width, v.height, v.pix_fmt = 37, 29, "yuv420p"
        a = c.add_stream("flac", rate=8000)
        a.layout = "mono"
        c.start_encoding()     # both streams are declared before the first packet
        f = None
        for i in range(13):     # a new picture every 5 frames, still in between
            if i % 5 == 0:
                f = rng.integers(0, 256, (29, 37, 3), dtype=np.uint8)
            for pkt in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")):
                c.mux(pkt)
        for pkt in v.encode():
            c.mux(pkt)
        t = np.arange(8000) / 8000
        tone = (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)[None]
        af = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        af.sample_rate, af.pts, af.time_base = 8000, 0, Fraction(1, 8000)
        for pkt in list(a.encode(af)) + list(a.encode()):
            c.mux(pkt)


def frames_digest(path) -> str:
    h = hashlib.sha256()
    for f in atk.open(path, fill="lit").iter_frames():
        h.update(np.ascontiguousarray(f).tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    torch.set_num_threads(1)    # as the tests run: float sums, hence bytes, depend on the thread count
    OUT.mkdir(parents=True, exist_ok=True)
    write_sound_clip(OUT / "sound.mkv")
    digests = {}
    for name, (src, opts) in CASES.items():
        dst = OUT / f"{name}.atok"
        atk.compress(ROOT / src, dst, force=True, **opts)
        digests[name] = {"frames_sha256": frames_digest(dst), "options": opts, "input": src}
        print(f"wrote {dst} ({dst.stat().st_size} bytes)")
    (OUT / "digests.json").write_text(json.dumps(digests, indent=1) + "\n")
