"""The `adaptok` command: a thin layer over the Python API. Each command builds its options and calls one
API function (batch, manifest, verify, evaluate, training.user_lit), which checks them and reports
(through printing.py). Every flag is declared once below; a command that words its help differently retells
it. Heavy modules (torch, models) are imported by the commands that need them, so `adaptok --help`,
`inspect` and `verify` start fast."""
from __future__ import annotations

import copy
import sys
from enum import Enum
from typing import List, Optional

import typer
from typing_extensions import Annotated, get_args

from adaptok_cli import __version__
from adaptok_cli.running.batch import compress_batch, decompress_batch
from adaptok_cli.cli.printing import Reporter, fail, run_batch, user_errors
from adaptok_cli.defaults import (DEFAULT_CHUNK, DEFAULT_THRESHOLD, DEFAULT_TOKENIZER, DTYPE_CHOICES, SORT_KEYS, TOKENIZER_KINDS,
                       UNITS, VIDEO_CODECS)
from adaptok_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE
from adaptok_cli.running.options import CompressOptions, DecompressOptions, check_common, limits_for
from adaptok_cli.running.outputs import is_stdout

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Adaptive video tokenisation: drop latent positions that do not change, inpaint them back.")

# fixed choices as Enums, so that they show in --help and shell completion
VideoCodec = Enum("VideoCodec", {c: c for c in VIDEO_CODECS}, type=str)     # decompress --codec
SortKey = Enum("SortKey", {k: k for k in SORT_KEYS}, type=str)              # inspect --sort


def choices(*values):
    """Shell completion of a few fixed values for an option that stays a string (--device: also cuda:N)."""
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


def retold(alias, help: str, type_=None):
    """A flag declared below, with one command's own help text (and type, for one without a default)."""
    base, info = get_args(alias)
    info = copy.copy(info)
    info.help = help
    return Annotated[type_ or base, info]


def opt(type_, *flags, **kw):
    """A flag: its type and typer.Option."""
    return Annotated[type_, typer.Option(*flags, **kw)]


# --- every flag, declared once -------------------------------------------------------------------
Videos = Annotated[List[str], typer.Argument(metavar="INPUT", help="Videos, folders (recursive) or globs.")]
VideosOrUrls = Annotated[List[str], typer.Argument(metavar="INPUT", help=(
    "Videos, folders (recursive), globs, or filesystem URLs of them (s3://..., with that store's fsspec "
    "plug-in; -o may be a URL too)."))]
Containers = Annotated[List[str], typer.Argument(metavar="FILE.atok", help=".atok files, shards (.tar), folders or globs.")]
ToDecode = Annotated[List[str], typer.Argument(metavar="FILE.atok", help=(
    ".atok files, shards (.tar: each clip, as if the shard were a folder of them), one clip of a shard "
    "(SHARD.tar:KEY), folders or globs."))]
Output = opt(Optional[str], "-o", "--output", help=(
    "Output: a folder if it ends with '/', already is one, or there are several inputs (the input tree is "
    "mirrored inside, folders made as needed); otherwise the one output file, in a folder that exists. "
    "'-': standard output, for one input (compress: the .atok; decompress: y4m)."))
Force = opt(bool, "-f", "--force", help="Overwrite existing outputs.")
Threshold = opt(Optional[float], "--threshold", "-t", help=(
    f"Keep positions whose mean change over channels exceeds this, in the rule's unit (--unit) "
    f"[default: {DEFAULT_THRESHOLD}]."))
KeepRatio = opt(Optional[float], "--keep-ratio", "-r", help=(
    "Instead of a threshold: keep this fraction of each chunk's latent positions (the largest changes)."))
Unit = opt(str, "--unit", autocompletion=choices(*UNITS), help=(
    "The rule's unit of change per channel: decoder (each channel's spread weighted by how much the decoder "
    "uses it, from the tokeniser's calibration) or spread (the spread alone, as before format 4)."))
Tokenizer = opt(str, "--tokenizer", help=(
    f"The tokeniser: {TOKENIZER_KINDS}. Any but the built-in needs adaptok calibrate once."))
Chunk = opt(int, "--chunk", help="Latent frames per chunk record.")
Device = opt(str, "--device", autocompletion=choices("auto", "cpu", "cuda"), help="auto, cpu or cuda (cuda:N: GPU N).")
Dtype = opt(str, "--dtype", autocompletion=choices(*DTYPE_CHOICES), help=(
    "Precision of a diffusers tokeniser: auto (bf16 on a GPU that has it, else fp32), fp32, bf16 or fp16."))
