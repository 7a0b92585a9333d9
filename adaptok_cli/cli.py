"""The `adaptok` command: a thin layer over the Python API (pipeline, report, evaluate).

Options shared by several commands are declared once below (typer `Annotated` aliases); what the
commands print lives in cli_output.py. Heavy modules (torch, models) are imported by the commands
that need them, so `adaptok --help`, `inspect` and `verify` start fast.
"""
from __future__ import annotations

import csv
import json
import os
import sys
from enum import Enum
from functools import partial
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from . import __version__
from .batch import check_file_output, expand_inputs, output_paths, want_video
from . import remote
from .outputs import is_stdout
from .remote import is_url
from .cli_output import (Reporter, exit_code, fail, for_each, plural, print_eval, print_inspect, print_inspect_many, run_batch,
                         say, user_errors, write_plot)
from .defaults import (DEFAULT_CHUNK, DEFAULT_THRESHOLD, DEFAULT_TOKENIZER, DTYPE_CHOICES, TOKENIZER_KINDS, UNITS,
                       VIDEO_CODECS, is_device_name)
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Adaptive video tokenisation: drop latent positions that do not change, inpaint them back.")


# decompress --codec's choices, as an Enum so that they show in --help and shell completion
VideoCodec = Enum("VideoCodec", {c: c for c in VIDEO_CODECS}, type=str)


class SortKey(str, Enum):
    name = "name"
    rate = "rate"
    bpp = "bpp"
    bytes = "bytes"
    frames = "frames"


def choices(*values):
    """Shell completion for an option of a few fixed values that stays a plain string (--device also
    takes cuda:N, checked by the command)."""
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


# --- options shared by several commands, declared once ------------------------------------------
Videos = Annotated[List[str], typer.Argument(metavar="INPUT", help="Videos, folders (recursive) or globs.")]
VideosOrUrls = Annotated[List[str], typer.Argument(metavar="INPUT", help=(
    "Videos, folders (recursive), globs, or filesystem URLs of them (s3://..., with that store's fsspec "
    "plug-in; -o may be a URL too)."))]
Containers = Annotated[List[str], typer.Argument(metavar="FILE.atok", help=".atok files, shards (.tar), folders or globs.")]
ToDecode = Annotated[List[str], typer.Argument(metavar="FILE.atok", help=(
    ".atok files, shards (.tar: each clip, as if the shard were a folder of them), one clip of a shard "
    "(SHARD.tar:KEY), folders or globs."))]
Output = Annotated[Optional[str], typer.Option("-o", "--output", help=(
    "Output: a folder if it ends with '/', already is one, or there are several inputs (the input tree is "
    "mirrored inside, folders made as needed); otherwise the one output file, in a folder that exists. "
    "'-': standard output, for one input (compress: the .atok; decompress: y4m)."))]
Force = Annotated[bool, typer.Option("-f", "--force", help="Overwrite existing outputs.")]
Threshold = Annotated[Optional[float], typer.Option("--threshold", "-t", help=(
    f"Keep positions whose mean change over channels exceeds this, in the rule's unit (--unit) "
    f"[default: {DEFAULT_THRESHOLD}]."))]
KeepRatio = Annotated[Optional[float], typer.Option("--keep-ratio", "-r", help=(
    "Instead of a threshold: keep this fraction of each chunk's latent positions (the largest changes)."))]
Unit = Annotated[str, typer.Option("--unit", autocompletion=choices(*UNITS), help=(
    "The rule's unit of change per channel: decoder (each channel's spread weighted by how much the decoder "
    "uses it, from the tokeniser's calibration) or spread (the spread alone, as before format 4)."))]
Tokenizer = Annotated[str, typer.Option("--tokenizer", help=(
    f"The tokeniser: {TOKENIZER_KINDS}. Any but the built-in needs adaptok calibrate once."))]
DecodeTokenizer = Annotated[Optional[str], typer.Option("--tokenizer", help=(
    "The tokeniser's file or folder, if it is not built in (checked against the container's fingerprint)."))]
Chunk = Annotated[int, typer.Option("--chunk", help="Latent frames per chunk record.")]
Device = Annotated[str, typer.Option("--device", autocompletion=choices("auto", "cpu", "cuda"), help="auto, cpu or cuda (cuda:N: GPU N).")]
Dtype = Annotated[str, typer.Option("--dtype", autocompletion=choices(*DTYPE_CHOICES), help=(
    "Precision of a diffusers tokeniser: auto (bf16 on a GPU that has it, else fp32), fp32, bf16 or fp16."))]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="Print timings.")]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per file on stdout.")]
