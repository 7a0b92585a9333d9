"""`make bench` section `cache`: adaptok as a latent cache against the caches trainers keep (issue 30).

    python -m bench.bench --sections cache            # the dev clips (ADAPTOK_BENCH_DATA or --data)
    python -m bench.bench --quick --sections cache    # generated clips, seconds

The same fp32 latents of each clip (TinyTok, each clip encoded once, kept in .cache/bench-cache) are
stored every way a trainer might: one safetensors file per clip in bf16 and fp16, torch.save bf16,
zstd over the bf16 bytes, an fp8 (e4m3fn) cast, and .atok at full rate and several thresholds, int8
and fp16. For each: bytes, latent error against the fp32 latents, and (for the files a loader reads)
loading speed of one DataLoader worker, warm and cold page cache. A tiny random diffusers VAE (Wan's
class, 16 channels) goes through the same path to show the plumbing; its figures mean nothing else.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import zstandard
from safetensors.torch import load_file, save_file

import adaptok_cli as atk
from adaptok_cli.format.atokfile import AtokFile, ShardDataset
from adaptok_cli.models.calibration import rule_unit
from adaptok_cli.core.codec import Codec, Rule
from adaptok_cli.format.container import AtokReader, AtokWriter
from adaptok_cli.defaults import DEFAULT_THRESHOLD
from adaptok_cli.models.matching import lit_identity
from adaptok_cli.running.options import CompressOptions, header_for
from adaptok_cli.running.outputs import atomic_path
from adaptok_cli.format.shards import write_shard
from adaptok_cli.running.video import VideoReader

from . import cache_costs

CHUNK = 8
THRESHOLDS = [0.0, 0.05, 0.1, DEFAULT_THRESHOLD, 0.25, 0.4]
QUICK_THRESHOLDS = [0.0, DEFAULT_THRESHOLD, 0.4]
ZSTD_LEVEL = 10                     # the level .atok files use by default
LATENT_CACHE = Path(".cache/bench-cache")
# Wan-shaped latents (16 channels, 4x8x8) of a 5-s clip at 16 fps (81 frames: 1 + 4 x 20 -> 21 latent frames)
PROJECTION = {"480p (832x480)": 21 * (480 // 8) * (832 // 8), "720p (1280x720)": 21 * (720 // 8) * (1280 // 8)}


@dataclass
class Latents:
    """One clip's fp32 latents (T, C, h, w) and what a container header needs."""
    name: str
    z: torch.Tensor
    width: int
    height: int
    fps: Fraction
    frames: int


def encode(tok, path, short_side, max_frames=None) -> Latents:
    """A clip's latents, chunk after chunk as compress encodes them (the tokeniser's state carried)."""
    with VideoReader(path, short_side=short_side) as r:
        info, zs, frames = r.info, [], 0
        it = (f for i, f in enumerate(r) if max_frames is None or i < max_frames)
        for z, real in Codec(tok, Rule(threshold=0.0)).encoder().latent_chunks(it, CHUNK):
            zs.append(z)
            frames += real
    return Latents(Path(path).stem, torch.cat(zs).float(), info.width, info.height, Fraction(info.fps), frames)


def cached_latents(tok, paths, short_side, keep: bool = True) -> list[Latents]:
    """encode() once per clip (by name and size), tokeniser and short side: kept in LATENT_CACHE when
    keep, so a rerun only measures."""
    out = []
    for p in paths:
        f = LATENT_CACHE / f"{Path(p).stem}-{Path(p).stat().st_size}-{tok.fingerprint}-{short_side}.pt"
        if keep and f.is_file():
            d = torch.load(f)
            out.append(Latents(d["name"], d["z"], d["width"], d["height"], Fraction(d["fps"]), d["frames"]))
            continue
        lat = encode(tok, p, short_side)
        out.append(lat)
        if not keep:
            continue
        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            torch.save({"name": lat.name, "z": lat.z, "width": lat.width, "height": lat.height,
                        "fps": str(lat.fps), "frames": lat.frames}, tmp)
    return out


