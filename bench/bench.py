"""`make bench`: adaptok side by side with its baselines and with ordinary codecs.

    python -m bench.bench                  # every dev clip (not distributed) at short side 256 -> docs/
    python -m bench.bench --quick          # smoke test on generated clips -> bench-out/ (< 1 minute)
    python -m bench.bench --readme         # copy the headline of docs/bench-results.json into README.md

Each clip is read and encoded by the tokeniser once; every method below then only differs in which
latent positions it keeps and how it fills the rest, so the comparisons isolate the allocator:

1. rate-distortion: threshold sweep (LIT and hold-fill), --keep-ratio and uniform random dropping at
   the same mean token rates, and the full-rate tokeniser;
2. allocation cost: our single pass against an ElasticTok-style search allocator and an
   InfoTok-style probe allocator, tuned to the same mean PSNR (within 0.2 dB);
3. libx264 / libx265 / libsvtav1 at adaptok's bits per pixel;
4. throughput of compress/decompress at 256x256 and 480p with stage shares, and peak memory for a long video;
5. the published diffusers VAEs at 854x480 against their own encode/decode (bench/families.py), and the
   CLI's time to its first frame with one of them (bench/startup.py).
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from adaptok_cli.codec import Codec, Decoder, Rule, to_frames
from adaptok_cli.container import AtokWriter
from adaptok_cli.evaluate import Scores, decode_and_score
from adaptok_cli.lit import Inpainter
from adaptok_cli.metrics import psnr, ssim
from adaptok_cli.calibration import DEFAULT_UNIT, UNITS, rule_unit
from adaptok_cli.models import LIT_FROM_THRESHOLD, ModelRef, shipped_lit
from adaptok_cli.options import CompressOptions, header_for
from adaptok_cli.tokenizer import load_tokenizer
from adaptok_cli.training.data import DEV
from adaptok_cli.video import VIDEO_EXTENSIONS, VideoReader

from . import cache, families, loss_maps, startup
from . import pipeline as pipeline_bench

os.environ.setdefault("SVT_LOG", "1")  # libsvtav1: errors only
ROOT = Path(__file__).resolve().parents[1]
CHUNK = 8
THRESHOLDS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.4, 0.6]
MAX_LOSS_DB = 0.5


# --- clips: read and encode once ------------------------------------------------------------------

@dataclass
class Clip:
    name: str
    width: int
    height: int
    fps: float
    refs: list = field(default_factory=list)      # per chunk: (real, H, W, 3) uint8 input frames
    z: list = field(default_factory=list)         # per chunk: raw latents (t, C, h, w)
    encode_s: float = 0.0

    @property
    def frames(self):
        return sum(len(r) for r in self.refs)


def load_clip(path, tok, short_side, max_frames=None) -> Clip:
    """A clip's frames and latents, chunk by chunk, encoded as compress encodes them (codec.Encoder)."""
    with VideoReader(path, short_side=short_side) as r:
        info = r.info
        clip = Clip(Path(path).stem, info.width, info.height, float(info.fps))
        seen = []                   # the chunk's input frames, as the encoder reads them

        def frames():
            for i, f in enumerate(r):
                if max_frames is not None and i >= max_frames:
                    return
                seen.append(f)
                yield f
        enc = Codec(tok, Rule(threshold=0.0)).encoder()
        for z, real in enc.latent_chunks(frames(), CHUNK):
            clip.refs.append(np.stack(seen[:real]))
            del seen[:real]
            clip.z.append(z)
        clip.encode_s = enc.timing["encode"]
    return clip


# --- masks: who decides which positions are kept ---------------------------------------------------

def codec(tok, threshold=None, keep_ratio=None) -> Codec:
    """The benchmark's codec: int8, the rule's unit (--unit), no keyframes after the first."""
    return Codec(tok, Rule(threshold, keep_ratio, unit=unit(tok)))


def threshold_chunks(tok, clip, threshold=None, keep_ratio=None) -> list:
    """The clip's chunks as compress codes them with this threshold or keep ratio (Encoded)."""
    enc = codec(tok, threshold, keep_ratio).encoder()
    return [enc.encode_latents(z) for z in clip.z]


def full_rate(tok, clip) -> list:
    """The clip's chunks with every position kept (no unit needed: any tokeniser)."""
    c = Codec(tok, Rule(keep_ratio=1.0))
    return [c.masked(z, torch.ones(z.shape[0], *z.shape[2:], dtype=torch.bool)) for z in clip.z]


def random_chunks(tok, clip, rate, seed=0) -> list:
    """Uniform random dropping at a fixed rate per latent frame (first latent frame whole, as ours)."""
    g = torch.Generator().manual_seed(seed)
    chunks, first, c = [], True, Codec(tok, Rule(keep_ratio=rate))
    for z in clip.z:
        t, _, h, w = z.shape
        m = torch.zeros(t, h * w, dtype=torch.bool)
        for i in range(t):
            k = round(rate * h * w)
            m[i, torch.randperm(h * w, generator=g)[:k]] = True
        if first:
            m[0] = True
            first = False
        chunks.append(c.masked(z, m.view(t, h, w)))
    return chunks


# --- reconstruction -------------------------------------------------------------------------------

UNIT = DEFAULT_UNIT      # the rule's unit (--unit)


def unit(tok):
    return rule_unit(tok, UNIT)[1]


def new_inpainter(tok, lit, threshold=None):
    return Inpainter(lit.load_lit(), tok.scale, lit.fingerprint, threshold=threshold, unit=unit(tok)) if lit else None


def reconstruct(tok, clip: Clip, chunks, lit=None, threshold=None, fill="hold") -> dict:
    """Decode a clip from its coded chunks (Encoded) as decompress would (fill, optional LIT, decoder);
    score it."""
    header = header_for(tok, None, CompressOptions().check(), clip.width, clip.height,
                        Fraction(clip.fps).limit_denominator(1001), clip.name)
    buf = io.BytesIO()
    writer = AtokWriter(buf, header)
    dec = Decoder(tok, new_inpainter(tok, lit, threshold), fill, threshold, unit(tok))
    s, kept, total = Scores(tok.time_factor), 0, 0
    for ref, chunk in zip(clip.refs, chunks):
        writer.write_chunk(chunk.mask, chunk.codes, chunk.qscale, len(ref))
        decode_and_score(dec, chunk, ref, s, truth=chunk.latents, scale=tok.scale)
        kept, total = kept + int(chunk.mask.sum()), total + chunk.mask.numel()
    writer.close(clip.frames)
    d = {"psnr": s.mean_psnr, "ssim": s.mean_ssim, "token_rate": kept / total,
         "bpp": buf.tell() * 8 / (clip.frames * clip.width * clip.height), "latent_mse_dropped": s.latent_mse,
         "seconds_lit": dec.timing["lit"], "seconds_decode": dec.timing["decode"]}
    if s.seams:
        d["seam_psnr_minus_mean"] = float(np.mean(s.seams)) - s.mean_psnr
    return d


def lit_share(results) -> float:
    """LIT's time over the decoder's, summed over reconstruct() results (every chunk of every clip)."""
    return sum(r["seconds_lit"] for r in results) / sum(r["seconds_decode"] for r in results)