Quiet = opt(bool, "-q", "--quiet", help="Print nothing but errors.")
Verbose = opt(bool, "-v", "--verbose", help="Print timings.")
Json = opt(bool, "--json", help="One JSON object per file on stdout.")
Csv = opt(bool, "--csv", help="One CSV row per file on stdout (after a header row).")
Workers = opt(Optional[int], "--workers", "-j", help=(
    "Files processed in parallel (default: half the cores, and no more than free memory holds at 1 GB each)."))
Jobs = opt(int, "--jobs", "-j", help="Files checked in parallel processes (results still in input order).")
MaxPixels = opt(Optional[int], "--max-pixels", metavar="N", help=(
    "Resource budget: refuse containers with frames over N pixels [default: 4096x4096]; raise it only for "
    "files you trust."))
NoLit = opt(bool, "--no-lit", help="Hold-fill dropped positions instead of running LIT.")
LitFile = opt(Optional[str], "--lit", help="A LIT weights file made by adaptok train-lit (for a tokeniser without a shipped LIT).")
ShortSide = opt(Optional[int], "--short-side", help=(
    "Resize so the short side is N (16 or more; smaller clips are enlarged), as training sets fix it; "
    "not with --max-side."))
MaxFrames = opt(int, "--max-frames", help="Frames read from each clip.")
# the same flags, worded for one command
DecodeTokenizer = retold(Tokenizer, "The tokeniser's file or folder, if it is not built in (checked against the "
                         "container's fingerprint).", Optional[str])
ShrinkSide = retold(ShortSide, "Shrink clips to this short side first (0: native).", int)


def version_callback(value: bool):
    if value:
        print(f"adaptok {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", "-V", callback=version_callback, is_eager=True,
                                                help="Print the version and exit.")] = False):
    pass


# --- commands: each calls one API function ----------------------------------------------------------

@app.command("compress", short_help="Encode videos into .atok containers.")
def compress_cmd(
    inputs: VideosOrUrls, output: Output = None, force: Force = False, threshold: Threshold = None,
    keep_ratio: KeepRatio = None, tokenizer: Tokenizer = DEFAULT_TOKENIZER, chunk: Chunk = DEFAULT_CHUNK,
    unit: Unit = "decoder",
    keyframe_interval: opt(int, "--keyframe-interval", help="Keep every N-th latent frame whole (0: only the first).") = 0,
    level: opt(int, "--level", "-l", help="zstd level, 1-22.") = 10,
    quant: opt(str, "--quant", autocompletion=choices("int8", "fp16"), help="int8 (per-channel scales) or fp16.") = "int8",
    max_side: opt(Optional[int], "--max-side", help="Downscale so the longest side is at most N (16 or more).") = None,
    short_side: ShortSide = None,
    start: opt(Optional[float], "--start", metavar="SECONDS", help=(
        "Begin this many seconds after the first frame (ffmpeg's -ss); the audio is cut to the range.")) = None,
    duration: opt(Optional[float], "--duration", metavar="SECONDS", help="Keep at most this many seconds (ffmpeg's -t).") = None,
    frames: opt(Optional[int], "--frames", metavar="N", help="Keep at most N frames (ffmpeg's -frames).") = None,
    fps: opt(Optional[str], "--fps", metavar="RATE", help=(
        "Resample to this constant frame rate, dropping or repeating frames (24, 29.97 or 30000/1001).")) = None,
    device: Device = "auto", dtype: Dtype = "auto", lit: LitFile = None,
    use_ray: opt(bool, "--ray", help=(
        "Run on Ray: a local Ray without --ray-address (the ray extra); outputs as a local run's.")) = False,
    ray_address: opt(Optional[str], "--ray-address", help="A Ray cluster to run on (implies --ray).") = None,
    ray_gpus: opt(Optional[float], "--ray-gpus-per-worker", help=(
        "GPU share each Ray actor asks for with --device cuda (default: 0.25 for TinyTok-architecture models, "
        "1 for a VAE folder).")) = None,
    shard_size: opt(Optional[int], "--shard-size", help=(
        "Write WebDataset-style tar shards of N clips each into the -o folder (shard-000000.tar + its "
        "index .json); a rerun skips finished shards.")) = None,
    drop_audio: opt(bool, "--drop-audio", help=(
        "Leave the sound out (by default the first audio stream is kept, copied as it is).")) = False,
    store_logvar: opt(bool, "--store-logvar", help=(
        "Also store the VAE posterior's log-variance at the kept positions (format 6), so a trainer can "
        "sample latents (AtokDataset latents='sample'); a tokeniser without a posterior is refused (exit 2).")) = False,
    quiet: Quiet = False, verbose: Verbose = False, as_json: Json = False, workers: Workers = None, as_csv: Csv = False,
):
    """Encode videos into .atok containers (INPUT -> INPUT.atok)."""
    with user_errors():
        opts = CompressOptions(threshold=threshold, keep_ratio=keep_ratio, tokenizer=tokenizer, chunk=chunk,
                               keyframe_interval=keyframe_interval, level=level, quant=quant, max_side=max_side,
                               short_side=short_side, device=device, drop_audio=drop_audio, unit=unit, dtype=dtype,
                               lit=lit, start=start, duration=duration, frames=frames, fps=fps,
                               store_logvar=store_logvar).check()
        check_common(workers, device, as_json, as_csv)
        batch = compress_batch(inputs, output, opts, force, workers, use_ray, ray_address, shard_size, ray_gpus,
                               in_process=False)
        code = run_batch(batch, Reporter(quiet, as_json, verbose), "compress", as_csv, is_stdout(output))
    raise typer.Exit(code)