Csv = Annotated[bool, typer.Option("--csv", help="One CSV row per file on stdout (after a header row).")]
Workers = Annotated[Optional[int], typer.Option("--workers", "-j", help="Files processed in parallel (default: half the cores, and no more than free memory holds at 1 GB each).")]
MaxPixels = Annotated[Optional[int], typer.Option("--max-pixels", metavar="N", help=(
    "Resource budget: refuse containers with frames over N pixels [default: 4096x4096]; raise it only for "
    "files you trust."))]
NoLit = Annotated[bool, typer.Option("--no-lit", help="Hold-fill dropped positions instead of running LIT.")]
LitFile = Annotated[Optional[str], typer.Option("--lit", help=(
    "A LIT weights file made by adaptok train-lit (for a tokeniser without a shipped LIT)."))]


def version_callback(value: bool):
    if value:
        print(f"adaptok {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", "-V", callback=version_callback, is_eager=True,
                                                help="Print the version and exit.")] = False):
    pass


# --- helpers ------------------------------------------------------------------------------------

def limits_for(max_pixels: Optional[int]):
    from .container import DEFAULT_LIMITS, Limits
    if max_pixels is None:
        return DEFAULT_LIMITS
    if max_pixels < 1:
        raise UsageError("--max-pixels must be at least 1")
    return Limits.for_pixels(max_pixels)


def check_common(workers: Optional[int], device: str, as_json: bool, as_csv: bool, dtype: str = "auto"):
    """Options every batch command shares, checked before any work (bad values are usage errors, 2)."""
    from .options import check_dtype
    check_dtype(dtype)
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if not is_device_name(device):
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda")
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")


# --- commands -----------------------------------------------------------------------------------

@app.command("compress", short_help="Encode videos into .atok containers.")
def compress_cmd(
    inputs: VideosOrUrls, output: Output = None, force: Force = False, threshold: Threshold = None,
    keep_ratio: KeepRatio = None, tokenizer: Tokenizer = DEFAULT_TOKENIZER, chunk: Chunk = DEFAULT_CHUNK,
    unit: Unit = "decoder",
    keyframe_interval: Annotated[int, typer.Option("--keyframe-interval", help="Keep every N-th latent frame whole (0: only the first).")] = 0,
    level: Annotated[int, typer.Option("--level", "-l", help="zstd level, 1-22.")] = 10,
    quant: Annotated[str, typer.Option("--quant", autocompletion=choices("int8", "fp16"), help="int8 (per-channel scales) or fp16.")] = "int8",
    max_side: Annotated[Optional[int], typer.Option("--max-side", help="Downscale so the longest side is at most N (16 or more).")] = None,
    short_side: Annotated[Optional[int], typer.Option("--short-side", help=(
        "Resize so the short side is N (16 or more; smaller clips are enlarged), as training sets fix it; "
        "not with --max-side."))] = None,
    start: Annotated[Optional[float], typer.Option("--start", metavar="SECONDS", help=(
        "Begin this many seconds after the first frame (ffmpeg's -ss); the audio is cut to the range."))] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", metavar="SECONDS", help="Keep at most this many seconds (ffmpeg's -t).")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", metavar="N", help="Keep at most N frames (ffmpeg's -frames).")] = None,
    fps: Annotated[Optional[str], typer.Option("--fps", metavar="RATE", help=(
        "Resample to this constant frame rate, dropping or repeating frames (24, 29.97 or 30000/1001)."))] = None,
    device: Device = "auto", dtype: Dtype = "auto", lit: LitFile = None,
    use_ray: Annotated[bool, typer.Option("--ray", help=(
        "Run on Ray: a local Ray without --ray-address (the ray extra); outputs as a local run's."))] = False,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="A Ray cluster to run on (implies --ray).")] = None,
    ray_gpus: Annotated[Optional[float], typer.Option("--ray-gpus-per-worker", help=(
        "GPU share each Ray actor asks for with --device cuda (default: 0.25 for TinyTok-architecture models, "
        "1 for a VAE folder)."))] = None,
    shard_size: Annotated[Optional[int], typer.Option("--shard-size", help=(
        "Write WebDataset-style tar shards of N clips each into the -o folder (shard-000000.tar + its "
        "index .json); a rerun skips finished shards."))] = None,
    drop_audio: Annotated[bool, typer.Option("--drop-audio", help="Leave the sound out (by default the first audio stream is kept, copied as it is).")] = False,
    quiet: Quiet = False, verbose: Verbose = False, as_json: Json = False, workers: Workers = None, as_csv: Csv = False,
):
    """Encode videos into .atok containers (INPUT -> INPUT.atok)."""
    from .batch import check_gpus_per_worker, check_shard_target, compress_pairs, want_video
    from .options import CompressOptions
    with user_errors():
        opts = CompressOptions(threshold=threshold, keep_ratio=keep_ratio, tokenizer=tokenizer, chunk=chunk,
                               keyframe_interval=keyframe_interval, level=level, quant=quant, max_side=max_side,
                               short_side=short_side, device=device, drop_audio=drop_audio, unit=unit, dtype=dtype,
                               lit=lit, start=start, duration=duration, frames=frames, fps=fps).check()
        check_common(workers, device, as_json, as_csv)
        check_shard_target(output, shard_size)
        check_gpus_per_worker(ray_gpus)
        for url in [i for i in inputs if is_url(i)] + ([output] if output and is_url(output) else []):
            remote.check_url(url, output=url is output, in_process=False)   # a store that outlives this process
        pairs = expand_inputs(inputs, want_video, urls=True)
        start = partial(compress_pairs, pairs, output, opts, force, workers, use_ray, ray_address, shard_size,
                        ray_gpus=ray_gpus)
        code = run_batch(len(pairs), start, Reporter(quiet, as_json, verbose), "compress", as_csv,
                         to_stdout=output is not None and is_stdout(output))
    raise typer.Exit(code)