# --- writing every format -------------------------------------------------------------------------

def write_atok(tok, lat: Latents, path, threshold, quant, unit) -> None:
    """The container compress would write from these latents (the same rule, chunk by chunk)."""
    opts = CompressOptions(threshold=threshold, quant=quant, unit=unit, chunk=CHUNK).check()
    enc = Codec(tok, opts.rule(tok), quant).encoder()
    header = header_for(tok, lit_identity(tok), opts, lat.width, lat.height, lat.fps, lat.name)
    left = lat.frames
    with open(path, "wb") as f:
        w = AtokWriter(f, header, ZSTD_LEVEL)
        for i, z in enumerate(lat.z.split(CHUNK)):
            n = min(left, tok.frames_for(len(z), i == 0))
            e = enc.encode_latents(z)
            w.write_chunk(e.mask, e.codes, e.qscale, n)
            left -= n
        w.close(lat.frames)


def write_formats(tok, clips: list[Latents], root: Path, thresholds, unit) -> dict[str, list[Path]]:
    """Every format of every clip under root/FORMAT/ -> {format: files}. Baselines store (C, T, h, w)."""
    made = {}

    def put(fmt, name, write):
        d = root / fmt
        d.mkdir(parents=True, exist_ok=True)
        write(d / name)
        made.setdefault(fmt, []).append(d / name)

    for c in clips:
        cthw = c.z.transpose(0, 1).contiguous()
        bf16 = cthw.bfloat16()
        put("safetensors bf16", f"{c.name}.safetensors", lambda p: save_file({"latents": bf16}, str(p)))
        put("safetensors fp16", f"{c.name}.safetensors", lambda p: save_file({"latents": cthw.half()}, str(p)))
        put("torch.save bf16", f"{c.name}.pt", lambda p: torch.save(bf16, p))
        put("zstd bf16", f"{c.name}.zst", lambda p: p.write_bytes(
            zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(bf16.view(torch.int16).numpy().tobytes())))
        if hasattr(torch, "float8_e4m3fn"):
            put("safetensors fp8 e4m3", f"{c.name}.safetensors",
                lambda p: save_file({"latents": cthw.to(torch.float8_e4m3fn)}, str(p)))
        for quant in ("int8", "fp16"):
            for t in thresholds:
                put(atok_format(quant, t), f"{c.name}.atok", lambda p: write_atok(tok, c, p, t, quant, unit))
    for files in made.values():          # on disk, clean: the page cache can drop them (cold reads)
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    return made


def atok_format(quant, threshold) -> str:
    return f".atok {quant} t={threshold:g}"


def read_back(fmt: str, path: Path, clip: Latents, fill="hold") -> torch.Tensor:
    """A stored clip as a trainer reads it back -> (T, C, h, w) float32."""
    if fmt.startswith(".atok"):
        with AtokFile(path) as f:
            return f.dense(fill=fill)
    if fmt == "zstd bf16":
        raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
        z = torch.frombuffer(bytearray(raw), dtype=torch.int16).view(torch.bfloat16)
        return z.view(clip.z.shape[1], clip.z.shape[0], *clip.z.shape[2:]).float().transpose(0, 1)
    z = torch.load(path) if path.suffix == ".pt" else load_file(str(path))["latents"]
    return z.float().transpose(0, 1)


def dropped_mask(path: Path) -> torch.Tensor:
    with AtokFile(path) as f:
        return ~torch.cat([f.sparse(i)[0] for i in range(f.num_chunks)])


# --- bytes and error ------------------------------------------------------------------------------