@app.command("decompress", short_help="Rebuild videos from .atok containers.")
def decompress_cmd(
    inputs: ToDecode, output: Output = None, force: Force = False,
    codec: opt(Optional[VideoCodec], "--codec", help=(
        "Output format (default: from the extension; .mp4 x264, .mkv ffv1, .y4m, png: a folder of frames).")) = None,
    crf: opt(int, "--crf", help="x264 quality, 0-51 (lower is better).") = 18,
    no_lit: NoLit = False, lit: LitFile = None, tokenizer: DecodeTokenizer = None, device: Device = "auto",
    dtype: Dtype = "auto", quiet: Quiet = False, verbose: Verbose = False, as_json: Json = False,
    overlay: opt(bool, "--overlay", help="Tint the positions that were dropped (to see the mask).") = False,
    recover: opt(bool, "--partial", help="Recover the complete chunks of a truncated file.") = False,
    max_pixels: MaxPixels = None, workers: Workers = None, as_csv: Csv = False,
):
    """Rebuild videos from .atok containers (size, frame count and fps restored)."""
    with user_errors():
        opts = DecompressOptions(tokenizer=tokenizer, use_lit=not no_lit, lit=lit, codec=codec.value if codec else None,
                                 crf=crf, device=device, dtype=dtype, overlay=overlay, partial=recover,
                                 limits=limits_for(max_pixels)).check()
        check_common(workers, device, as_json, as_csv, dtype)
        with decompress_batch(inputs, output, opts, force, workers) as batch:
            code = run_batch(batch, Reporter(quiet, as_json, verbose), "decompress", as_csv, is_stdout(output))
    raise typer.Exit(code)


@app.command("inspect", short_help="Token rates, sizes and models of containers.")
def inspect_cmd(
    inputs: Containers, as_json: Json = False,
    chunks: opt(Optional[bool], "--chunks/--no-chunks", help="Per-chunk tables (default: for one file).") = None,
    sort: opt(SortKey, "--sort", help="Order of files (bytes: file size).") = SortKey.name,
    plot: opt(Optional[str], "--plot", help=(
        "Write a PNG (timeline + heatmap); for several files a folder (one PNG each).")) = None,
    max_pixels: MaxPixels = None,
    tokenizer: retold(Tokenizer, "Also check that the containers were made with this tokeniser (by weights "
                      "fingerprint; nothing is loaded).", Optional[str]) = None,
    as_csv: retold(Csv, "One CSV row per clip after a header row: --json's per-clip fields, nested ones "
                   "flattened (a manifest).") = False,
    where: opt(Optional[List[str]], "--where", metavar="'FIELD OP NUMBER'", help=(
        "Only clips whose figure compares so, e.g. 'token_rate<0.3' (OP: < <= > >= = !=; FIELD: a number of "
        "--json's, such as token_rate, bpp, frames, width, duration); repeat, or join with commas: all must hold.")) = None,
    quiet: retold(Quiet, "Print nothing but errors (and the --json or --csv rows asked for).") = False,
):
    """Token rates per clip and per chunk, sizes and model identities (reads only header and index)."""
    from adaptok_cli.measure.manifest import inspect_files
    with user_errors():
        code = inspect_files(inputs, limits_for(max_pixels), where or [], tokenizer, plot, sort.value, as_json, as_csv,
                             quiet, chunks)
    raise typer.Exit(code)


