"""`adaptok eval`: compress + decompress in memory and measure what dropping and LIT cost and earn.

One encode per clip feeds several decodes of the same latents: full rate (nothing dropped),
hold-fill (dropped positions hold their last kept value) and LIT. PSNR/SSIM are against the
decoded input frames (at --short-side), computed on the uint8 frames a user would get. `Scores`
and `decode_and_score` are the one decode-and-score loop; the benchmark and experiments use them too.
"""
from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from adaptok_cli.core.codec import Codec, Decoder, to_frames
from adaptok_cli.format.container import AtokWriter
from adaptok_cli.core.layout import pixel_map, starts_stream
from adaptok_cli.measure.metrics import psnr, ssim
from adaptok_cli.models.matching import inpainter_for
from adaptok_cli.running.options import CompressOptions, header_for
from adaptok_cli.models.tokenizer import Tokenizer, load_tokenizer, pick_device
from adaptok_cli.running.video import read_shrunk


class Scores:
    """Frame quality against the input, the latent error on dropped positions, and the seams:
    the PSNR of the first `seam_frames` frames of every chunk after the first."""

    def __init__(self, seam_frames: int = 1):
        self.psnr, self.ssim, self.seams, self.chunk_first = [], [], [], []
        self.seam_frames = seam_frames
        self.latent_err, self.latent_n = 0.0, 0
        self.region = {"kept": [0.0, 0], "dropped": [0.0, 0]}    # squared error and pixel count per region

    def add(self, ref: np.ndarray, out: np.ndarray):
        ps = [psnr(a, b) for a, b in zip(ref, out)]
        if self.chunk_first:
            self.seams.append(float(np.mean(ps[:self.seam_frames])))
        self.chunk_first.append(ps[0])
        self.psnr += ps
        self.ssim += list(ssim(ref, out))

    def add_latents(self, z: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor | None = None):
        """Squared error of z against truth on the dropped positions (in units of scale, if given)."""
        err = (z - truth) if scale is None else (z - truth) / scale.view(1, -1, 1, 1)
        dropped = ~mask[:, None].expand_as(z)
        self.latent_err += float((err[dropped] ** 2).sum())
        self.latent_n += int(dropped.sum())

    def add_regions(self, ref: np.ndarray, out: np.ndarray, dropped: np.ndarray):
        """Squared error where the frame's latent position was kept vs dropped; dropped: (n, H, W) bool."""
        err = ((out.astype(np.float32) - ref) ** 2).mean(-1)
        for name, where in (("kept", ~dropped), ("dropped", dropped)):
            self.region[name][0] += float(err[where].sum())
            self.region[name][1] += int(where.sum())

    def region_psnr(self) -> dict:
        """PSNR over the pixels of kept and of dropped positions (None where there were none)."""
        return {k: 10 * np.log10(255 ** 2 / max(e / n, 1e-10)) if n else None for k, (e, n) in self.region.items()}

    @property
    def mean_psnr(self) -> float:
        return float(np.mean(self.psnr))

    @property
    def mean_ssim(self) -> float:
        return float(np.mean(self.ssim))

    @property
    def latent_mse(self) -> float:
        return self.latent_err / max(1, self.latent_n)


def dropped_pixels(mask, n: int, height: int, width: int, tok: Tokenizer, first: bool) -> np.ndarray:
    """(t, h, w) latent mask -> (n, height, width): which pixels of each frame come from a dropped position
    (first: the mask's first latent frame is the video's first)."""
    return pixel_map(~mask.numpy(), n, tok.time_factor, starts_stream(first, tok.stateful), tok.space_factor,
                     height, width)


def decode_and_score(dec: Decoder, chunk, ref: np.ndarray, scores: Scores, truth=None, scale=None,
                     first: bool | None = None) -> np.ndarray:
    """Decode one chunk as decompress would, score its frames against ref (and, given the true
    latents, the filled ones on dropped positions; given first, whether the chunk is the video's
    first, kept and dropped regions apart) -> the uint8 frames."""
    z = dec.dense(chunk)
    out = to_frames(dec.frames(z)[:len(ref)], ref.shape[1], ref.shape[2])
    scores.add(ref, out)
    if first is not None:
        scores.add_regions(ref, out, dropped_pixels(chunk.mask, len(ref), ref.shape[1], ref.shape[2], dec.tok, first))
    if truth is not None:
        scores.add_latents(z, truth, chunk.mask, scale)
    return out