@app.command("decompress", short_help="Rebuild videos from .atok containers.")
def decompress_cmd(
    inputs: ToDecode, output: Output = None, force: Force = False,
    codec: Annotated[Optional[VideoCodec], typer.Option("--codec", help="Output format (default: from the extension; .mp4 x264, .mkv ffv1, .y4m, png: a folder of frames).")] = None,
    crf: Annotated[int, typer.Option("--crf", help="x264 quality, 0-51 (lower is better).")] = 18,
    no_lit: NoLit = False, lit: LitFile = None, tokenizer: DecodeTokenizer = None, device: Device = "auto",
    dtype: Dtype = "auto", quiet: Quiet = False, verbose: Verbose = False, as_json: Json = False,
    overlay: Annotated[bool, typer.Option("--overlay", help="Tint the positions that were dropped (to see the mask).")] = False,
    recover: Annotated[bool, typer.Option("--partial", help="Recover the complete chunks of a truncated file.")] = False,
    max_pixels: MaxPixels = None, workers: Workers = None, as_csv: Csv = False,
):
    """Rebuild videos from .atok containers (size, frame count and fps restored)."""
    from .batch import decompress_job, decompress_skip, run, video_name
    from .shard_inputs import renamed, staged_clips
    from .shards import want_container
    with user_errors():
        check_common(workers, device, as_json, as_csv, dtype)
        if not 0 <= crf <= 51:
            raise UsageError("--crf must be between 0 and 51")
        codec = codec.value if codec else None
        pairs = expand_inputs(inputs, want_container)
        if output is not None and is_url(output):
            raise UsageError(f"{output}: only compress writes URLs; decompress to a local path")
        with staged_clips(pairs) as clips:          # a shard: each of its clips, as if it were a folder of them
            ok = [c for c in clips if c.error is None]
            dsts = output_paths([(c.source, c.rel) for c in ok], output, partial(video_name, codec=codec)) if ok else []
            from .video import output_kind
            for d in dsts:
                output_kind(d, codec)       # an extension that disagrees with --codec is a usage error, up front
            kw = dict(tokenizer=tokenizer, use_lit=not no_lit, codec=codec, crf=crf, device=device, overlay=overlay,
                      partial=recover, limits=limits_for(max_pixels), dtype=dtype, lit=lit)
            todo = [(c.staged, d) for c, d in zip(ok, dsts)]
            to_stdout = output is not None and is_stdout(output)
            start = partial(run, todo, partial(decompress_job, kw, force), workers,
                            None if force or to_stdout else partial(decompress_skip, kw))
            code = run_batch(len(clips), renamed(start, clips), Reporter(quiet, as_json, verbose), "decompress",
                             as_csv, to_stdout)
    raise typer.Exit(code)


