"""Write tests/data/reference/: containers made by the shipped models from fixed inputs, the tokeniser
latents they were made from and the frames they decode to, so that refactors can prove what they
change (tests/test_reference.py).

    python tests/make_reference_containers.py               # latents and frames of the stored containers
    python tests/make_reference_containers.py --containers  # also rewrite the containers (on purpose only)

The containers are kept by default: they are old-format files (1 and 2) that newer readers must still
decode. Without --containers the script records the tokeniser's latents while compressing each input
again, and refuses to store them unless they reproduce the stored container's every chunk payload; it
stores the frames the stored container decodes to only if they match digests.json. Run it on the
machine kind that made the containers (Intel with AMX for the stored ones): float kernels differ
between CPUs, which is the reason the latents are stored at all.

The inputs are the project's own sample videos plus one tiny clip with sound written here.
"""
import argparse
import hashlib
import io
import json
import lzma
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

import adaptok_cli as atk

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "data" / "reference"
UNIT = "spread"      # the unit formats 1 to 3 used: the tokeniser's scale

# name -> (input, compress options)
CASES = {
    "pan": ("sample_videos/pan.mp4", {}),
    "ball-budget": ("sample_videos/static_ball.mp4", {"keep_ratio": 0.3, "keyframe_interval": 4, "chunk": 3,
                                                        "quant": "fp16"}),
    "sound": ("tests/data/reference/sound.mkv", {"threshold": 0.3, "chunk": 2}),
}


class Recording:
    """A tokeniser that keeps every latent frame its encoder gives, in stream order (`latents()`)."""

    def __init__(self, tok):
        self._tok, self._zs = tok, []

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def encode(self, frames, state=None):
        z, state = self._tok.encode(frames, state)
        self._zs.append(z.clone())
        return z, state

    def latents(self) -> np.ndarray:
        return torch.cat(self._zs).numpy()


class Replay:
    """A tokeniser whose encoder gives back stored latents instead of running the network.

    compress runs as it always does (frames read and grouped, header, quantiser, rule, writer, audio),
    only the float network's output is the one recorded, so what follows it can be checked byte for
    byte on any CPU. Each call takes as many latent frames as its frames make (layout.py)."""

    def __init__(self, tok, latents: np.ndarray):
        self._tok, self._z, self.used = tok, torch.from_numpy(latents), 0

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def encode(self, frames, state=None):
        n = self._tok.latents_for(len(frames), state is None)
        z = self._z[self.used:self.used + n]
        f = self._tok.space_factor
        if len(z) != n or tuple(frames.shape[-2:]) != (z.shape[-2] * f, z.shape[-1] * f):
            raise AssertionError(f"the encoder was asked for {n} latent frames of {tuple(frames.shape[-2:])} pixels "
                                 f"at latent frame {self.used}; the recording has {tuple(self._z.shape)}")
        self.used += n
        return z.clone(), ("replay", self.used)

    def unused(self) -> int:
        """Latent frames of the recording no call asked for."""
        return len(self._z) - self.used


def latents_path(name: str) -> Path:
    return OUT / f"{name}.latents.npy.xz"


def frames_path(name: str) -> Path:
    return OUT / f"{name}.frames.mkv"


def save_latents(name: str, z: np.ndarray):
    buf = io.BytesIO()
    np.save(buf, z.astype(np.float32), allow_pickle=False)
    latents_path(name).write_bytes(lzma.compress(buf.getvalue(), preset=9))


def load_latents(name: str) -> np.ndarray:
    return np.load(io.BytesIO(lzma.decompress(latents_path(name).read_bytes())), allow_pickle=False)


def save_frames(name: str, frames: np.ndarray):
    """uint8 (T, H, W, 3) frames as lossless H.264 RGB (a third of the size of zlib'd arrays; H.264
    decoding is exact by its standard, so every machine reads back the same bytes)."""
    t, h, w, _ = frames.shape
    with av.open(str(frames_path(name)), "w") as c:
        s = c.add_stream("libx264rgb", rate=Fraction(24), options={"qp": "0", "preset": "veryslow"})
        s.width, s.height, s.pix_fmt = w, h, "rgb24"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    if not np.array_equal(load_frames(name), frames):
        raise SystemExit(f"{frames_path(name)}: does not read back exactly")


def load_frames(name: str) -> np.ndarray:
    with av.open(str(frames_path(name))) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def decoded_frames(path) -> np.ndarray:
    """What `adaptok decompress` writes (LIT fill), as one uint8 (T, H, W, 3) array."""
    with atk.open(path, fill="lit") as f:
        return np.concatenate([np.asarray(x) for x in f.iter_frames()])


def digest(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


def payloads(path) -> list:
    """Every chunk record's decompressed payload as formats 1 to 4 store it (format 5's int8 differences
    summed back), then every audio record's packets."""
    from adaptok_cli.format.container import AtokReader
    with AtokReader(path) as r:
        return [plain_payload(r, i) for i in range(len(r.chunks))] + [r.read_audio(i) for i in range(len(r.audio))]


def plain_payload(r, i: int) -> bytes:
    from adaptok_cli.format.container import undelta_codes
    raw = r.check_chunk(i)
    if r.version < 5 or r.header["quant"] != "int8":
        return raw
    o_codes = r._layout(int(r.entry(i).latent_frames))[2]
    codes = np.frombuffer(raw, np.int8, offset=o_codes).reshape(r.header["channels"], -1)
    return raw[:o_codes] + undelta_codes(codes).tobytes()


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


def main():
    from adaptok_cli.models.tokenizer import load_tokenizer
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--containers", action="store_true", help="rewrite the containers too (their format changes to the current one)")
    args = p.parse_args()
    torch.set_num_threads(1)    # as the tests run: float sums, hence bytes, depend on the thread count
    OUT.mkdir(parents=True, exist_ok=True)
    digests_file = OUT / "digests.json"
    digests = json.loads(digests_file.read_text()) if digests_file.exists() and not args.containers else {}
    if args.containers:
        write_sound_clip(OUT / "sound.mkv")
    tok = load_tokenizer("tinytok")
    for name, (src, opts) in CASES.items():
        dst = OUT / f"{name}.atok"
        rec = Recording(tok)
        fresh = dst if args.containers else OUT / f".{name}.fresh.atok"
        try:
            atk.compress(ROOT / src, fresh, force=True, unit=UNIT, loaded_tokenizer=rec, **opts)
            if not args.containers and payloads(fresh) != payloads(dst):
                raise SystemExit(f"{name}: this machine's latents do not make {dst.name}'s chunks: run this on the "
                                 f"machine kind that made the containers, or rewrite them with --containers")
        finally:
            if not args.containers:
                fresh.unlink(missing_ok=True)
        save_latents(name, rec.latents())
        frames = decoded_frames(dst)
        if args.containers:
            digests[name] = {"frames_sha256": digest(frames), "options": opts, "input": src}
        elif digest(frames) != digests[name]["frames_sha256"]:
            raise SystemExit(f"{name}: the stored container decodes to other frames than digests.json says on this machine")
        save_frames(name, frames)
        print(f"{name}: latents {rec.latents().shape} -> {latents_path(name).name} ({latents_path(name).stat().st_size} bytes), "
              f"frames {frames.shape} -> {frames_path(name).name} ({frames_path(name).stat().st_size} bytes)")
    digests_file.write_text(json.dumps(digests, indent=1) + "\n")


if __name__ == "__main__":
    main()