class Error:
    """Squared error pooled over clips, in a per-channel unit; signal: each channel's variance, pooled."""

    def __init__(self, unit: torch.Tensor):
        self.unit = unit.view(1, -1, 1, 1).double()
        self.err = {"all": 0.0, "dropped": 0.0}
        self.n = {"all": 0, "dropped": 0}
        self.sig, self.sig_n = 0.0, 0

    def add(self, ref: torch.Tensor, got: torch.Tensor, dropped: torch.Tensor | None):
        e = ((got.double() - ref.double()) / self.unit) ** 2          # (T, C, h, w)
        centred = (ref.double() - ref.double().mean((0, 2, 3), keepdim=True)) / self.unit
        self.sig += float((centred ** 2).sum())
        self.sig_n += centred.numel()
        self.err["all"] += float(e.sum())
        self.n["all"] += e.numel()
        if dropped is not None and bool(dropped.any()):
            self.err["dropped"] += float(e.permute(1, 0, 2, 3)[:, dropped].sum())
            self.n["dropped"] += int(dropped.sum()) * e.shape[1]

    def figures(self, where: str) -> dict:
        """Relative MSE (MSE over the signal's variance, both in the unit) and SNR in dB."""
        if not self.n[where]:
            return {"rel_mse": None, "snr_db": None}
        rel = (self.err[where] / self.n[where]) / (self.sig / self.sig_n)
        return {"rel_mse": rel, "snr_db": -10 * math.log10(rel) if rel > 0 else math.inf}


def measure(tok, clips: list[Latents], files: dict, units: dict, log, lit_thresholds=()) -> list[dict]:
    """One row per format (and per fill for .atok): bytes, token rate, error in each unit."""
    rows = []
    positions = sum(c.z.shape[0] * c.z.shape[2] * c.z.shape[3] for c in clips)
    latent_frames = sum(c.z.shape[0] for c in clips)
    base = sum(f.stat().st_size for f in files["safetensors bf16"])
    for fmt, paths in files.items():
        size = sum(p.stat().st_size for p in paths)
        fills = ["hold"] + (["lit"] if fmt.startswith(".atok int8") and _threshold(fmt) in lit_thresholds else [])
        for fill in fills:
            errs = {u: Error(v) for u, v in units.items()}
            kept = 0
            for c, p in zip(clips, paths):
                got = read_back(fmt, p, c, fill)
                dropped = dropped_mask(p) if fmt.startswith(".atok") else None
                kept += positions_of(c) - (int(dropped.sum()) if dropped is not None else 0)
                for e in errs.values():
                    e.add(c.z, got, dropped)
            row = {"format": fmt + (" + LIT" if fill == "lit" else ""), "fill": fill if fmt.startswith(".atok") else None,
                   "bytes": size, "bytes_per_clip": size / len(clips), "bytes_per_latent_frame": size / latent_frames,
                   "bytes_per_position": size / positions, "x_smaller_than_bf16": base / size,
                   "token_rate": kept / positions}
            for u, e in errs.items():
                for where in ("all", "dropped"):
                    for k, v in e.figures(where).items():
                        row[f"{k}_{where}_{u}"] = v
            rows.append(row)
            log({"cache_bytes_error": row})
    return rows


def positions_of(c: Latents) -> int:
    return c.z.shape[0] * c.z.shape[2] * c.z.shape[3]


def _threshold(fmt: str) -> float:
    return float(fmt.rsplit("t=", 1)[1])


# --- loading speed --------------------------------------------------------------------------------

class Files(torch.utils.data.Dataset):
    """One file per clip read by a plain loader (safetensors or torch.load): the baselines."""

    def __init__(self, files, load):
        self.files, self.load = files, load

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return {"latents": self.load(self.files[i]), "layout": "CTHW"}


def zstd_payloads(path) -> torch.Tensor:
    """Every chunk record of an .atok read, CRC-checked and decompressed, nothing more: the floor under
    AtokDataset. -> an empty (0, latent frames) tensor (one_pass counts its frames)."""
    with AtokReader(path) as r:
        for i in range(len(r.chunks)):
            r._payload(i, r.chunks[i].tolist())
        return torch.empty(0, r.latent_frames)