def plot_png(folder: str, rel: Path, key: str | None = None) -> Path:
    """inspect --plot FOLDER/: where a container's PNG goes, its path under what was named mirrored
    (a shard member: FOLDER/SHARD/KEY.png)."""
    return Path(folder) / rel.parent / (f"{rel.stem}/{key}.png" if key is not None else rel.name + ".png")


SORT_KEYS = {"name": "file", "rate": "token_rate", "bpp": "bpp", "bytes": "bytes", "frames": "frames"}


@app.command("inspect", short_help="Token rates, sizes and models of containers.")
def inspect_cmd(
    inputs: Containers, as_json: Json = False,
    chunks: Annotated[Optional[bool], typer.Option("--chunks/--no-chunks", help="Per-chunk tables (default: for one file).")] = None,
    sort: Annotated[SortKey, typer.Option("--sort", help="Order of files (bytes: file size).")] = SortKey.name,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write a PNG (timeline + heatmap); for several files a folder (one PNG each).")] = None,
    max_pixels: MaxPixels = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help=(
        "Also check that the containers were made with this tokeniser (by weights fingerprint; nothing is loaded)."))] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help=(
        "One CSV row per clip after a header row: --json's per-clip fields, nested ones flattened (a manifest)."))] = False,
    where: Annotated[Optional[List[str]], typer.Option("--where", metavar="'FIELD OP NUMBER'", help=(
        "Only clips whose figure compares so, e.g. 'token_rate<0.3' (OP: < <= > >= = !=; FIELD: a number of "
        "--json's, such as token_rate, bpp, frames, width, duration); repeat, or join with commas: all must hold."))] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help=(
        "Print nothing but errors (and the --json or --csv rows asked for).")) ] = False,
):
    """Token rates per clip and per chunk, sizes and model identities (reads only header and index)."""
    from .manifest import matches, parse_where
    from .report import inspect
    from .shards import each_container, is_shard, want_container
    with user_errors():
        check_common(None, "auto", as_json, as_csv)
        clauses = parse_where(where or [])
        found = expand_inputs(inputs, want_container)
        files, rel_of = [f for f, _ in found], dict(found)
        plot_dir = plot is not None and plot_folder(plot, files, rel_of)
        infos, sources, plotted = [], {}, {}
        limits = limits_for(max_pixels)

        def one(name, item):                              # a file, or one clip of a shard
            f, source = item
            info = inspect(source, limits).to_dict()
            info["file"] = name
            if not matches(info, clauses):
                return
            if plot is not None:
                png = plot_png(plot, rel_of[f], name.rpartition(":")[2] if is_shard(f) else None) if plot_dir \
                    else Path(plot)
                if png in plotted:
                    raise UsageError(f"{plotted[png]} and {name} would both be plotted to {png}: give a folder")
                plotted[png] = name
            if tokenizer is not None:
                from .container import AtokReader
                from .models import check_named_tokenizer
                with AtokReader(source, limits=limits) as r:
                    check_named_tokenizer(r.header, name, tokenizer)
            infos.append(info)
            sources[name] = source
            if plot is not None:
                write_plot(source, png, quiet, name)
        code = for_each(files, one, parts=lambda f: ((name, (f, source), error)
                                                     for name, source, error in each_container(f, limits)))
        infos.sort(key=lambda i: (i[SORT_KEYS[sort.value]], i["file"]))
        report_inspect(infos, sources, as_json, as_csv, quiet, chunks)
        if not (infos or quiet) and clauses and not code:
            say(f"no clip matches --where {' and '.join(where)}")
    raise typer.Exit(code)


def report_inspect(infos: list, sources: dict, as_json: bool, as_csv: bool, quiet: bool, chunks: bool | None):
    """inspect's output: CSV rows, JSON lines, or the tables (one clip: its chunks and heatmap)."""
    from .manifest import CSV_COLUMNS, csv_row
    if as_csv:
        rows = csv.writer(sys.stdout, lineterminator="\n")
        rows.writerows([CSV_COLUMNS] + [csv_row(i) for i in infos])
    for info in infos if as_json else []:
        print(json.dumps(info), flush=True)
    if not (as_json or as_csv or quiet) and infos:
        if len(infos) == 1:
            print_inspect(infos[0], chunks is not False, sources[infos[0]["file"]])
        else:
            print_inspect_many(infos, bool(chunks))