def mean(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


# --- 1. rate-distortion ---------------------------------------------------------------------------

def rate_distortion(tok, clips, lit, thresholds, log):
    rows, per_clip = [], {}
    full = {c.name: reconstruct(tok, c, full_rate(tok, c)) for c in clips}
    rows.append({"method": "full rate", "param": "-", **{k: mean(list(full.values()), k)
                                                            for k in ("token_rate", "bpp", "psnr", "ssim")}})
    log(rows[-1])
    for t in thresholds:
        res_lit, res_hold, res_interp = [], [], []
        for c in clips:
            chunks = threshold_chunks(tok, c, threshold=t)
            h = reconstruct(tok, c, chunks, threshold=t)
            res_hold.append(h)
            res_interp.append(reconstruct(tok, c, chunks, threshold=t, fill="interp"))
            res_lit.append(reconstruct(tok, c, chunks, lit, threshold=t) if lit else h)
            per_clip[(t, c.name)] = {"lit": res_lit[-1], "hold": h, "interp": res_interp[-1], "full": full[c.name]}
        for name, res in (("threshold + LIT", res_lit), ("threshold + hold-fill", res_hold),
                          ("threshold + interp-fill", res_interp)):
            if name.endswith("LIT") and not lit:
                continue
            rows.append({"method": name, "param": t, **{k: mean(res, k) for k in
                                                        ("token_rate", "bpp", "psnr", "ssim", "latent_mse_dropped",
                                                         "seam_psnr_minus_mean")}})
            if name.endswith("LIT"):   # LIT's time against the decoder's, summed over the clips
                rows[-1]["lit_decoder_time"] = lit_share(res)
            log(rows[-1])
        rate = mean(res_lit, "token_rate")
        # the same mean rate, spent evenly (keep-ratio) or blindly (random); both filled by LIT
        ratio = (rate * _positions(clips) - _first_frames(clips)) / max(1, _positions(clips) - _first_frames(clips))
        ratio = min(1.0, max(0.0, ratio))
        for name, fn in (("keep-ratio + LIT", lambda c: threshold_chunks(tok, c, keep_ratio=ratio)),
                         ("random + LIT", lambda c: random_chunks(tok, c, ratio))):
            res = [reconstruct(tok, c, fn(c), lit) for c in clips]
            rows.append({"method": name, "param": round(ratio, 4), **{k: mean(res, k) for k in
                                                                      ("token_rate", "bpp", "psnr", "ssim")}})
            log(rows[-1])
    return rows, per_clip


def _positions(clips):
    return sum(z.shape[0] * z.shape[2] * z.shape[3] for c in clips for z in c.z)


def _first_frames(clips):
    return sum(c.z[0].shape[2] * c.z[0].shape[3] for c in clips)


def choose_threshold(rows, full_psnr):
    """The largest threshold whose mean PSNR (LIT, else hold-fill) is within MAX_LOSS_DB of full rate."""
    main = [r for r in rows if r["method"] == "threshold + LIT"] or [r for r in rows if r["method"] == "threshold + hold-fill"]
    ok = [r["param"] for r in main if r["psnr"] >= full_psnr - MAX_LOSS_DB]
    return max(ok) if ok else min(r["param"] for r in main)


def lit_cost(tok, clips, lit, thresholds, log):
    """LIT's time over the decoder's on the dev clips, as decompress runs them, alone on the machine:
    the sweep above measures the same while it runs for an hour, where other work skews the ratio."""
    rows = []
    for tau in thresholds:
        res = [reconstruct(tok, c, threshold_chunks(tok, c, tau), lit, tau) for c in clips]
        rows.append({"threshold": tau, "lit_decoder_time": lit_share(res),
                     "psnr_lit": float(np.mean([r["psnr"] for r in res]))})
        log(rows[-1])
    return rows


# --- 2. allocation cost ---------------------------------------------------------------------------

class Stream:
    """Decoder-side state of one clip (hold-fill, LIT context, tokeniser state), copyable for probes."""

    def __init__(self, tok, lit, threshold=None):
        self.dec = Decoder(tok, new_inpainter(tok, lit, threshold))

    def run(self, clip, i, chunk):
        """Chunk i of the clip (coded: Encoded), decoded -> its uint8 frames."""
        z = self.dec.dense(chunk)
        return to_frames(self.dec.frames(z)[:len(clip.refs[i])], clip.height, clip.width)


def chunk_psnr(ref, out):
    return float(np.mean([psnr(a, b) for a, b in zip(ref, out)]))


def single_pass(tok, clips, lit, threshold):
    t0 = time.perf_counter()
    ps, kept, total = [], 0, 0
    for c in clips:
        enc, st = codec(tok, threshold).encoder(), Stream(tok, lit, threshold)
        for i, z in enumerate(c.z):
            chunk = enc.encode_latents(z)
            ps += [psnr(a, b) for a, b in zip(c.refs[i], st.run(c, i, chunk))]
            kept, total = kept + int(chunk.mask.sum()), total + chunk.mask.numel()
    return {"seconds": time.perf_counter() - t0, "psnr": float(np.mean(ps)), "token_rate": kept / total}


def search_allocator(tok, clips, lit, target):
    """ElasticTok-style: per chunk, binary search for the fewest kept tokens whose
    reconstruction (a full LIT + decode per probe) reaches the target PSNR."""
    t0 = time.perf_counter()
    ps, kept, total, probes = [], 0, 0, 0
    for c in clips:
        enc, st = codec(tok, keep_ratio=1.0).encoder(), Stream(tok, lit)
        for i, z in enumerate(c.z):
            n = z.shape[0] * z.shape[2] * z.shape[3]
            tried = {}

            def probe(k):
                e2, st2 = enc.fork(), copy.deepcopy(st)
                chunk = e2.encode_latents(z, Rule(keep_ratio=k / n))
                out = st2.run(c, i, chunk)
                tried[k] = (e2, st2, chunk.mask, out)
                return chunk_psnr(c.refs[i], out) >= target
            lo, hi = 0, n
            if not probe(hi):
                lo = hi
            while lo < hi:
                probes += 1
                mid = (lo + hi) // 2
                if probe(mid):
                    hi = mid
                else:
                    lo = mid + 1
            if lo not in tried:
                probe(lo)
            enc, st, m, out = tried[lo]
            ps += [psnr(a, b) for a, b in zip(c.refs[i], out)]
            kept, total = kept + int(m.sum()), total + m.numel()
    return {"seconds": time.perf_counter() - t0, "psnr": float(np.mean(ps)), "token_rate": kept / total,
            "probes_per_chunk": probes / sum(len(c.z) for c in clips) + 1}


def probe_difficulty(tok, clips):
    """InfoTok-style probe at compress time: a full-rate decode measures each chunk's difficulty (MSE)."""
    out = {}
    for c in clips:
        st = Stream(tok, None)
        for i, chunk in enumerate(full_rate(tok, c)):
            rec = st.run(c, i, chunk)
            out[(c.name, i)] = float(np.mean((rec.astype(np.float32) - c.refs[i]) ** 2)) + 1.0
    return out


def probe_allocator(tok, clips, lit, base, difficulty):
    """Each chunk gets a keep ratio proportional to the square root of its probed difficulty."""
    med = float(np.median(list(difficulty.values())))
    ps, kept, total = [], 0, 0
    t0 = time.perf_counter()
    for c in clips:
        enc, st = codec(tok, keep_ratio=1.0).encoder(), Stream(tok, lit)
        for i, z in enumerate(c.z):
            chunk = enc.encode_latents(z, Rule(keep_ratio=min(1.0, base * math.sqrt(difficulty[(c.name, i)] / med))))
            ps += [psnr(a, b) for a, b in zip(c.refs[i], st.run(c, i, chunk))]
            kept, total = kept + int(chunk.mask.sum()), total + chunk.mask.numel()
    return {"seconds": time.perf_counter() - t0, "psnr": float(np.mean(ps)), "token_rate": kept / total}


def allocation_cost(tok, clips, lit, threshold, log):
    frames = sum(c.frames for c in clips)
    enc = sum(c.encode_s for c in clips)
    ours = single_pass(tok, clips, lit, threshold)
    goal = ours["psnr"]
    log({"allocator": "single pass", **ours})
    # the search needs a per-chunk target that lands on the same mean PSNR: chunks that cannot reach the
    # target pull the mean below it, so the target is raised by secant steps (at most 6 runs)
    tried = []
    target = goal
    for _ in range(6):
        search = search_allocator(tok, clips, lit, target)
        log({"allocator": "search", "target": target, **search})
        tried.append((target, search["psnr"]))
        if abs(search["psnr"] - goal) <= 0.2:
            break
        if len(tried) > 1 and tried[-1][1] != tried[-2][1]:
            (t0_, p0), (t1, p1) = tried[-2], tried[-1]
            target = t1 + (goal - p1) * (t1 - t0_) / (p1 - p0)
        else:
            target += 2 * (goal - search["psnr"])
        target = min(target, 60.0)
    t0 = time.perf_counter()
    difficulty = probe_difficulty(tok, clips)
    t_probe = time.perf_counter() - t0
    lo, hi, base = 0.0, 8.0, ours["token_rate"]
    for _ in range(10):
        probe = probe_allocator(tok, clips, lit, base, difficulty)
        log({"allocator": "probe", "base": base, **probe})
        if abs(probe["psnr"] - goal) <= 0.1:
            break
        lo, hi = (base, hi) if probe["psnr"] < goal else (lo, base)
        base = (lo + hi) / 2
    probe["seconds"] += t_probe
    rows = []
    for name, r in (("adaptok single pass", ours), ("search (ElasticTok-style)", search),
                    ("probe (InfoTok-style)", probe)):
        ms = (enc + r["seconds"]) / frames * 1000
        rows.append({"allocator": name, "ms_per_frame": ms, "psnr": r["psnr"], "token_rate": r["token_rate"],
                     "probes_per_chunk": r.get("probes_per_chunk")})
    for r in rows:
        r["x_single_pass"] = r["ms_per_frame"] / rows[0]["ms_per_frame"]
    return rows


# --- 3. ordinary codecs ---------------------------------------------------------------------------

CODECS = {"libx264": {"preset": "medium"}, "libx265": {"preset": "medium", "x265-params": "log-level=error"},
          "libsvtav1": {"preset": "8"}}


def codec_run(codec, clip: Clip, bpp):
    """Encode at adaptok's bpp; rate control misses small clips' targets, so one corrected second try."""
    r = _codec_once(codec, clip, bpp)
    if not 0.9 <= r["bpp"] / bpp <= 1.1:
        r = _codec_once(codec, clip, bpp * bpp / max(r["bpp"], 1e-6))
    return r


def _codec_once(codec, clip: Clip, bpp):
    frames = np.concatenate(clip.refs)
    h, w = clip.height, clip.width
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    buf = io.BytesIO()
    fps = Fraction(clip.fps).limit_denominator(1001)
    t0 = time.perf_counter()
    with av.open(buf, "w", format="matroska") as out:
        s = out.add_stream(codec, rate=fps, options=dict(CODECS[codec]))
        s.width, s.height, s.pix_fmt = pw, ph, "yuv420p"
        s.bit_rate = max(1000, int(bpp * w * h * float(fps)))
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    t_enc = time.perf_counter() - t0
    size = buf.tell()
    buf.seek(0)
    t0 = time.perf_counter()
    with av.open(buf, "r") as inp:
        dec = [f.to_ndarray(format="rgb24")[:h, :w] for f in inp.decode(video=0)]
    t_dec = time.perf_counter() - t0
    ref = frames[:, :h, :w]
    n = min(len(dec), len(ref))
    return {"psnr": float(np.mean([psnr(a, b) for a, b in zip(ref[:n], dec[:n])])),
            "ssim": float(np.mean(ssim(ref[:n], np.stack(dec[:n])))), "bpp": size * 8 / (len(ref) * w * h),
            "fps_encode": len(ref) / t_enc, "fps_decode": len(ref) / t_dec, "frames_out": len(dec)}


def codecs(clips, per_clip_adaptok, log):
    rows = []
    for codec in CODECS:
        res = []
        for c in clips:
            try:
                res.append(codec_run(codec, c, per_clip_adaptok[c.name]["bpp"]))
            except (av.error.FFmpegError, ValueError) as e:
                log({"codec": codec, "clip": c.name, "error": str(e)})
        if res:
            rows.append({"codec": codec, **{k: mean(res, k) for k in ("bpp", "psnr", "ssim", "fps_encode", "fps_decode")}})
            log(rows[-1])
    return rows


# --- 4. throughput and memory ---------------------------------------------------------------------

def moving_video(path, width, height, frames, fps=25, seed=0):
    """A textured picture panning and a square moving over it, written with x264 (fast)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / (9 + 4 * rng.random()) + rng.random() * 6) * np.cos(y / (13 + 4 * rng.random()))
                     for _ in range(3)], -1)
    base = ((base * 0.4 + 0.5) * 255 + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            f = np.roll(base, i // 2, 1).copy()
            y, x = (height // 3 + i) % (height - 16), (2 * i) % (width - 16)
            f[y:y + 16, x:x + 16] = 255
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def throughput(tok, sizes, frames, tmp, log):
    import adaptok_cli as atk
    rows = []
    for w, h, threshold in sizes:
        src = moving_video(Path(tmp) / f"t{w}x{h}.mp4", w, h, frames)
        c = atk.compress(src, Path(tmp) / f"t{w}.atok", loaded_tokenizer=tok, force=True, threshold=threshold)
        d = atk.decompress(Path(tmp) / f"t{w}.atok", Path(tmp) / f"t{w}.mkv", force=True)
        ct, dt = dict(c.timing), dict(d.timing)        # busy seconds per stage; stages overlap
        rows.append({"size": f"{w}x{h}", "threshold": threshold, "frames": frames, "fps_compress": frames / c.seconds,
                     "fps_decompress": frames / d.seconds, "fps_tokeniser_encode": frames / c.timing["encode"],
                     "fps_tokeniser_decode": frames / d.timing["decode"],
                     "compress_shares": {k: v / c.seconds for k, v in ct.items()},
                     "decompress_shares": {k: v / d.seconds for k, v in dt.items()}})
        log(rows[-1])
    return rows


def peak_rss_mb(*args, output=False):
    """Peak RSS (MB) of one adaptok command in its own process (and, output=True, its stdout)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, ROOT / "tests" / "peak_rss.py", *map(str, args)], capture_output=True,
                       text=True, env=env)
    if p.returncode:
        raise RuntimeError(p.stderr)
    mb = int(p.stderr.strip().splitlines()[-1]) / 1024
    return (mb, p.stdout) if output else mb