@dataclass
class Evaluation:
    """evaluate()'s answer for one clip: PSNR/SSIM as decompressed (LIT where it runs, else hold-fill),
    at full rate and with each non-learned fill; rate, size and speed. to_dict() is a line of `adaptok
    eval --json` (region_psnr flattened as psnr_<region>_region_<decode>)."""
    file: str
    width: int
    height: int
    frames: int
    psnr: float
    ssim: float
    token_rate: float
    tokens_kept: int
    tokens_total: int
    bpp: float
    fps_compress: float
    fps_decompress: float
    psnr_full_rate: float
    ssim_full_rate: float
    psnr_hold_fill: float
    ssim_hold_fill: float
    psnr_interp_fill: float
    ssim_interp_fill: float
    psnr_lit: float | None
    region_psnr: dict             # "<kept|dropped>_region_<full|hold|interp|lit>" -> PSNR over those pixels
    latent_mse_dropped_hold: float
    latent_mse_dropped_interp: float
    latent_mse_dropped_lit: float | None
    lit: bool
    threshold: float | None
    keep_ratio: float | None
    timing: dict
    chunk_first_frame_psnr: list | None = None     # with chunk_psnr=True
    note: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        regions, out = d.pop("region_psnr"), {}
        for k, v in d.items():
            if k == "latent_mse_dropped_hold":
                out.update({f"psnr_{r}": x for r, x in regions.items()})
            if v is not None or k not in ("chunk_first_frame_psnr", "note"):
                out[k] = v
        return out


@dataclass
class _Run:
    """What coding and decoding one clip measured (evaluate's loop)."""
    scores: dict
    frames: int = 0
    kept: int = 0
    total: int = 0
    size: int = 0
    t_write: float = 0.0


def evaluate(path, opts: CompressOptions, use_lit=True, tokenizer: Tokenizer | None = None,
             progress=None, chunk_psnr=False, upscale=False, device=None) -> Evaluation:
    """Scores of one clip (see the module docstring). opts.short_side only ever shrinks a clip
    unless upscale=True: a clip smaller than that is scored at its own size. device: the one a batch
    of clips resolved once (pick_device), else opts.device."""
    opts.check()
    device = pick_device(opts.device if device is None else device)
    tok = tokenizer or load_tokenizer(opts.tokenizer, device, opts.dtype)
    rule = opts.rule(tok)
    inpainter, note = inpainter_for(tok, opts.threshold, None, path, use_lit, device, rule.unit, opts.lit)
    codec = Codec(tok, rule, opts.quant)
    enc = codec.encoder()
    decoders = {"full": codec.decoder(), "hold": codec.decoder(), "interp": codec.decoder(fill="interp"),
                **({"lit": codec.decoder(inpainter)} if inpainter else {})}
    with read_shrunk(path, opts.short_side, opts.max_side, upscale) as reader:
        info = reader.info
        header = header_for(tok, None, opts, info.width, info.height, info.fps, str(path))
        run = _code_and_score(reader, enc, decoders, header, opts, progress)
    main = "lit" if inpainter else "hold"
    s, lit = run.scores, run.scores.get("lit")
    return Evaluation(
        file=str(path), width=info.width, height=info.height, frames=run.frames,
        psnr=s[main].mean_psnr, ssim=s[main].mean_ssim, token_rate=run.kept / max(1, run.total),
        tokens_kept=run.kept, tokens_total=run.total, bpp=run.size * 8 / max(1, run.frames * info.width * info.height),
        fps_compress=run.frames / max(enc.timing["encode"] + enc.timing["mask"] + run.t_write, 1e-9),
        fps_decompress=run.frames / max(sum(decoders[main].timing.values()), 1e-9),
        psnr_full_rate=s["full"].mean_psnr, ssim_full_rate=s["full"].mean_ssim,
        psnr_hold_fill=s["hold"].mean_psnr, ssim_hold_fill=s["hold"].mean_ssim,
        psnr_interp_fill=s["interp"].mean_psnr, ssim_interp_fill=s["interp"].mean_ssim,
        psnr_lit=lit.mean_psnr if lit else None,
        region_psnr={f"{region}_region_{k}": v for k in decoders for region, v in s[k].region_psnr().items()},
        latent_mse_dropped_hold=s["hold"].latent_mse, latent_mse_dropped_interp=s["interp"].latent_mse,
        latent_mse_dropped_lit=lit.latent_mse if lit else None,
        lit=inpainter is not None, threshold=opts.threshold, keep_ratio=opts.keep_ratio,
        timing={**enc.timing, "write": run.t_write, **{f"decompress_{k}": v for k, v in decoders[main].timing.items()}},
        chunk_first_frame_psnr=s[main].chunk_first if chunk_psnr else None, note=note)