def plot_folder(plot: str, files: list, rel_of: dict) -> bool:
    """inspect --plot: one .png for one container, or a folder (one PNG each, the input tree mirrored, as
    compress does; two inputs on one PNG are refused) -> whether it is a folder."""
    from .outputs import plan
    from .shards import is_shard
    folder = plot.endswith(("/", os.sep)) or Path(plot).is_dir() or len(files) > 1 and not Path(plot).suffix
    if not folder and (len(files) > 1 or Path(plot).suffix.lower() != ".png"):
        raise UsageError(f"--plot {plot}: give a .png file for one container, or a folder (ending in /) "
                         f"for one PNG each (standard output carries inspect's report)")
    if not folder:
        check_file_output(plot, (".png",), "--plot writes a PNG")
    else:
        plan([(f, plot_png(plot, rel_of[f])) for f in files if not is_shard(f)])
    return folder


@app.command("verify", short_help="Check containers without decoding frames.")
def verify_cmd(inputs: Containers, as_json: Json = False,
               quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only failures.")] = False,
               max_pixels: MaxPixels = None,
               jobs: Annotated[int, typer.Option("--jobs", "-j", help=(
                   "Files checked in parallel processes (results still in input order)."))] = 1):
    """Check containers (structure, every chunk's checksum and contents) without decoding frames; with
    several files, a last line on stderr names the bad ones."""
    from .shards import want_container
    from .verify import checked
    with user_errors():
        limits = limits_for(max_pixels)
        if jobs < 1:
            raise UsageError("--jobs must be at least 1")
        files = [f for f, _ in expand_inputs(inputs, want_container)]
        bad, containers, errors_seen, parts_seen = [], [0], [], [0]

        def one(result):
            _, parts = result
            errors = []
            for name, n, error in parts:
                parts_seen[0] += 1
                if error is not None:
                    errors.append((name, error))
                    continue
                containers[0] += 1
                if as_json:
                    print(json.dumps({"status": "ok", "file": name, "chunks": n}), flush=True)
                elif not quiet:
                    print(f"{name}: ok ({n} chunks)", flush=True)
            for i, (name, error) in enumerate(errors):   # each bad clip of a shard is said; the last one is
                failed(name, error)                     # the file's own failure, said by for_each
                if i < len(errors) - 1:
                    say(str(error))
            if errors:
                raise errors[-1][1]

        def failed(name, e):
            bad.append(str(name))
            errors_seen.append(e)
            if as_json:
                print(json.dumps({"status": "error", "file": str(name), "error": str(e), "exit_code": e.exit_code}),
                      flush=True)

        def file_failed(result, e):     # for_each's own catch: a bug on the file, not a clip's error
            if not errors_seen or errors_seen[-1] is not e:
                parts_seen[0] += 1
                failed(result[0], e)
        with checked(files, jobs, limits) as results:
            for_each(results, one, file_failed)
        code = exit_code(errors_seen, parts_seen[0])     # each clip of a shard counts as a file
        if len(files) > 1 and (bad or not quiet):
            say(verify_summary(len(files), bad, containers[0]))
    raise typer.Exit(code)


def verify_summary(n_files: int, bad: list, containers: int, show: int = 20) -> str:
    """The last line of a verify over many files: how many passed, and which did not."""
    head = f"verify: {n_files - len(bad)} of {n_files} files ok ({containers} containers checked)"
    if not bad:
        return head
    more = f", and {len(bad) - show} more" if len(bad) > show else ""
    return f"{head}; {len(bad)} bad: {', '.join(bad[:show])}{more}"