@app.command("verify", short_help="Check containers without decoding frames.")
def verify_cmd(inputs: Containers, as_json: Json = False, quiet: retold(Quiet, "Print only failures.") = False,
               max_pixels: MaxPixels = None, jobs: Jobs = 1):
    """Check containers (structure, every chunk's checksum and contents) without decoding frames; with
    several files, a last line on stderr names the bad ones."""
    from adaptok_cli.measure.verify import verify_files
    with user_errors():
        code = verify_files(inputs, jobs, limits_for(max_pixels), as_json, quiet)
    raise typer.Exit(code)


@app.command("eval", short_help="Quality and rate of videos, in memory.")
def eval_cmd(
    inputs: Videos, threshold: Threshold = None, keep_ratio: KeepRatio = None, unit: Unit = "decoder",
    short_side: retold(ShortSide, "Shrink clips whose short side is over N to N (smaller clips are scored at their "
                       "own size; 0: native) [default: native size].") = None,
    tokenizer: Tokenizer = DEFAULT_TOKENIZER, chunk: Chunk = DEFAULT_CHUNK,
    no_lit: retold(NoLit, "Report hold-fill as the main figure.") = False,
    device: Device = "auto", dtype: Dtype = "auto", quiet: Quiet = False,
    as_json: retold(Json, "One JSON object per clip, then one with the mean.") = False,
):
    """Compress + decompress in memory; PSNR/SSIM against the decoded input at full rate, hold-fill and LIT."""
    from adaptok_cli.measure.evaluate import evaluate_files
    with user_errors():
        opts = CompressOptions(threshold=threshold, keep_ratio=keep_ratio, tokenizer=tokenizer, chunk=chunk,
                               short_side=short_side or None, device=device, unit=unit, dtype=dtype)  # 0: native
        code = evaluate_files(inputs, opts, not no_lit, quiet, as_json)
    raise typer.Exit(code)


@app.command("calibrate", short_help="Measure a tokeniser's unit of change on your clips.")
def calibrate_cmd(
    inputs: Videos, tokenizer: Tokenizer = DEFAULT_TOKENIZER,
    output: retold(Output, "Where to write the calibration [default: the calibration store, where compress finds "
                   "it: $ADAPTOK_CACHE/calibration or ~/.cache/adaptok/calibration].") = None,
    force: Force = False, short_side: ShrinkSide = 256, max_frames: MaxFrames = 64,
    device: Device = "auto", dtype: Dtype = "auto", quiet: Quiet = False, as_json: Json = False,
):
    """Measure each latent channel's spread and the decoder's sensitivity to it: the rule's unit of change.
    A tokeniser other than the built-in needs this once before compress (a few clips like yours)."""
    from adaptok_cli.training.user_lit import calibrate_files
    with user_errors():
        calibrate_files(inputs, tokenizer, output, force, short_side, max_frames, device, dtype, quiet, as_json)
    raise typer.Exit(0)


@app.command("train-lit", short_help="Train a LIT for a tokeniser on your clips.")
def train_lit_cmd(
    inputs: Videos, output: retold(Output, "The LIT weights file to write (.safetensors).", str),
    tokenizer: Tokenizer = DEFAULT_TOKENIZER, force: Force = False,
    steps: opt(int, "--steps", help="Training steps (a rerun of the same command resumes).") = 2000,
    val_clips: opt(int, "--val-clips", help="Clips held out to choose the step (one clip: its last quarter).") = 1,
    short_side: ShrinkSide = 256, max_frames: MaxFrames = 256,
    device: Device = "auto", dtype: Dtype = "auto", quiet: Quiet = False, as_json: Json = False,
):
    """Train a Latent Inpainting Transformer for a calibrated tokeniser (OUTPUT.run/ keeps the latents,
    checkpoints and log). Use it with compress/decompress --lit OUTPUT."""
    from adaptok_cli.training.user_lit import TrainLitOptions, train_lit_files
    with user_errors():
        opts = TrainLitOptions(steps=steps, val_clips=val_clips, short_side=short_side or None, max_frames=max_frames)
        train_lit_files(inputs, output, tokenizer, opts, force, device, dtype, quiet, as_json)
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
