"""Section `codecs`: libx264, libx265 and libsvtav1 at adaptok's bits per pixel, clip by clip."""
from __future__ import annotations

import io
import os
import time
from fractions import Fraction

import av
import numpy as np

from adaptok_cli.measure.metrics import psnr, ssim

from .clips import Clip
from .common import mean, ran, table

os.environ.setdefault("SVT_LOG", "1")  # libsvtav1: errors only

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


def markdown(r) -> list[str]:
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