@app.command("eval", short_help="Quality and rate of videos, in memory.")
def eval_cmd(
    inputs: Videos, threshold: Threshold = None, keep_ratio: KeepRatio = None, unit: Unit = "decoder",
    short_side: Annotated[Optional[int], typer.Option("--short-side", help="Shrink clips whose short side is over N to N (smaller clips are scored at their own size; 0: native) [default: native size].")] = None,
    tokenizer: Tokenizer = DEFAULT_TOKENIZER, chunk: Chunk = DEFAULT_CHUNK,
    no_lit: Annotated[bool, typer.Option("--no-lit", help="Report hold-fill as the main figure.")] = False,
    device: Device = "auto", dtype: Dtype = "auto", quiet: Quiet = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per clip, then one with the mean.")] = False,
):
    """Compress + decompress in memory; PSNR/SSIM against the decoded input at full rate, hold-fill and LIT."""
    from .evaluate import evaluate, mean_of
    from .options import CompressOptions
    from .tokenizer import load_tokenizer, pick_device
    with user_errors():
        check_common(None, device, as_json, False)
        opts = CompressOptions(threshold=threshold, keep_ratio=keep_ratio, tokenizer=tokenizer, chunk=chunk,
                               short_side=short_side or None, device=device, unit=unit,
                               dtype=dtype).check()   # short side 0: native, as before
        dev = pick_device(device)
        tok = load_tokenizer(opts.tokenizer, dev, dtype)
        reporter, results = Reporter(quiet, as_json), []

        def one(f):
            with reporter.progress(f"eval {f.name}") as tick:
                r = evaluate(f, opts, use_lit=not no_lit, tokenizer=tok, device=dev,
                             progress=lambda n, total=None: tick("frames", n, total))
            results.append(r)
            if as_json:
                print(json.dumps(r.to_dict()), flush=True)
        code = for_each([f for f, _ in expand_inputs(inputs, want_video)], one)
        if as_json:
            print(json.dumps({"mean": mean_of(results), "clips": len(results)}))
        elif not quiet and results:
            print_eval([r.to_dict() for r in results], mean_of(results), no_lit)
    raise typer.Exit(code)


@app.command("calibrate", short_help="Measure a tokeniser's unit of change on your clips.")
def calibrate_cmd(
    inputs: Videos, tokenizer: Tokenizer = DEFAULT_TOKENIZER,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help=(
        "Where to write the calibration [default: the calibration store, where compress finds it: "
        "$ADAPTOK_CACHE/calibration or ~/.cache/adaptok/calibration]."))] = None,
    force: Force = False,
    short_side: Annotated[int, typer.Option("--short-side", help="Shrink clips to this short side first (0: native).")] = 256,
    max_frames: Annotated[int, typer.Option("--max-frames", help="Frames read from each clip.")] = 64,
    device: Device = "auto", dtype: Dtype = "auto", quiet: Quiet = False, as_json: Json = False,
):
    """Measure each latent channel's spread and the decoder's sensitivity to it: the rule's unit of change.
    A tokeniser other than the built-in needs this once before compress (a few clips like yours)."""
    from .calibration import calibrate, save, stored_path
    from .errors import OutputExistsError
    from .tokenizer import load_tokenizer, pick_device
    with user_errors():
        check_common(None, device, as_json, False, dtype)
        if max_frames < 1 or short_side < 0:
            raise UsageError("--max-frames must be 1 or more and --short-side 0 or more")
        if output is not None:
            check_file_output(output, (".safetensors",), "calibrate writes a .safetensors file", folders=False)
        clips = [f for f, _ in expand_inputs(inputs, want_video)]
        tok = load_tokenizer(tokenizer, pick_device(device), dtype)
        dst = Path(output) if output else stored_path(tok)
        if dst.exists() and not force:
            raise OutputExistsError(f"{dst}: exists (use -f to replace it)")
        with Reporter(quiet, as_json).stages() as update:
            cal = calibrate(tok, clips, short_side or None, max_frames,
                            lambda done, total: update(f"calibrate {tok.name}", done, total, "Mpx"))
        save(cal, dst)
        if as_json:
            print(json.dumps({"tokenizer": tok.name, "fingerprint": tok.fingerprint, "clips": len(clips),
                              "output": str(dst), "spread": cal.spread.tolist(),
                              "sensitivity": cal.sensitivity.tolist(), "unit": cal.unit("decoder").tolist()}))
        elif not quiet:
            print(f"calibrated {tok.name} on {plural(len(clips), 'clip')}: {dst}", file=sys.stderr)
    raise typer.Exit(0)