def _code_and_score(reader, enc, decoders: dict, header: dict, opts: CompressOptions, progress) -> _Run:
    """Encode the clip chunk by chunk into an in-memory container, decode each chunk with every decoder
    and score it against the frames read."""
    tok, info = enc.tok, reader.info
    run, buf = _Run({k: Scores() for k in decoders}), io.BytesIO()
    writer = AtokWriter(buf, header, opts.level)
    seen = []                   # the chunk's input frames, as the encoder reads them (group by group)

    def read():
        for f in reader:
            seen.append(f)
            yield f
    for c in enc.chunks(read(), opts.chunk):
        real, ref = c.frames, np.stack(seen)
        seen.clear()
        t0 = time.perf_counter()
        writer.write_chunk(c.mask, c.codes, c.qscale, c.frames)
        run.t_write += time.perf_counter() - t0
        full = to_frames(decoders["full"].frames(c.latents)[:real], info.height, info.width)
        run.scores["full"].add(ref, full)
        run.scores["full"].add_regions(ref, full, dropped_pixels(c.mask, real, info.height, info.width, tok,
                                                                 run.frames == 0))
        for k in [k for k in decoders if k != "full"]:
            decode_and_score(decoders[k], c, ref, run.scores[k], truth=c.latents, first=run.frames == 0)
        run.frames, run.kept, run.total = run.frames + real, run.kept + int(c.mask.sum()), run.total + c.mask.numel()
        if progress:
            progress(real)
    writer.close(max(run.frames, 1))
    run.size = buf.tell()
    return run


MEAN_KEYS = ["psnr", "ssim", "token_rate", "bpp", "fps_compress", "fps_decompress", "psnr_full_rate",
             "ssim_full_rate", "psnr_hold_fill", "ssim_hold_fill", "psnr_interp_fill", "ssim_interp_fill",
             "latent_mse_dropped_hold", "latent_mse_dropped_interp"]


def mean_of(results: list[Evaluation]) -> dict:
    """The mean of each of MEAN_KEYS over clips ({} for none)."""
    return {k: float(np.mean([getattr(r, k) for r in results])) for k in MEAN_KEYS} if results else {}


def evaluate_files(inputs: list, opts: CompressOptions, use_lit: bool = True, quiet: bool = False,
                   as_json: bool = False) -> int:
    """`adaptok eval`: every clip of inputs (files, folders, globs) scored with one loaded tokeniser and
    reported (a JSON object each and one with the mean, or a table) -> exit code."""
    import json

    from adaptok_cli.running.batch import expand_inputs, want_video
    from adaptok_cli.cli.printing import Reporter, for_each, print_eval
    from adaptok_cli.running.options import check_common
    check_common(None, opts.device, as_json, False)
    opts.check()
    dev = pick_device(opts.device)
    tok = load_tokenizer(opts.tokenizer, dev, opts.dtype)
    reporter, results = Reporter(quiet, as_json), []

    def one(f):
        with reporter.progress(f"eval {f.name}") as tick:
            r = evaluate(f, opts, use_lit=use_lit, tokenizer=tok, device=dev,
                         progress=lambda n, total=None: tick("frames", n, total))
        results.append(r)
        if as_json:
            print(json.dumps(r.to_dict()), flush=True)
    code = for_each([f for f, _ in expand_inputs(inputs, want_video)], one)
    if as_json:
        print(json.dumps({"mean": mean_of(results), "clips": len(results)}))
    elif not quiet and results:
        print_eval([r.to_dict() for r in results], mean_of(results), not use_lit)
    return code
