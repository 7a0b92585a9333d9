"""`adaptok eval`: compress + decompress in memory and measure what dropping and LIT cost and earn.

One encode per clip feeds three decodes of the same latents: full rate (nothing dropped),
hold-fill (dropped positions hold their last kept value) and LIT. PSNR/SSIM are against the
decoded input frames (at --short-side), computed on the uint8 frames a user would get.
"""
from __future__ import annotations

import io
import time

import numpy as np

from .container import AtokWriter, Chunk
from .metrics import psnr, ssim
from .pipeline import (ChunkDecoder, ChunkEncoder, CompressOptions, frame_chunks, inpainter_for, make_header,
                       to_frames)
from .tokenizer import Tokenizer, load_tokenizer, pick_device
from .video import VideoReader


class _Scores:
    def __init__(self):
        self.psnr, self.ssim = [], []

    def add(self, ref, out):
        self.psnr += [psnr(a, b) for a, b in zip(ref, out)]
        self.ssim += list(ssim(ref, out))

    def means(self):
        return float(np.mean(self.psnr)), float(np.mean(self.ssim))


def evaluate(path, opts: CompressOptions, use_lit=True, tokenizer: Tokenizer | None = None,
             progress=None, chunk_psnr=False, upscale=False) -> dict:
    """Scores of one clip (see the module docstring). opts.short_side only ever shrinks a clip
    unless upscale=True: a clip smaller than that is scored at its own size."""
    opts.check()
    device = pick_device(opts.device)
    tok = tokenizer or load_tokenizer(opts.tokenizer, device)
    reader = VideoReader(path, short_side=opts.short_side, max_side=opts.max_side)
    if opts.short_side and not upscale and min(reader.info.source_width, reader.info.source_height) <= opts.short_side:
        reader.close()
        reader = VideoReader(path, max_side=opts.max_side)
    info = reader.info
    header = make_header(tok, None, opts, info.width, info.height, info.fps, str(path))
    inpainter, note = inpainter_for({"lit": None, "threshold": opts.threshold}, tok, path, use_lit, device)
    buf = io.BytesIO()
    writer = AtokWriter(buf, header, opts.level)
    enc = ChunkEncoder(tok, opts)
    dec_full, dec_hold = ChunkDecoder(tok, None), ChunkDecoder(tok, None)
    dec_lit = ChunkDecoder(tok, inpainter) if inpainter else None
    full, hold, lit = _Scores(), _Scores(), _Scores()
    frames = kept = total = 0
    t_write = 0.0
    mse_hold, mse_lit, n_dropped = 0.0, 0.0, 0
    chunk_first_psnr = []
    with reader:
        for chunk_frames, real in frame_chunks(reader, tok, opts.chunk):
            ref = np.stack(chunk_frames[:real])
            z = enc.latents(chunk_frames)
            mask, codes, qscale, zq = enc.select(z)
            t0 = time.perf_counter()
            writer.write_chunk(mask, codes, qscale)
            t_write += time.perf_counter() - t0
            chunk = Chunk(0, mask, codes, qscale)
            full.add(ref, to_frames(dec_full.frames(zq)[:real], info.height, info.width))
            zh = dec_hold.dense(chunk)
            out_hold = to_frames(dec_hold.frames(zh)[:real], info.height, info.width)
            hold.add(ref, out_hold)
            dropped = ~mask[:, None].expand_as(zq)
            n_dropped += int(dropped.sum())
            mse_hold += float(((zh - zq)[dropped] ** 2).sum())
            if dec_lit:
                zl = dec_lit.dense(chunk)
                out_lit = to_frames(dec_lit.frames(zl)[:real], info.height, info.width)
                lit.add(ref, out_lit)
                mse_lit += float(((zl - zq)[dropped] ** 2).sum())
            main = lit if dec_lit else hold
            chunk_first_psnr.append(main.psnr[-real])
            frames += real
            kept += int(mask.sum())
            total += mask.numel()
            if progress:
                progress(real)
    writer.close(max(frames, 1))
    main, main_dec = (lit, dec_lit) if dec_lit else (hold, dec_hold)
    p, s = main.means()
    pf, sf = full.means()
    ph, sh = hold.means()
    t_comp = enc.timing["encode"] + enc.timing["mask"] + t_write
    t_dec = sum(main_dec.timing.values())
    res = {
        "file": str(path), "width": info.width, "height": info.height, "frames": frames,
        "psnr": p, "ssim": s, "token_rate": kept / max(1, total), "tokens_kept": kept, "tokens_total": total,
        "bpp": buf.tell() * 8 / max(1, frames * info.width * info.height),
        "fps_compress": frames / max(t_comp, 1e-9), "fps_decompress": frames / max(t_dec, 1e-9),
        "psnr_full_rate": pf, "ssim_full_rate": sf, "psnr_hold_fill": ph, "ssim_hold_fill": sh,
        "psnr_lit": lit.means()[0] if dec_lit else None,
        "latent_mse_dropped_hold": mse_hold / max(1, n_dropped),
        "latent_mse_dropped_lit": (mse_lit / max(1, n_dropped)) if dec_lit else None,
        "lit": dec_lit is not None, "threshold": opts.threshold, "keep_ratio": opts.keep_ratio,
        "timing": {**enc.timing, "write": t_write, **{f"decompress_{k}": v for k, v in main_dec.timing.items()}},
    }
    if chunk_psnr:
        res["chunk_first_frame_psnr"] = chunk_first_psnr
    if note:
        res["note"] = note
    return res


MEAN_KEYS = ["psnr", "ssim", "token_rate", "bpp", "fps_compress", "fps_decompress", "psnr_full_rate",
             "ssim_full_rate", "psnr_hold_fill", "ssim_hold_fill", "latent_mse_dropped_hold"]


def mean_of(results: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in results])) for k in MEAN_KEYS if results and k in results[0]}