def drop_from_page_cache(files) -> None:
    """posix_fadvise(DONTNEED) on each (clean: fsynced when written) file: its pages leave the page cache."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_bytes(files) -> int | None:
    """Bytes of these files in the page cache (util-linux fincore), or None where it is missing."""
    if shutil.which("fincore") is None:
        return None
    p = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", *map(str, files)],
                       capture_output=True, text=True)
    return sum(int(x) for x in p.stdout.split()) if p.returncode == 0 else None


def one_pass(ds) -> tuple[float, int, int, float]:
    """Read every item as one DataLoader worker does (this process, one torch thread)
    -> (wall s, items, latent frames, CPU s of this thread)."""
    t0, c0, items, frames = time.perf_counter(), time.thread_time(), 0, 0
    for item in (ds if isinstance(ds, torch.utils.data.IterableDataset) else (ds[i] for i in range(len(ds)))):
        frames += item["mask"].shape[0] if "mask" in item else item["latents"].shape[int(item["layout"] == "CTHW")]
        items += 1
    return time.perf_counter() - t0, items, frames, time.thread_time() - c0


def loading(datasets: dict, files: dict, passes: int, min_seconds: float, log) -> list[dict]:
    """Items/s and latent frames/s of each dataset: warm (best of `passes` rounds of at least
    min_seconds each) and cold (best of `passes` single passes, its files dropped from the page cache
    before each)."""
    rows = []
    for name, ds in datasets.items():
        one_pass(ds)                                      # warm up: imports, models, caches
        warm = []
        for _ in range(passes):
            total = list(one_pass(ds))
            while total[0] < min_seconds:
                total = [a + b for a, b in zip(total, one_pass(ds))]
            warm.append(total)
        cold, left = [], []
        for _ in range(passes):
            drop_from_page_cache(files[name])
            left.append(resident_bytes(files[name]))
            cold.append(one_pass(ds))
        (ws, wn, wf, _), (cs, cn, cf, _) = min(warm, key=lambda x: x[0] / x[1]), min(cold, key=lambda x: x[0])
        rows.append({"dataset": name, "mb_per_pass": sum(f.stat().st_size for f in files[name]) / 1e6,
                     "warm_items_s": wn / ws, "warm_latent_frames_s": wf / ws,
                     "warm_latent_frames_per_cpu_s": max(x[2] / x[3] for x in warm if x[3] > 0),
                     "cold_items_s": cn / cs, "cold_latent_frames_s": cf / cs,
                     "resident_after_drop": None if None in left else max(left)})
        log({"cache_loading": rows[-1]})
    return rows


def loader_datasets(files: dict, root: Path, quick: bool) -> tuple[dict, dict]:
    """The datasets whose speed is measured, and the files each reads."""
    default = atok_format("int8", DEFAULT_THRESHOLD)
    folder = files[default][0].parent
    shards = root / "shards"
    shards.mkdir(exist_ok=True)
    per = 2 if quick else 4
    atoks = files[default]
    for i in range(0, len(atoks), per):
        write_shard(shards, i // per, [(p.stem, p, {}) for p in atoks[i:i + per]], {})
    shard_files = sorted(shards.glob("shard-*.tar"))
    for f in shard_files:
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    datasets = {
        "safetensors bf16 (load_file)": Files(files["safetensors bf16"], lambda p: load_file(str(p))["latents"]),
        "torch.load bf16 .pt": Files(files["torch.save bf16"], torch.load),
        "AtokDataset dense, hold": atk.AtokDataset(folder, "dense"),
        "AtokDataset dense, hold, bf16 CTHW": atk.AtokDataset(folder, "dense", layout="CTHW", dtype=torch.bfloat16),
        "AtokDataset dense, LIT": atk.AtokDataset(folder, "dense", fill="lit"),
        "AtokDataset sparse": atk.AtokDataset(folder, "sparse"),
        "ShardDataset dense, hold": ShardDataset(shards, mode="dense"),
        "zstd payloads alone (no fill)": Files(files[default], zstd_payloads),
    }
    reads = {k: files[default] for k in datasets if k.startswith(("AtokDataset", "zstd payloads"))}
    reads.update({"safetensors bf16 (load_file)": files["safetensors bf16"],
                  "torch.load bf16 .pt": files["torch.save bf16"], "ShardDataset dense, hold": shard_files})
    return datasets, reads


# --- projection -----------------------------------------------------------------------------------

def projection(rows: list[dict]) -> list[dict]:
    """TB per million 5-s clips of Wan-shaped latents, from each format's measured bytes per position."""
    out = []
    for r in rows:
        if r["fill"] == "lit":
            continue          # the same bytes as its hold row
        out.append({"format": r["format"], "bytes_per_position": r["bytes_per_position"],
                    **{f"tb_per_million_{k}": r["bytes_per_position"] * n * 1e6 / 1e12 for k, n in PROJECTION.items()}})
    return out