SCALING_SIZES = [(256, 256, 49), (854, 480, 49), (1280, 720, 25), (1920, 1080, 25), (3840, 2160, 9)]


def scaling(tmp, sizes, log):
    """Peak RSS, frames/s and megapixels/s of compress and decompress against frame size, each command
    in its own process; the speed is the command's own timer (--json seconds: no process start-up)."""
    rows = []
    for w, h, n in sizes:
        src = moving_video(Path(tmp) / f"s{w}x{h}.mp4", w, h, n)
        row = {"size": f"{w}x{h}", "frames": n}
        for cmd, a, b in (("compress", src, Path(tmp) / f"s{w}.atok"), ("decompress", Path(tmp) / f"s{w}.atok",
                                                                         Path(tmp) / f"s{w}.mkv")):
            mb, out = peak_rss_mb(cmd, a, "-o", b, "-f", "--json", output=True)
            secs = json.loads(out.splitlines()[-1])["seconds"]
            row.update({f"{cmd}_peak_rss_mb": mb, f"{cmd}_fps": n / secs, f"{cmd}_mpx_s": n * w * h / secs / 1e6})
        rows.append(row)
        log(row)
        for p in Path(tmp).glob(f"s{w}*"):
            p.unlink()
    return rows


def long_video_memory(tmp, lengths_s, fps, log, width=854, height=480):
    rows = []
    for secs in lengths_s:
        src = moving_video(Path(tmp) / f"long{secs}.mp4", width, height, int(secs * fps), fps)
        t0 = time.perf_counter()
        c = peak_rss_mb("compress", src, "-o", Path(tmp) / f"long{secs}.atok", "-q", "-f")
        d = peak_rss_mb("decompress", Path(tmp) / f"long{secs}.atok", "-o", Path(tmp) / f"long{secs}.mkv", "-q", "-f")
        rows.append({"seconds_of_video": secs, "fps": fps, "frames": int(secs * fps), "size": f"{width}x{height}",
                     "peak_rss_compress_mb": c, "peak_rss_decompress_mb": d, "wall_s": time.perf_counter() - t0})
        log(rows[-1])
        for p in Path(tmp).glob(f"long{secs}*"):
            p.unlink()
    return rows


