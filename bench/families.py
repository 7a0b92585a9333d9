"""Benchmark section `families`: each diffusers family's published architecture at 854x480.

    python -m bench.bench --sections families --device cuda --family-frames 97
    python -m bench.bench --sections families --families wan2.1,ltx-video      # CPU: a few frames (9)

Each model is built with the published configuration (the class defaults, which are the published
model's, or the config below) and random weights (nothing is downloaded), saved with
`save_pretrained` and loaded from that folder as a user's would be. For each family, on the same
frames: the VAE's own `encode` and `decode` of the whole clip (tiling off: adaptok bounds memory by
chunks instead), then adaptok `compress` and `decompress` (to .y4m) in process with the model
loaded, as every file of a batch after the first sees it; their frames per second and peak memory
(resident on the CPU, CUDA allocated on a GPU). `vs VAE` is the VAE's own time over adaptok's:
1.0 means adaptok adds nothing to the network's own cost. The rule's unit is the spread of the
clip's own latents (calibrate's decoder probe is skipped: it changes which positions are kept, not
the time of a decode, which always decodes every latent frame).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch

from adaptok_cli.running.memory import fix_mmap_threshold, trim

# The published VAEs of docs/TOKENIZERS.md. {} is the class defaults, which are the published
# model's; Wan 2.2's differs from them (Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json, without
# the latent statistics, which only the pipelines use).
PUBLISHED = {
    "wan2.1": ("AutoencoderKLWan", {}),
    "wan2.2": ("AutoencoderKLWan", dict(base_dim=160, decoder_base_dim=256, z_dim=48, in_channels=12, out_channels=12,
                                        patch_size=2, is_residual=True, scale_factor_spatial=16,
                                        latents_mean=[0.0] * 48, latents_std=[1.0] * 48)),
    "cogvideox": ("AutoencoderKLCogVideoX", {}),
    "hunyuanvideo": ("AutoencoderKLHunyuanVideo", {}),
    "ltx-video": ("AutoencoderKLLTXVideo", {}),
    "mochi": ("AutoencoderKLMochi", {}),
    "cosmos": ("AutoencoderKLCosmos", {}),
}
# --quick: the code path only, with tiny models on small frames.
TINY = {
    "wan2.1": ("AutoencoderKLWan", dict(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1)),
    "cogvideox": ("AutoencoderKLCogVideoX", dict(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                                 layers_per_block=1, norm_num_groups=4)),
}
SIZE = (854, 480)


def add_arguments(ap):
    ap.add_argument("--families", default=",".join(PUBLISHED), help="families section: which ones")
    ap.add_argument("--family-frames", type=int, default=9, help="families section: frames per clip")
    ap.add_argument("--device", default="auto", help="families section: auto, cpu or cuda")
    ap.add_argument("--dtype", default="auto", help="families section: auto (bf16 on a GPU), fp32, bf16 or fp16")


def run(args, tmp, log, make_video) -> list[dict]:
    """One row per family; make_video(path, width, height, frames) writes the clip."""
    try:
        import diffusers
    except ImportError:
        log({"families": "skipped: diffusers is not installed (pip install 'adaptok[diffusers]')"})
        return []
    from adaptok_cli.models.tokenizer import pick_device
    fix_mmap_threshold()                # large blocks go back to the system when freed, as in the CLI
    table = TINY if args.quick else PUBLISHED
    names = [n for n in args.families.split(",") if n in table]
    width, height = (128, 96) if args.quick else SIZE
    frames = 5 if args.quick else args.family_frames
    device = pick_device(args.device)
    src = make_video(Path(tmp) / "families.mp4", width, height, frames)
    rows = []
    with cache_folder(Path(tmp) / "cache"):
        for name in names:
            cls, config = table[name]
            folder = Path(tmp) / f"vae-{name}"
            torch.manual_seed(0)
            model = getattr(diffusers, cls)(**config)
            params = sum(p.numel() for p in model.parameters())
            model.save_pretrained(folder, safe_serialization=True)
            del model
            row = {"family": name, "class": cls, "params_m": params / 1e6, "frames": frames,
                   "size": f"{width}x{height}", "device": str(device), "load_avg": os.getloadavg()[0]}
            row.update(measure(str(folder), src, device, args.dtype, Path(tmp)))
            rows.append(row)
            log(row)
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
    return rows


def measure(spec, src, device, dtype, tmp) -> dict:
    import adaptok_cli as atk
    from adaptok_cli.models import calibration
    from adaptok_cli.core.codec import to_tensor
    from adaptok_cli.models.matching import cached_tokenizer
    from adaptok_cli.running.video import read_frames
    t0 = time.perf_counter()
    tok = cached_tokenizer(spec, str(device), dtype)
    row = {"dtype": str(tok.dtype).replace("torch.", ""), "load_s": time.perf_counter() - t0}
    clip = read_frames(src)
    n = len(clip)
    x = to_tensor(list(clip), tok.pad_multiple).to(device).float().div_(127.5).sub_(1)
    x = x.permute(1, 0, 2, 3)[None].to(tok.dtype)
    warm = device.type == "cuda"           # a GPU's first call at a shape pays for kernel selection
    with torch.no_grad():
        for _ in range(1 + warm):
            with _peak(device) as enc_peak:
                t0 = _now(device)
                z = tok.vae.encode(x).latent_dist.mode()
                enc_s = _now(device) - t0
            with _peak(device) as dec_peak:
                t0 = _now(device)
                tok.vae.decode(z).sample
                dec_s = _now(device) - t0
    del x
    lat = z[0].float().flatten(1)                                  # (C, t*h*w)
    spread = lat.std(1).clamp_min(1e-4).cpu()
    del z, lat
    calibration.save(calibration.Calibration(spread, torch.ones_like(spread), tok.fingerprint),
                     calibration.stored_path(tok))
    atok, out = tmp / "families.atok", tmp / "families.y4m"
    for _ in range(1 + warm):
        with _peak(device) as c_peak:
            c = atk.compress(src, atok, tokenizer=spec, loaded_tokenizer=tok, device=str(device), dtype=dtype, force=True)
        with _peak(device) as d_peak:
            d = atk.decompress(atok, out, tokenizer=spec, device=str(device), dtype=dtype, force=True)
    row.update(vae_encode_fps=n / enc_s, vae_decode_fps=n / dec_s, compress_fps=n / c.seconds,
               decompress_fps=n / d.seconds, compress_vs_vae=enc_s / c.seconds, decompress_vs_vae=dec_s / d.seconds,
               token_rate=c.token_rate, vae_encode_peak_mb=enc_peak(), vae_decode_peak_mb=dec_peak(),
               compress_peak_mb=c_peak(), decompress_peak_mb=d_peak(),
               compress_network_share=c.timing["encode"] / c.seconds, decompress_network_share=d.timing["decode"] / d.seconds)
    atok.unlink()
    out.unlink()
    return row


def _now(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@contextlib.contextmanager
def _peak(device):
    """Peak memory in MB inside the block: CUDA allocated on a GPU, else the process's resident
    high-water mark, reset at entry (Linux clear_refs; None where it cannot be reset)."""
    box = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        trim()                          # freed memory back to the system first, so the mark starts low
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            box["mb"] = None
    yield lambda: box.get("mb")
    if device.type == "cuda":
        box["mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    elif "mb" not in box:
        with open("/proc/self/status") as f:
            box["mb"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


@contextlib.contextmanager
def cache_folder(path):
    """ADAPTOK_CACHE inside the block: a section's calibrations and cache entries never go to the user's."""
    old = os.environ.get("ADAPTOK_CACHE")
    os.environ["ADAPTOK_CACHE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["ADAPTOK_CACHE"]
        else:
            os.environ["ADAPTOK_CACHE"] = old


COLUMNS = ["family", "params_m", "device", "dtype", "frames", "load_s", "vae_encode_fps", "compress_fps",
           "compress_vs_vae", "vae_decode_fps", "decompress_fps", "decompress_vs_vae", "vae_encode_peak_mb",
           "compress_peak_mb", "vae_decode_peak_mb", "decompress_peak_mb", "token_rate", "load_avg"]


def markdown(r, ran, table) -> list[str]:
    if not r.get("families"):
        return []
    f0, f2, fps = "{:.0f}", "{:.2f}", "{:.3g}"
    return ["## Published diffusers VAEs at real frame sizes", "", ran(r, "families"), "",
            "Each family's published architecture with random weights (bench/families.py), on one generated "
            f"clip of {r['families'][0]['size']}. `vs VAE`: the VAE's own encode (decode) time of the same frames "
            "over adaptok's compress (decompress) time, model loaded: 1.00 is no overhead. Peak memory: CUDA "
            "allocated on a GPU; on the CPU the resident set of the whole process, weights included, its mark "
            "reset before each step to what the process then holds, so an upper bound of the step's own need. "
            "Random weights "
            "change everywhere, so the token rate says nothing about real footage. `load_avg`: the machine's "
            "1-minute load average as the family started (other work on a shared machine slows every column "
            "alike, so the ratios hold better than the speeds). `load_s`: the tokeniser loaded from its folder "
            "with an empty cache (weights hash, load, factor probe), as a first run on a machine does; later runs "
            "take the hash and the probe from the cache (see the start-up section). On a GPU: `python -m bench.bench "
            "--sections families --device cuda --family-frames 97` (each step runs once untimed first).", "",
            table(r["families"], COLUMNS, {"params_m": "{:.0f}", "load_s": "{:.1f}", "vae_encode_fps": fps,
                                           "compress_fps": fps, "vae_decode_fps": fps, "decompress_fps": fps,
                                           "compress_vs_vae": f2, "decompress_vs_vae": f2, "token_rate": "{:.3f}", "load_avg": "{:.1f}",
                                           **{c: f0 for c in COLUMNS if c.endswith("_mb")}}), ""]