# --- the tiny diffusers VAE: the same path, for the plumbing --------------------------------------

def tiny_vae(folder: Path):
    import diffusers
    torch.manual_seed(0)
    model = diffusers.AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                       temperal_downsample=[False, True, True]).eval()
    model.save_pretrained(folder, safe_serialization=True)


def vae_plumbing(paths, root: Path, log, quick: bool) -> dict | None:
    """A random tiny Wan-class VAE through calibration, every format, error and AtokDataset with its
    own normalisation: proves the path works for a diffusers VAE; the numbers say nothing about Wan."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return None
    from adaptok_cli.models.calibration import Calibration, save, stored_path
    from adaptok_cli.models.tokenizer import load_tokenizer
    folder = root / "tiny-wan"
    tiny_vae(folder)
    old = os.environ.get("ADAPTOK_CACHE")
    os.environ["ADAPTOK_CACHE"] = str(root / "adaptok-cache")     # its calibration, never the user's store
    try:
        tok = load_tokenizer(str(folder), "cpu", "fp32")
        clips = [encode(tok, p, 64 if quick else 128, 9 if quick else 33) for p in paths[:1 if quick else 2]]
        # the spread measured on these latents; the decoder's sensitivity is not probed (random weights:
        # it would cost minutes and mean nothing), so the rule's unit is the spread
        flat = torch.cat([c.z.transpose(0, 1).reshape(tok.channels, -1) for c in clips], 1)
        save(Calibration(flat.std(1).clamp_min(1e-4), torch.ones(tok.channels), tok.fingerprint), stored_path(tok))
        units = {"spread": rule_unit(tok, "spread")[1]}
        files = write_formats(tok, clips, root / "vae", [0.0, DEFAULT_THRESHOLD], "spread")
        rows = measure(tok, clips, files, units, log)
        ds = atk.AtokDataset(files[atok_format("int8", DEFAULT_THRESHOLD)][0].parent, "dense", tokenizer=str(folder),
                             normalize=True, layout="CTHW", dtype=torch.bfloat16)
        item = ds[0]
        return {"clips": [(c.name, c.width, c.height, c.frames) for c in clips], "rows": rows,
                "item": {"shape": list(item["latents"].shape), "dtype": str(item["latents"].dtype),
                         "normalisation": ds.items.norm({"channels": tok.channels}).source}}
    finally:
        if old is None:
            os.environ.pop("ADAPTOK_CACHE", None)
        else:
            os.environ["ADAPTOK_CACHE"] = old


# --- the section ----------------------------------------------------------------------------------

def run(tok, paths, short_side, log, quick=False) -> dict:
    """Everything above on these clips -> the section's results (bench-results.json "cache")."""
    t0 = time.perf_counter()

    def phase(name):
        log({"cache_phase": name, "minutes": (time.perf_counter() - t0) / 60})

    with tempfile.TemporaryDirectory(prefix="adaptok-bench-cache-") as tmp:
        root = Path(tmp)
        clips = cached_latents(tok, paths, short_side, keep=not quick)
        phase("latents")
        units = {"own": tok.scale, "decoder": rule_unit(tok, "decoder")[1]}
        thresholds = QUICK_THRESHOLDS if quick else THRESHOLDS
        files = write_formats(tok, clips, root / "tinytok", thresholds, "decoder")
        rows = measure(tok, clips, files, units, log, [DEFAULT_THRESHOLD, max(thresholds)])    # LIT: minutes each
        phase("bytes and error")
        datasets, reads = loader_datasets(files, root, quick)
        threads, load = torch.get_num_threads(), os.getloadavg()[0]
        torch.set_num_threads(1)                # what torch gives each DataLoader worker
        try:
            speed = loading(datasets, reads, 1 if quick else 3, 0.0 if quick else 1.0, log)
        finally:
            torch.set_num_threads(threads)
        load = (load, os.getloadavg()[0])
        phase("loading")
        costs = cache_costs.run(files[atok_format("int8", DEFAULT_THRESHOLD)], files["torch.save bf16"],
                                sum(f.stat().st_size for f in files["safetensors bf16"]))
        phase("costs")
        vae = vae_plumbing(paths, root, log, quick)
        phase("diffusers VAE")
    return {"clips": [(c.name, c.width, c.height, c.frames, list(c.z.shape)) for c in clips],
            "short_side": short_side, "thresholds": thresholds, "default_threshold": DEFAULT_THRESHOLD,
            "rows": rows, "loading": speed, "load_average": load, "costs": costs, "projection": projection(rows), "vae": vae,
            "cold_method": "posix_fadvise(POSIX_FADV_DONTNEED) on every file before each cold pass (files "
                           "fsynced when written, so their pages are clean); checked with util-linux fincore"}