def ray_against_local(paths, tmp, rounds, log):
    """The local batch (-j 2) against Ray with 2 CPUs, alternating, each round into fresh folders, the
    outputs compared byte for byte. Two views: the CLI's wall time, which for --ray includes starting
    and stopping a local Ray cluster; and compress_many() on a Ray that is already up (the engine's
    throughput: its actors start, load the models and run the files inside the timing, as the local
    pool's workers do)."""
    try:
        import ray
    except ImportError:
        return None
    from adaptok_cli.batch import compress_many
    clips = Path(tmp) / "ray-in"
    clips.mkdir()
    for p in paths:
        (clips / p.name).symlink_to(p.resolve())
    outs = {name: Path(tmp) / f"ray-out-{name}" for name in ("local", "ray", "local_api", "ray_api")}

    def cli(out, *extra):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "adaptok_cli", "compress", clips, "-o", out, "-j", "2", "-q", *extra],
                       check=True, capture_output=True)
        return time.perf_counter() - t0

    def api(out, on_ray):
        t0 = time.perf_counter()
        outcomes = compress_many(clips, out, workers=2, ray=on_ray)
        assert not [o.error for o in outcomes if o.error]
        return time.perf_counter() - t0

    rows = []
    for r in range(rounds):
        secs = {"local": cli(outs["local"]), "ray": cli(outs["ray"], "--ray"), "local_api": api(outs["local_api"], False)}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            secs["ray_api"] = api(outs["ray_api"], True)
        finally:
            ray.shutdown()
        made = sorted(p.name for p in outs["local"].iterdir())
        same = all(sorted(p.name for p in o.iterdir()) == made and all(
            (o / n).read_bytes() == (outs["local"] / n).read_bytes() for n in made) for o in outs.values())
        rows.append({"round": r + 1, "clips": len(paths), "cli_local_j2_s": secs["local"], "cli_ray_j2_s": secs["ray"],
                     "cli_ray_over_local": secs["ray"] / secs["local"], "engine_local_s": secs["local_api"],
                     "engine_ray_s": secs["ray_api"], "engine_ray_over_local": secs["ray_api"] / secs["local_api"],
                     "byte_identical": same})
        log(rows[-1])
        for o in outs.values():
            for p in o.iterdir():
                p.unlink()
    return rows


# --- report ---------------------------------------------------------------------------------------

def machine():
    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {platform.platform()}"