@app.command("train-lit", short_help="Train a LIT for a tokeniser on your clips.")
def train_lit_cmd(
    inputs: Videos, output: Annotated[str, typer.Option("-o", "--output", help="The LIT weights file to write (.safetensors).")],
    tokenizer: Tokenizer = DEFAULT_TOKENIZER, force: Force = False,
    steps: Annotated[int, typer.Option("--steps", help="Training steps (a rerun of the same command resumes).")] = 2000,
    val_clips: Annotated[int, typer.Option("--val-clips", help="Clips held out to choose the step (one clip: its last quarter).")] = 1,
    short_side: Annotated[int, typer.Option("--short-side", help="Shrink clips to this short side first (0: native).")] = 256,
    max_frames: Annotated[int, typer.Option("--max-frames", help="Frames read from each clip.")] = 256,
    device: Device = "auto", dtype: Dtype = "auto", quiet: Quiet = False, as_json: Json = False,
):
    """Train a Latent Inpainting Transformer for a calibrated tokeniser (OUTPUT.run/ keeps the latents,
    checkpoints and log). Use it with compress/decompress --lit OUTPUT."""
    from dataclasses import asdict

    from .errors import OutputExistsError
    from .tokenizer import load_tokenizer, pick_device
    from .training.user_lit import TrainLitOptions, check_output, run_dir, train_lit
    with user_errors():
        check_common(None, device, as_json, False, dtype)
        if steps < 1 or val_clips < 0 or max_frames < 1 or short_side < 0:
            raise UsageError("--steps and --max-frames must be 1 or more, --val-clips and --short-side 0 or more")
        dst = check_output(output)
        if dst.exists() and not force and not run_dir(dst).exists():
            raise OutputExistsError(f"{dst}: exists (use -f to replace it)")
        clips = [f for f, _ in expand_inputs(inputs, want_video)]
        tok = load_tokenizer(tokenizer, pick_device(device), dtype)
        opts = TrainLitOptions(steps=steps, val_clips=val_clips, short_side=short_side or None, max_frames=max_frames)
        labels = {"encode": ("train-lit: encoding clips", "Mpx"), "train": (f"train-lit {dst.name}", "steps")}
        with Reporter(quiet, as_json).stages() as update:
            report = train_lit(tok, clips, dst, opts, progress=lambda stage, done, total, note:
                               update(labels[stage][0], done, total, labels[stage][1], note))
        if as_json:
            print(json.dumps(asdict(report)))
        elif not quiet:
            print(f"{dst}: step {report.best_step} of {report.steps} (best on the {report.held_out}); "
                  f"LIT {report.gain_db:+.2f} dB over hold-fill on held-out dropped latents "
                  f"(decoder-weighted MSE {report.lit_mse:.4g} vs {report.hold_mse:.4g})", file=sys.stderr)
        if report.gain_db <= 0 and not quiet:
            say(f"warning: this LIT does no better than hold-fill on the held-out latents ({report.gain_db:+.2f} dB): "
                f"train longer or on more clips, or decompress with --no-lit")
    raise typer.Exit(0)


@app.command("completion", short_help="Print the shell completion script.")
def completion_cmd(shell: Annotated[str, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")]):
    """Print the shell completion script: eval "$(adaptok completion bash)" in ~/.bashrc."""
    from typer.completion import get_completion_script
    if shell not in ("bash", "zsh", "fish"):
        fail("completion: SHELL must be bash, zsh or fish", EXIT_USAGE)
    print(get_completion_script(prog_name="adaptok", complete_var="_ADAPTOK_COMPLETE", shell=shell))


def main():
    """Run the app; every interruption, wherever it lands, reaches adaptok_cli.main as KeyboardInterrupt.

    standalone_mode=False so that click hands back exit codes (it turns Ctrl-C into a silent 130)."""
    from typer.exceptions import TyperException
    try:
        code = app(prog_name="adaptok", standalone_mode=False)
    except TyperException as e:          # usage errors: click's own message and code (2)
        e.show()
        code = e.exit_code
    except typer.Abort:                 # end of input at a prompt
        code = EXIT_INTERRUPTED
    except SystemExit as e:             # typer ends a closed pipe (help, completion) with 1; we say 141
        if e.code != 1 or type(sys.stdout).__name__ != "PacifyFlushWrapper":     # what typer sets on EPIPE
            raise
        raise BrokenPipeError from None     # adaptok_cli.main exits 141, quietly
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt     # adaptok_cli.main says so and exits 130
    sys.exit(code or 0)