# --- the report -----------------------------------------------------------------------------------

def targets(r: dict) -> list[tuple[str, str, str]]:
    """Issue 30's targets from the section's results: (figure, target, measured)."""
    default = next(x for x in r["rows"] if x["format"] == atok_format("int8", r["default_threshold"]))
    speed = {x["dataset"]: x for x in r["loading"]}
    hold, pt = speed["AtokDataset dense, hold"], speed["torch.load bf16 .pt"]
    return [
        (f".atok int8 at the default threshold {r['default_threshold']:g}, against bf16 safetensors", ">= 4x smaller",
         f"{default['x_smaller_than_bf16']:.2f}x smaller, latent SNR {default['snr_db_all_own']:.1f} dB "
         f"(own unit), {default['snr_db_all_decoder']:.1f} dB (decoder-weighted), token rate {default['token_rate']:.3f}"),
        ("AtokDataset dense hold-fill against torch.load bf16 .pt, latent frames/s per worker, warm",
         ">= 1.0x", f"{hold['warm_latent_frames_s'] / pt['warm_latent_frames_s']:.2f}x "
                    f"({hold['warm_latent_frames_s']:.0f} vs {pt['warm_latent_frames_s']:.0f})"),
        ("the same, warm, per CPU-second of the reading thread", ">= 1.0x",
         f"{hold['warm_latent_frames_per_cpu_s'] / pt['warm_latent_frames_per_cpu_s']:.2f}x"),
        ("the same, cold page cache", ">= 1.0x",
         f"{hold['cold_latent_frames_s'] / pt['cold_latent_frames_s']:.2f}x "
         f"({hold['cold_latent_frames_s']:.0f} vs {pt['cold_latent_frames_s']:.0f})"),
    ] + floor(r) + four_times(r)


def floor(r: dict) -> list[tuple[str, str, str]]:
    """zstd's decompression alone against torch.load's whole item (bench/cache_costs.py): above 1x, no
    reader of these files can reach the loading target, whatever it does after decompressing."""
    if not r.get("costs"):
        return []
    steps = {x["step"]: x for x in r["costs"]["stages"]}
    pt, z = steps["torch.load bf16 .pt, whole item"], steps[".atok: zstd decompression alone"]
    return [("floor: zstd decompression alone of a dense item's records, CPU time against torch.load's whole item",
             "-", f"{z['x_torch_load']:.2f}x torch.load's time ({z['cpu_ms_per_item']:.3f} vs "
                  f"{pt['cpu_ms_per_item']:.3f} ms per item)")]