def table(rows, cols, fmt=None):
    fmt = fmt or {}
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("-" if v is None else (fmt.get(c, "{:.3f}").format(v) if isinstance(v, float) else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plots(rows, out_dir, codecs=None, default=None):
    """The rate-distortion figures: PSNR (dB) and SSIM against token rate and against bits per pixel,
    every method of the sweep, the default threshold marked, and the video codecs as baselines where
    the x axis is bits per pixel."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    for x, name, xlabel in (("token_rate", "rd_token_rate.png", "token rate (kept / all latent positions)"),
                            ("bpp", "rd_bpp.png", "bits per pixel of the .atok file")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
        for ax, y, ylabel in zip(axes, ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
            for method in dict.fromkeys(r["method"] for r in rows):
                pts = sorted((r[x], r[y]) for r in rows if r["method"] == method)
                ax.plot(*zip(*pts), "o-" if len(pts) > 1 else "*", label=method, markersize=5 if len(pts) > 1 else 12)
            for r in rows:
                if default is not None and r["method"] == "threshold + LIT" and r["param"] == default:
                    ax.plot(r[x], r[y], "s", mfc="none", mec="black", markersize=13, label=f"default threshold {default}")
            if x == "bpp":
                for c in codecs or []:
                    ax.plot(c["bpp"], c[y], "^", markersize=9, label=f"{c['codec']} (same bpp)")
            ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.grid(alpha=0.3)
        # one legend for both panels, below them: inside, it hid the points at the right (full rate)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize=8)
        fig.suptitle(f"Quality against {'token rate' if x == 'token_rate' else 'bits per pixel'}: dev clips, "
                     f"against the decoded input")
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


SECTIONS = ("rd", "loss_maps", "lit_cost", "codecs", "alloc", "throughput", "memory", "scaling", "ray", "families",
            "startup", "pipeline", "cache")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test on generated clips, under a minute")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("ADAPTOK_BENCH_DATA", DEV)),
                    help="the dev clips (default: $ADAPTOK_BENCH_DATA or the project's dev folder)")
    ap.add_argument("--out", type=Path, help="folder for BENCHMARKS.md, bench-results.json and plots "
                                             "(docs/; bench-out/ with --quick)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="which parts to run; the others are kept from an earlier bench-results.json")
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--alloc-frames", type=int, default=48, help="frames per clip in the allocator comparison")
    ap.add_argument("--long-seconds", default="10,600", help="video lengths for the memory figure")
    ap.add_argument("--long-fps", type=float, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plots-only", action="store_true",
                    help="redraw the figures and BENCHMARKS.md from the saved bench-results.json (no measuring)")
    ap.add_argument("--unit", choices=UNITS, default=DEFAULT_UNIT, help="the rule's unit of change")
    ap.add_argument("--lit", type=Path, help="a LIT .safetensors to measure instead of the shipped one")
    ap.add_argument("--readme", action="store_true",
                    help="write the headline of the saved docs/bench-results.json into README.md (no measuring)")
    families.add_arguments(ap)
    startup.add_arguments(ap)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.readme:
        return update_readme(json.loads((ROOT / "docs" / "bench-results.json").read_text()))
    torch.set_num_threads(args.threads)
    global UNIT
    UNIT = args.unit
    sections = [x for x in args.sections.split(",") if x]
    if not set(sections) <= set(SECTIONS):
        sys.exit(f"bench: --sections takes {','.join(SECTIONS)}")
    out = args.out or ROOT / ("bench-out" if args.quick else "docs")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "bench-results.json"
    if args.plots_only:
        return redraw(json.loads(results_path.read_text()), out)
    results = json.loads(results_path.read_text()) if results_path.exists() and set(sections) != set(SECTIONS) else {}
    command = " ".join(["python -m bench.bench", *(argv if argv is not None else sys.argv[1:])])
    with open(out / "bench-log.jsonl", "a") as log_file:
        def log(row):
            print(json.dumps(row, default=float), flush=True)
            log_file.write(json.dumps(row, default=float) + "\n")
        if not run_sections(args, sections, results, results_path, command, log):
            return
    pngs = plots(results["rd"], out, results.get("codecs"), results.get("threshold")) if "rd" in results else []
    write_markdown(results, pngs, out / "BENCHMARKS.md")
    print(f"wrote {out / 'BENCHMARKS.md'}")


def redraw(saved: dict, out: Path):
    """--plots-only: the figures and BENCHMARKS.md from saved results, nothing measured."""
    pngs = plots(saved["rd"], out, saved.get("codecs"), saved.get("threshold")) if "rd" in saved else []
    if (out / "loss_maps.npz").exists():
        loss_maps.draw(loss_maps.load(out / "loss_maps.npz"), saved["threshold"], saved.get("lit", True),
                       out / "loss_maps.png")
    write_markdown(saved, pngs, out / "BENCHMARKS.md")
    print("wrote", *pngs, *(["loss_maps.png"] if (out / "loss_maps.npz").exists() else []), out / "BENCHMARKS.md")


@dataclass
class Run:
    """What every section of one benchmark run shares."""
    args: argparse.Namespace
    tok: object
    lit: object
    tmp: str
    out: Path
    log: object
    paths: list = field(default_factory=list)
    thresholds: list = field(default_factory=list)
    short_side: int | None = None
    clips: list | None = None       # the clips, read and encoded once by the first section that needs them


def run_sections(args, sections, results, results_path, command, log) -> bool:
    """Run each section, saving the results after each (a later run keeps the sections it does not
    rerun) -> False when there was nothing to measure."""
    tok = load_tokenizer("tinytok")
    lit = ModelRef(args.lit) if args.lit else shipped_lit(tok)
    results.update(machine=machine(), lit=bool(lit), unit=UNIT)
    runs = results.setdefault("runs", {})
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(args, tok, lit, tmp, results_path.parent, log)
        if args.quick:
            run.paths = [moving_video(Path(tmp) / f"q{i}.mp4", 128, 96, 21, seed=i) for i in range(2)]
            run.thresholds = [0.1, 0.3]
        else:
            if not args.data.is_dir() and sections == ["cache"]:
                print(f"bench: {args.data} not found: section cache skipped")
                return False
            if not args.data.is_dir():
                sys.exit(f"bench: {args.data} not found (use --quick for generated clips)")
            run.paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
            run.thresholds, run.short_side = THRESHOLDS, args.short_side
        for section in sections:
            started = time.time()
            run_section(section, run, results)
            runs[section] = {"command": command, "date": time.strftime("%Y-%m-%d"),
                             "minutes": (time.time() - started) / 60}
            results_path.write_text(json.dumps(results, indent=1, default=float))
    return True


def run_section(section, run: Run, results):
    """One section's measurements into results."""
    args, tok, lit, log, tmp, quick = run.args, run.tok, run.lit, run.log, run.tmp, run.args.quick
    if section in ("rd", "loss_maps", "lit_cost", "codecs") and run.clips is None:
        run.clips = [load_clip(p, tok, run.short_side) for p in run.paths]
        results["clips"] = [(c.name, c.width, c.height, c.frames) for c in run.clips]
        log({"clips": results["clips"]})
    clips = run.clips
    if section == "rd":
        rd, per_clip = rate_distortion(tok, clips, lit, run.thresholds, log)
        tau = choose_threshold(rd, rd[0]["psnr"])
        log({"chosen_threshold": tau})
        results.update(rd=rd, threshold=tau, per_clip={c.name: per_clip[(tau, c.name)] for c in clips})
    elif section == "loss_maps":
        results["loss_maps"], maps = loss_maps.measure(tok, clips, lit, results["threshold"], threshold_chunks,
                                                       full_rate, new_inpainter)
        loss_maps.save(maps, run.out / "loss_maps.npz")
        loss_maps.draw(maps, results["threshold"], bool(lit), run.out / "loss_maps.png")
        log({"loss_maps": results["loss_maps"]})
    elif section == "lit_cost":
        results["lit_cost"] = lit_cost(tok, clips, lit, [results["threshold"], 0.25, 0.4], log)
    elif section == "codecs":
        results["codecs"] = codecs(clips, {k: v["lit"] for k, v in results["per_clip"].items()}, log)
    elif section == "alloc":
        alloc_clips = [load_clip(p, tok, run.short_side, 16 if quick else args.alloc_frames) for p in run.paths]
        results["allocators"] = allocation_cost(tok, alloc_clips, lit, results["threshold"], log)
        results["alloc_frames"] = [c.frames for c in alloc_clips]
    elif section == "throughput":
        # the default threshold, and 0.4 where decompression runs LIT (pipeline.LIT_FROM_THRESHOLD)
        sizes = [(64, 64, None), (64, 64, 0.4)] if quick else [
            (256, 256, None), (256, 256, 0.4), (854, 480, None), (854, 480, 0.4)]
        results["throughput"] = throughput(tok, sizes, 9 if quick else 97, tmp, log)
    elif section == "scaling":
        results["scaling"] = scaling(tmp, [(64, 64, 9), (96, 64, 5)] if quick else SCALING_SIZES, log)
    elif section == "memory":
        longs = [float(x) for x in ("1,2" if quick else args.long_seconds).split(",")]
        results["memory"] = long_video_memory(tmp, longs, args.long_fps, log, *((64, 48) if quick else (854, 480)))
    elif section == "ray":
        results["ray"] = ray_against_local(run.paths, tmp, 1 if quick else 3, log)
    elif section == "families":
        results["families"] = families.run(args, tmp, log, moving_video)
    elif section == "startup":
        results["startup"] = startup.run(args, tmp, log)
    elif section == "pipeline":
        results["pipeline"] = pipeline_bench.run(tmp, quick, log)
    elif section == "cache":
        results["cache"] = {**cache.run(tok, run.paths, run.short_side, log, quick), "machine": machine()}


def ran(r, section):
    x = r["runs"][section]
    return f"_`{x['command']}`, {x['date']}, {x['minutes']:.1f} min._"


def write_markdown(r, pngs, path):
    """BENCHMARKS.md from bench-results.json; each section says which command produced it and when."""
    lines = ["# Benchmarks", "",
             f"Written by `make bench` (`python -m bench.bench`; sections can be rerun alone with `--sections`). "
             f"Machine: {r['machine']}. LIT {'installed' if r['lit'] else 'not installed (hold-fill only)'}.", ""]
    if "clips" in r:
        lines += clips_markdown(r)
    if "rd" in r:
        lines += rd_markdown(r, pngs)
    if "lit_cost" in r:
        lines += lit_cost_markdown(r)
    if "allocators" in r:
        lines += alloc_markdown(r)
    if "codecs" in r:
        lines += codecs_markdown(r)
    if "throughput" in r:
        lines += throughput_markdown(r)
    if "memory" in r:
        lines += memory_markdown(r)
    if r.get("ray") and "engine_ray_s" in r["ray"][0]:
        lines += ray_markdown(r)
    if "scaling" in r:
        lines += scaling_markdown(r)
    lines += families.markdown(r, ran, table) + startup.markdown(r, ran, table) + pipeline_bench.markdown(r, ran, table)
    lines += cache.markdown(r, ran, table)
    lines += targets_markdown(r)
    path.write_text("\n".join(lines))


def clips_markdown(r) -> list[str]:
    return [f"Clips: {len(r['clips'])} ({sum(c[3] for c in r['clips'])} frames), short side 256: "
            + ", ".join(f"{c[0]} {c[1]}x{c[2]} ({c[3]} f)" for c in r["clips"]) + ". "
            "PSNR and SSIM are against the input frames at that size, averaged per clip, then over clips. "
            "Each clip is encoded once; methods differ only in the positions they keep and how they fill the rest.",
            ""]


def lit_cost_markdown(r) -> list[str]:
    return ["## LIT's cost, measured alone", "", ran(r, "lit_cost"), "",
            "LIT's time over the decoder's, summed over the dev clips' chunks, decoded as decompress does at "
            "a few thresholds, with nothing else running (the sweep's column is taken over an hour, where other "
            "work skews it).", "",
            table(r["lit_cost"], ["threshold", "lit_decoder_time", "psnr_lit"],
                  {"threshold": "{:g}", "lit_decoder_time": "{:.1%}", "psnr_lit": "{:.2f}"}), ""]


def alloc_markdown(r) -> list[str]:
    return ["## Allocation cost at equal quality", "", ran(r, "alloc"), "",
            f"Same tokeniser and LIT, threshold {r['threshold']:g}, the first {max(r['alloc_frames'])} frames of "
            "each clip. Wall time per frame includes the shared encode. The search allocator's per-chunk PSNR "
            "target is raised until its mean lands within 0.2 dB of the single pass; the probe allocator's "
            "base rate is bisected the same way (only the final run is timed). The psnr column shows "
            "whether each really reached the single pass's quality.", "",
            table(r["allocators"], ["allocator", "ms_per_frame", "x_single_pass", "psnr", "token_rate",
                                    "probes_per_chunk"],
                  {"ms_per_frame": "{:.1f}", "x_single_pass": "{:.2f}x", "psnr": "{:.2f}",
                   "probes_per_chunk": "{:.1f}"}), ""]


def codecs_markdown(r) -> list[str]:
    pc = r["per_clip"].values()
    return ["## Ordinary codecs at adaptok's bits per pixel", "", ran(r, "codecs"), "",
            f"Per clip, each codec's bitrate is set to adaptok's bpp at threshold {r['threshold']:g} (with LIT), "
            "with one corrected retry when rate control misses by more than 10%: "
            f"adaptok {np.mean([v['lit']['bpp'] for v in pc]):.4f} bpp, "
            f"PSNR {np.mean([v['lit']['psnr'] for v in pc]):.2f} dB, "
            f"SSIM {np.mean([v['lit']['ssim'] for v in pc]):.4f}.", "",
            table(r["codecs"], ["codec", "bpp", "psnr", "ssim", "fps_encode", "fps_decode"],
                  {"psnr": "{:.2f}", "ssim": "{:.4f}", "bpp": "{:.4f}", "fps_encode": "{:.0f}",
                   "fps_decode": "{:.0f}"}), ""]


def throughput_markdown(r) -> list[str]:
    rows = [{"size": x["size"], "threshold": x.get("threshold") or "default", "frames": x["frames"], "compress fps": x["fps_compress"],
             "decompress fps": x["fps_decompress"], "tokeniser encode fps": x.get("fps_tokeniser_encode"),
             "tokeniser decode fps": x.get("fps_tokeniser_decode"),
             "compress time shares": ", ".join(f"{k} {v:.0%}" for k, v in x["compress_shares"].items()),
             "decompress time shares": ", ".join(f"{k} {v:.0%}" for k, v in x["decompress_shares"].items())}
            for x in r["throughput"]]
    return ["## Throughput", "", ran(r, "throughput"), "",
            "A generated clip (panning texture, moving square) through `adaptok_cli.compress` and `decompress`, "
            "end to end including video reading and writing, at the default threshold and at 0.4 (where "
            "decompression runs LIT).", "",
            table(rows, list(rows[0]), {"compress fps": "{:.1f}", "decompress fps": "{:.1f}",
                                        "tokeniser encode fps": "{:.1f}", "tokeniser decode fps": "{:.1f}"}),
            "", "The tokeniser columns count the network alone (frames / time inside encode or decode). A time "
            "share is a stage's busy time over the wall time; the stages run at once (adaptok_cli/overlap.py), so "
            "the shares can add up to more than 100%.", ""]


def memory_markdown(r) -> list[str]:
    return ["## Peak memory against video length", "", ran(r, "memory"), "",
            "Peak resident memory (VmHWM) of `adaptok compress` and `adaptok decompress` processes on generated "
            "videos of different lengths.", "",
            table(r["memory"], ["seconds_of_video", "fps", "frames", "size", "peak_rss_compress_mb",
                                "peak_rss_decompress_mb"],
                  {"seconds_of_video": "{:g}", "fps": "{:g}", "peak_rss_compress_mb": "{:.0f}",
                   "peak_rss_decompress_mb": "{:.0f}"}), ""]


def ray_markdown(r) -> list[str]:
    cols = ["round", "clips", "cli_local_j2_s", "cli_ray_j2_s", "cli_ray_over_local", "engine_local_s",
            "engine_ray_s", "engine_ray_over_local", "byte_identical"]
    return ["## Ray against the local batch", "", ran(r, "ray"), "",
            f"The {r['ray'][0]['clips']} clips of this run (the dev clips; generated ones with --quick) at their own size, 2 workers each way, alternating, each "
            "round into empty folders; every output is compared byte for byte. `cli_*`: the wall time of "
            "`adaptok compress CLIPS -o OUT -j 2 -q`, and of the same with `--ray`, which also starts and "
            "stops a local Ray cluster (about 5 s here). `engine_*`: `adaptok_cli.compress_many(CLIPS, OUT, "
            "workers=2, ray=...)` on a Ray that is already up: actors or pool workers start, load the models "
            "and run the files inside the timing. The target is Ray within 10% of the local batch "
            "(ratio <= 1.10).", "",
            table(r["ray"], cols, {c: "{:.1f}" for c in cols if c.endswith("_s")}
                  | {"cli_ray_over_local": "{:.2f}", "engine_ray_over_local": "{:.2f}"}), ""]


def scaling_markdown(r) -> list[str]:
    f0, f1 = "{:.0f}", "{:.2f}"
    first = r["scaling"][0]
    scaled = [x | {f"{c}_mpx_s_vs_first": x[f"{c}_mpx_s"] / first[f"{c}_mpx_s"] for c in ("compress", "decompress")}
              for x in r["scaling"]]
    return ["## Memory and speed against frame size", "", ran(r, "scaling"), "",
            "Each command in its own process on a generated panning clip (x264 input, FFV1 output), default "
            "settings; peak RSS is VmHWM, speed the command's own time (`--json` seconds). Megapixels/s is "
            "what says whether large frames run at the per-pixel speed of small ones.", "",
            table(scaled, ["size", "frames", "compress_peak_rss_mb", "compress_fps", "compress_mpx_s",
                           "compress_mpx_s_vs_first", "decompress_peak_rss_mb", "decompress_fps",
                           "decompress_mpx_s", "decompress_mpx_s_vs_first"],
                  {"compress_peak_rss_mb": f0, "decompress_peak_rss_mb": f0, "compress_fps": f1,
                   "decompress_fps": f1, "compress_mpx_s": f1, "decompress_mpx_s": f1,
                   "compress_mpx_s_vs_first": "{:.2f}x", "decompress_mpx_s_vs_first": "{:.2f}x"}), "",
            f"`_vs_first`: megapixels/s over that at {r['scaling'][0]['size']}, in the same run.", ""]


def at_rate(rows, rate):
    """PSNR linearly interpolated at a token rate from rows with token_rate and psnr; None outside them."""
    pts = sorted((x["token_rate"], x["psnr"]) for x in rows)
    for (r0, p0), (r1, p1) in zip(pts, pts[1:]):
        if r0 <= rate <= r1:
            return p0 + (p1 - p0) * (rate - r0) / max(r1 - r0, 1e-9)
    return None


def targets_markdown(r) -> list[str]:
    """The figures the open issues set targets on, worked out from the sections above."""
    rows = []
    if "rd" in r:
        tau, full = r["threshold"], r["rd"][0]["psnr"]
        lit = [x for x in r["rd"] if x["method"] == "threshold + LIT"] or [
            x for x in r["rd"] if x["method"] == "threshold + hold-fill"]      # no LIT installed
        at = next(x for x in lit if x["param"] == tau)
        clips = r["per_clip"].values()
        best_fill = max(("hold", "interp"), key=lambda f: np.mean([v[f]["psnr"] for v in clips if f in v]))
        fill = np.mean([v[best_fill]["psnr"] for v in clips])
        p57 = at_rate(lit, 0.57)
        rows += [
            ("PSNR at token rate 0.57 (threshold + LIT, interpolated)", ">= 27.6 dB", f"{p57:.2f} dB" if p57 else "-"),
            (f"loss against full rate at the default ({tau:g})", "<= 0.3 dB at rate <= 0.60",
             f"{full - at['psnr']:.2f} dB at rate {at['token_rate']:.3f}"),
            (f"LIT over the best non-learned fill ({best_fill}) at the default", ">= 0.3 dB",
             f"{at['psnr'] - fill:+.2f} dB"),
            ("worst clip, LIT against that fill", ">= -0.05 dB",
             "{:+.2f} dB ({})".format(*min((v["lit"]["psnr"] - v[best_fill]["psnr"], k) for k, v in r["per_clip"].items()))),
            ("worst clip's loss against its full rate", "<= 1.0 dB",
             "{:.2f} dB ({})".format(*max((v["full"]["psnr"] - v["lit"]["psnr"], k) for k, v in r["per_clip"].items()))),
            ("LIT time / decoder at the default" + (" (measured alone)" if "lit_cost" in r else ""), "<= 25%",
             f"{next((x for x in r.get('lit_cost', []) if x['threshold'] == tau), at).get('lit_decoder_time', float('nan')):.1%}")]
    by_size = {x["size"]: x for x in r.get("scaling", [])}
    if {"256x256", "854x480", "1920x1080", "3840x2160"} <= set(by_size):
        s0 = by_size["256x256"]
        for size, bound in (("854x480", 500), ("1920x1080", 1000), ("3840x2160", 2000)):
            x = by_size[size]
            rows.append((f"peak RSS at {size}, compress / decompress", f"{'<' if size == '3840x2160' else '<='} {bound} MB",
                         f"{x['compress_peak_rss_mb']:.0f} / {x['decompress_peak_rss_mb']:.0f} MB"))
        for size in ("854x480", "1920x1080"):
            x = by_size[size]
            rows.append((f"megapixels/s at {size} over 256x256, compress / decompress", ">= 0.80x",
                         f"{x['compress_mpx_s'] / s0['compress_mpx_s']:.2f}x / "
                         f"{x['decompress_mpx_s'] / s0['decompress_mpx_s']:.2f}x"))
    if len(r.get("memory", [])) >= 2:
        short, long = r["memory"][0], r["memory"][-1]
        rows.append((f"peak RSS, {long['seconds_of_video']:g} s against {short['seconds_of_video']:g} s at "
                     f"{short['size']}, compress / decompress", "within 5%",
                     f"{long['peak_rss_compress_mb'] / short['peak_rss_compress_mb'] - 1:+.1%} / "
                     f"{long['peak_rss_decompress_mb'] / short['peak_rss_decompress_mb'] - 1:+.1%}"))
    if not rows:
        return []
    return ["## Targets", "", "Worked out from the tables above; the targets are those of the quality and memory "
            "issues. Experiments that changed nothing shipped (rule variants, LIT designs) are in "
            "docs/EXPERIMENTS.md with their commands.", "",
            table([{"figure": a, "target": b, "measured": c} for a, b, c in rows], ["figure", "target", "measured"]), ""]


def headline(r) -> str:
    """The short table README.md carries (between its headline markers), from the full results."""
    if not all(k in r for k in ("rd", "allocators", "throughput", "codecs")):
        return ""
    tau, full = r["threshold"], r["rd"][0]
    main = next(x for x in r["rd"] if x["param"] == tau and x["method"] in ("threshold + LIT", "threshold + hold-fill"))
    hold = next(x for x in r["rd"] if x["param"] == tau and x["method"] == "threshold + hold-fill")
    t256 = next((x for x in r["throughput"] if x["size"] == "256x256" and not x.get("threshold")),
                r["throughput"][0])
    alloc = {a["allocator"].split()[0]: a["x_single_pass"] for a in r["allocators"]}
    x264 = next((c for c in r["codecs"] if c["codec"] == "libx264"), None)
    rows = [
        ("mean token rate at the default threshold " + f"{tau:g}", f"{main['token_rate']:.3f}"),
        ("PSNR / SSIM as decompressed" + (" (hold-fill at this threshold)" if tau < LIT_FROM_THRESHOLD else " (LIT)"),
         f"{(hold if tau < LIT_FROM_THRESHOLD else main)['psnr']:.2f} dB / "
         f"{(hold if tau < LIT_FROM_THRESHOLD else main)['ssim']:.3f}"),
        ("PSNR with LIT / hold-fill / full rate", f"{main['psnr']:.2f} / {hold['psnr']:.2f} / {full['psnr']:.2f} dB"),
        ("bits per pixel (.atok)", f"{main['bpp']:.3f}"),
        (f"compress / decompress, {t256['size']}, 2-core CPU", f"{t256['fps_compress']:.0f} / {t256['fps_decompress']:.0f} frames/s"),
        ("time of a search allocator (ElasticTok-style) / probe allocator (InfoTok-style), same PSNR",
         f"{alloc.get('search', float('nan')):.1f}x / {alloc.get('probe', float('nan')):.2f}x ours"),
    ]
    if x264:
        rows.append(("libx264 at the same bpp", f"{x264['psnr']:.2f} dB / {x264['ssim']:.3f} at {x264['bpp']:.3f} bpp"))
    return "\n".join(["| dev clips, short side 256 | |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]])


def _minus(a, b):
    return None if a is None or b is None else a - b


def update_readme(r, readme=ROOT / "README.md"):
    start, end = "<!-- headline:start -->", "<!-- headline:end -->"
    text, table_md = readme.read_text(), headline(r)
    if table_md and start in text and end in text:
        a, b = text.index(start) + len(start), text.index(end)
        readme.write_text(text[:a] + "\n" + table_md + "\n" + text[b:])


def lit_gain(r, tau) -> float:
    """Mean PSNR of threshold + LIT minus threshold + hold-fill at threshold tau."""
    psnr = {row["method"]: row["psnr"] for row in r["rd"] if row["param"] == tau}
    return psnr["threshold + LIT"] - psnr["threshold + hold-fill"]


def per_clip_rows(r) -> list[dict]:
    """The per-clip table at the chosen threshold."""
    return [{"clip": k, "token_rate": v["lit"]["token_rate"], "bpp": v["lit"]["bpp"],
             "PSNR LIT": v["lit"]["psnr"], "PSNR hold-fill": v["hold"]["psnr"],
             "PSNR interp-fill": v.get("interp", {}).get("psnr"), "PSNR full rate": v["full"]["psnr"],
             "loss vs full (dB)": v["full"]["psnr"] - v["lit"]["psnr"],
             "SSIM": v["lit"]["ssim"], "seam dB": v["lit"].get("seam_psnr_minus_mean"),
             "seam dB, full rate": v["full"].get("seam_psnr_minus_mean"),
             "seam vs full rate": _minus(v["lit"].get("seam_psnr_minus_mean"), v["full"].get("seam_psnr_minus_mean"))}
            for k, v in r["per_clip"].items()]


def rd_markdown(r, pngs):
    tau, full = r["threshold"], r["rd"][0]
    lit_rows = [x for x in r["rd"] if x["method"] == "threshold + LIT"]
    hold_rows = {x["param"]: x for x in r["rd"] if x["method"] == "threshold + hold-fill"}
    interp_rows = {x["param"]: x for x in r["rd"] if x["method"] == "threshold + interp-fill"}
    sweep = []
    for x in lit_rows or hold_rows.values():
        h = hold_rows[x["param"]]
        sweep.append({"threshold": x["param"], "token_rate": x["token_rate"], "bpp": x["bpp"],
                      "PSNR LIT": x["psnr"] if lit_rows else None, "PSNR hold-fill": h["psnr"],
                      "PSNR interp-fill": interp_rows.get(x["param"], {}).get("psnr"),
                      "PSNR full rate": full["psnr"], "loss vs full (dB)": full["psnr"] - x["psnr"],
                      "LIT gain (dB)": (x["psnr"] - h["psnr"]) if lit_rows else None,
                      "latent MSE dropped, hold": h.get("latent_mse_dropped"),
                      "latent MSE dropped, LIT": x.get("latent_mse_dropped") if lit_rows else None,
                      "seam dB": x.get("seam_psnr_minus_mean"),
                      "LIT time / decoder": x.get("lit_decoder_time") if lit_rows else None})
    clip_rows = per_clip_rows(r)
    f2 = "{:.2f}"
    return [
        "## Threshold sweep and the default threshold", "", ran(r, "rd"), "",
        table(sweep, list(sweep[0]), {"threshold": "{:g}", "PSNR LIT": f2, "PSNR hold-fill": f2, "PSNR full rate": f2,
                                      "PSNR interp-fill": f2,
                                      "loss vs full (dB)": f2, "LIT gain (dB)": f2, "seam dB": "{:+.2f}",
                                      "latent MSE dropped, hold": "{:.4f}", "latent MSE dropped, LIT": "{:.4f}",
                                      "LIT time / decoder": "{:.1%}"}), "",
        f"The rule's unit: **{r.get('unit', 'spread')}** (`--unit`; adaptok_cli/calibration.py). "
        f"Chosen threshold: **{tau:g}**, the largest of the sweep whose mean PSNR is within {MAX_LOSS_DB} dB of "
        "full rate. Latent MSE is on dropped positions only, in units of the per-channel scale. "
        "'seam dB' is the mean PSNR of the first latent frame of every chunk after the first, minus the clip mean. "
        "'LIT time / decoder' is LIT's time over the decoder's, summed over the clips' chunks: LIT runs only on the "
        "8x8 tiles of a chunk where something was dropped. "
        f"The LIT rows always run LIT; `adaptok decompress` runs it only for thresholds of {LIT_FROM_THRESHOLD:g} "
        f"and above (`models.LIT_FROM_THRESHOLD`). At the default threshold it measured {lit_gain(r, tau):+.2f} dB "
        "over hold-fill (the 'LIT gain' column; per clip below).",
        "", f"Per clip at threshold {tau:g}:", "",
        table(clip_rows, list(clip_rows[0]), {"PSNR LIT": f2, "PSNR hold-fill": f2, "PSNR full rate": f2,
                                              "PSNR interp-fill": f2, "loss vs full (dB)": f2,
                                              "seam dB": "{:+.2f}", "seam dB, full rate": "{:+.2f}",
                                              "seam vs full rate": "{:+.2f}"}), "",
        "'seam dB, full rate' is the same measure with nothing dropped: where it is large, the frames that begin "
        "chunks are simply easier or harder content. `python -m experiments.seam_check CLIP` decodes a clip at full "
        "rate in chunks and as one chunk and scores the same frames: if the two seam figures agree, the "
        "chunking itself leaves no seam. 'seam vs full rate' is what dropping and filling add. "
        "'interp-fill' moves a dropped position from its held value towards its next kept value in the chunk, "
        "within the threshold's bound (the best non-learned fill must be beaten, not only holding).", "",
        *([f"Where and when dropping costs at threshold {tau:g} (extra squared error per pixel, mean over frames; "
           "dB lost per frame): ![loss maps](loss_maps.png)", ""] if r.get("loss_maps") else []),
        "## Rate-distortion: content-driven allocation against fixed and random budgets", "",
        table(r["rd"], ["method", "param", "token_rate", "bpp", "psnr", "ssim"], {"psnr": f2, "ssim": "{:.4f}"}), "",
        "`keep-ratio` keeps the same number of positions in every chunk (the largest changes); `random` keeps "
        "that many in every latent frame, uniformly at random. Both are matched to the mean token rate of the threshold row above them "
        "and filled by LIT.", "",
        *[f"![{p}]({p})" for p in pngs], ""]


if __name__ == "__main__":
    main()