def four_times(r: dict) -> list[tuple[str, str, str]]:
    """Where .atok int8 crosses 4x smaller than bf16 safetensors, interpolated between measured thresholds."""
    pts = sorted((_threshold(x["format"]), x["x_smaller_than_bf16"], x["snr_db_all_own"]) for x in r["rows"]
                 if x["format"].startswith(".atok int8") and x["fill"] == "hold")
    for (t0, x0, s0), (t1, x1, s1) in zip(pts, pts[1:]):
        if x0 < 4 <= x1:
            f = (4 - x0) / (x1 - x0)
            return [("threshold where .atok int8 reaches 4x (linear between the two measured around it)", "-",
                     f"{t0 + f * (t1 - t0):.3f}, latent SNR about {s0 + f * (s1 - s0):.1f} dB (own unit)")]
    return []


def markdown(results: dict, ran, table) -> list[str]:
    """The section's part of BENCHMARKS.md (ran, table: bench.py's); nothing if it has not run."""
    if "cache" not in results:
        return []
    r, ran = results["cache"], ran(results, "cache")
    c = r["clips"]
    f1, f2, f3 = "{:.1f}", "{:.2f}", "{:.3f}"
    err_cols = ["format", "token_rate", "rel_mse_all_own", "snr_db_all_own", "snr_db_all_decoder",
                "rel_mse_dropped_own", "snr_db_dropped_own", "snr_db_dropped_decoder"]
    err_fmt = {"rel_mse_all_own": "{:.2e}", "rel_mse_dropped_own": "{:.2e}", "snr_db_all_own": f1,
               "snr_db_all_decoder": f1, "snr_db_dropped_own": f1, "snr_db_dropped_decoder": f1, "token_rate": f3}
    lines = [
        "## adaptok as a latent cache: bytes, latent error, loading speed", "", ran,
        f"Machine: {r['machine']}." if r.get("machine") else "", "",
        f"The same TinyTok fp32 latents of the {len(c)} dev clips (short side {r['short_side']}, "
        f"{sum(x[4][0] for x in c)} latent frames of 16 x h x w) stored as trainers store them, one file per clip "
        "(baselines in (C, T, h, w)), and as `.atok` (int8 and fp16 quantisation; thresholds in the decoder-weighted "
        f"unit, the default {r['default_threshold']:g}; zstd level {ZSTD_LEVEL} for `.atok` and for the zstd baseline). "
        "Bytes are file sizes.", "",
        table(r["rows"], ["format", "token_rate", "bytes_per_clip", "bytes_per_latent_frame", "bytes_per_position",
                          "x_smaller_than_bf16"],
              {"token_rate": f3, "bytes_per_clip": "{:.0f}", "bytes_per_latent_frame": "{:.0f}",
               "bytes_per_position": f2, "x_smaller_than_bf16": "{:.2f}x"}), "",
        "Latent error against the fp32 latents, pooled over clips. `rel_mse`: mean squared error over the latents' "
        "variance (per channel, about its mean), both in the unit named; SNR = -10 log10(rel_mse). `own`: "
        "TinyTok's per-channel scale (its spread); `decoder`: the decoder-weighted unit the rule uses "
        "(adaptok_cli/models/calibration.py). `all`: every latent position; `dropped`: the positions the `.atok` "
        "dropped (filled by hold or by LIT), against the same variance. `.atok` rows decode as "
        "`AtokFile.dense()` does (hold-fill; `+ LIT` with the shipped LIT).", "",
        table(r["rows"], err_cols, err_fmt), ""]
    lines += _loading_markdown(r, table)
    if r.get("costs"):
        lines += cache_costs.markdown(r["costs"], table)
    if r.get("vae"):
        lines += _vae_markdown(r["vae"], table)
    lines += ["### Targets (issue 30)", "",
              table([{"figure": a, "target": b, "measured": m} for a, b, m in targets(r)], ["figure", "target", "measured"]),
              ""]
    return lines


def _loading_markdown(r: dict, table) -> list[str]:
    """Loading speed per worker, and the projection to Wan-shaped latents."""
    f2 = "{:.2f}"
    return [
        "### Loading speed per DataLoader worker", "",
        "One worker's work measured in this process with one torch thread (what a DataLoader worker runs): "
        "every clip read as an item. Warm: best of rounds of at least a second over the clips, files in the page "
        f"cache. Cold: {r['cold_method']}; best of single passes. `.atok` datasets read the int8 files at the "
        f"default threshold; `ShardDataset` reads the same files packed 4 per tar shard. On a shared 2-core "
        f"machine (1-minute load average {r['load_average'][0]:.1f} when this part started, {r['load_average'][1]:.1f} "
        "when it ended): figures move by tens of percent between runs.", "",
        table(r["loading"], ["dataset", "mb_per_pass", "warm_items_s", "warm_latent_frames_s",
                             "warm_latent_frames_per_cpu_s", "cold_items_s", "cold_latent_frames_s", "resident_after_drop"],
              {"mb_per_pass": f2, "warm_items_s": "{:.0f}", "warm_latent_frames_s": "{:.0f}",
               "warm_latent_frames_per_cpu_s": "{:.0f}", "cold_items_s": "{:.0f}", "cold_latent_frames_s": "{:.0f}"}), "",
        "`zstd payloads alone`: each file's chunk records read, CRC-checked and decompressed, nothing else: "
        "the floor under any `.atok` reader of these files. "
        "`warm_latent_frames_per_cpu_s`: the same over the CPU time of the reading thread (less sensitive to other "
        "work on the machine than wall time). `resident_after_drop`: bytes of the files still in the page cache after "
        "the drop (fincore), worst pass.", "",
        "### Projection: a dataset of Wan-shaped latents", "",
        "**A projection, not a measurement**: each format's measured bytes per latent position (16 channels) times "
        "the positions of a 5-s clip at 16 fps (81 frames, 21 latent frames) for Wan-shaped latents (16 channels, "
        f"4x8x8): {', '.join(f'{k} {v:,} positions' for k, v in PROJECTION.items())}. Token rates and zstd's "
        "gain depend on the tokeniser and the footage: TinyTok on these clips stands in for Wan on yours.", "",
        table(r["projection"], ["format", "bytes_per_position", *[f"tb_per_million_{k}" for k in PROJECTION]],
              {"bytes_per_position": f2, **{f"tb_per_million_{k}": f2 for k in PROJECTION}}), "",
    ]


def _vae_markdown(v: dict, table) -> list[str]:
    """The same path with a tiny random diffusers VAE."""
    f1, f2, f3 = "{:.1f}", "{:.2f}", "{:.3f}"
    return ["### The same path with a diffusers VAE (plumbing only)", "",
            f"A tiny `AutoencoderKLWan` with random weights (16 channels), {len(v['clips'])} clips "
            f"({', '.join(f'{n} {w}x{h}, {f} frames' for n, w, h, f in v['clips'])}); its rule's unit is the "
            "spread of these latents (the decoder is not probed), thresholds in that unit; then every "
            "format as above. Random weights: the numbers show the path works, nothing about "
            f"Wan. `AtokDataset(tokenizer=VAE, normalize=True, layout='CTHW', dtype=torch.bfloat16)` gave items "
            f"of shape {tuple(v['item']['shape'])}, {v['item']['dtype']} ({v['item']['normalisation']}).", "",
            table(v["rows"], ["format", "token_rate", "bytes_per_position", "x_smaller_than_bf16",
                              "snr_db_all_spread", "snr_db_dropped_spread"],
                  {"token_rate": f3, "bytes_per_position": f2, "x_smaller_than_bf16": "{:.2f}x",
                   "snr_db_all_spread": f1, "snr_db_dropped_spread": f1}), ""]
