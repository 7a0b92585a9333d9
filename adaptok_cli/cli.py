"""The `adaptok` command: a thin layer over the Python API (pipeline, report, evaluate)."""
from __future__ import annotations

import json
import os
import statistics
import sys
from contextlib import contextmanager
from enum import Enum
from functools import partial
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich import box as rich_box
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import (EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PIPE, EXIT_SOME_FAILED, EXIT_USAGE, AdaptokError,
                     UsageError)
from .outputs import plan
from .batch import expand_inputs, output_paths
from .defaults import DEFAULT_CHUNK, DEFAULT_THRESHOLD, DEFAULT_TOKENIZER, is_device_name
from .report import describe_size, inspect
from .video import VIDEO_EXTENSIONS, output_kind

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Adaptive video tokenisation: drop latent positions that do not change, inpaint them back.")
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)


def version_callback(value: bool):
    if value:
        print(f"adaptok {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=version_callback, is_eager=True,
                                       help="Print the version and exit.")):
    pass


# ---------------------------------------------------------------------------------------------
# helpers

def say(msg: str):
    """One unwrapped line on stderr (scripts grep these)."""
    print(f"adaptok: {msg}", file=sys.stderr, flush=True)


def quiet_stdout():
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail on a closed pipe."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def fail(msg: str, code: int):
    say(msg)
    raise typer.Exit(code)


@contextmanager
def user_errors():
    """AdaptokError -> one line on stderr and its exit code; Ctrl-C/SIGTERM -> 130."""
    try:
        yield
    except AdaptokError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        raise           # main() says "interrupted" once, for this and for Ctrl-C anywhere else
    except BrokenPipeError:
        quiet_stdout()
        raise typer.Exit(EXIT_PIPE)
    except (typer.Exit, SystemExit):
        raise
    except Exception as e:  # a bug, not a user error: still one line, and the detail on request
        if os.environ.get("ADAPTOK_DEBUG"):
            raise
        fail(f"internal error: {type(e).__name__}: {e} (set ADAPTOK_DEBUG=1 for the traceback)", EXIT_INTERNAL)


class Codec(str, Enum):
    """Output formats of decompress (choices show in --help and shell completion)."""
    x264 = "x264"
    ffv1 = "ffv1"
    y4m = "y4m"
    png = "png"


class SortKey(str, Enum):
    name = "name"
    rate = "rate"
    bpp = "bpp"
    bytes = "bytes"
    frames = "frames"


def atok_name(name: str) -> str:
    return name + ".atok"


CODEC_EXTENSION = {"x264": ".mp4", "ffv1": ".mkv", "y4m": ".y4m", "png": ""}


def video_name(name: str, codec: Optional[str] = None) -> str:
    """clip.mp4.atok -> clip.decoded.mp4 (never the source video's own name); clip.atok -> clip.decoded.mp4;
    with --codec the codec's extension (png: a folder clip.decoded/)."""
    stem = Path(name[:-5] if name.endswith(".atok") else name)
    ext = stem.suffix.lower() if stem.suffix.lower() in (".mp4", ".mkv", ".y4m", ".mov") else ".mp4"
    base = stem.stem if stem.suffix.lower() in VIDEO_EXTENSIONS else stem.name
    return f"{base}.decoded{CODEC_EXTENSION[codec] if codec else ext}"


def want_video(f: Path) -> bool:
    return f.suffix.lower() in VIDEO_EXTENSIONS


def want_atok(f: Path) -> bool:
    return f.suffix == ".atok"


class Reporter:
    """Progress bars on a terminal; nothing but results when piped or quiet."""

    def __init__(self, quiet: bool, as_json: bool, verbose: bool = False):
        self.quiet, self.as_json, self.verbose = quiet, as_json, verbose
        self.show_progress = not quiet and err.is_terminal
        self.seen = set()

    @contextmanager
    def progress(self, label: str, n_files: int = 1):
        """Yields tick(kind, n, total=None, name=None), told of ("file", name=...) when a file starts,
        ("frames", n, total) as frames are done and ("files", 1) when a file ends. One file: a bar of
        frames done / total; several: a bar of files, with the current file and its frames beside it."""
        if not self.show_progress:
            yield lambda kind, n=1, total=None, name=None: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                      TimeRemainingColumn(), TextColumn("{task.fields[detail]}"), console=err, transient=True) as bar:
            task = bar.add_task(label, total=None if n_files == 1 else n_files, count="", detail="")
            state = {"files": 0, "frames": 0, "total": None, "name": ""}

            def tick(kind, n=1, total=None, name=None):
                if kind == "file":
                    state.update(frames=0, total=None, name=short_name(name))
                elif kind == "frames":
                    state["frames"] += n
                    state["total"] = total if total is not None else state["total"]
                elif kind == "files":
                    state["files"] += n
                frames = f"{state['frames']}/{state['total'] or '?'} frames"
                if n_files == 1:
                    bar.update(task, completed=state["frames"], total=state["total"], count=frames, detail=state["name"],
                               refresh=True)
                else:
                    bar.update(task, completed=state["files"], count=f"{state['files']}/{n_files} files",
                               detail=f"{state['name']} {frames}" if state["name"] else "", refresh=True)
            yield tick

    def note_once(self, msg: str):
        if not self.quiet and msg not in self.seen:
            self.seen.add(msg)
            say(msg)


def short_name(path, width: int = 40) -> str:
    """The end of a long path, which is the part that tells files apart."""
    s = str(path)
    return s if len(s) <= width else "…" + s[-(width - 1):]


def run_batch(pairs, job, reporter: Reporter, label: str, workers: Optional[int], force: bool, skip, as_csv: bool):
    """Run a batch through batch.run with progress, streaming --json/--csv, and the summary; -> exit code."""
    from .batch import default_workers, run
    plan(pairs)
    workers = default_workers(len(pairs)) if workers is None else workers
    if as_csv:
        print(",".join(CSV_FIELDS), flush=True)

    def on_done(o):
        if o.skipped and not reporter.quiet:
            say(f"{o.dst}: skipped (up to date)")
        if o.error is not None:
            say(str(o.error))
        else:
            for n in (o.result.notes if o.result else []):
                reporter.note_once(n)
            if reporter.verbose and o.result:
                say(f"{o.src}: " + ", ".join(f"{k} {v:.2f}s" for k, v in o.result.timing.items()))
        if reporter.as_json:
            print(json.dumps(outcome_dict(o)), flush=True)
        if as_csv:
            print(",".join(csv_cell(outcome_dict(o).get(k)) for k in CSV_FIELDS), flush=True)

    with reporter.progress(label, len(pairs)) as progress:
        outcomes = run(pairs, job, workers, None if force else skip, progress, on_done)
    if not reporter.quiet and not reporter.as_json and not as_csv:
        summary_table(outcomes, label)
    failed = [o for o in outcomes if o.error is not None]
    if not failed:
        return EXIT_OK
    return failed[0].error.exit_code if len(pairs) == 1 else EXIT_SOME_FAILED


CSV_FIELDS = ["status", "input", "output", "frames", "token_rate", "bpp", "bytes_in", "bytes_out", "seconds", "error"]


def csv_cell(v) -> str:
    if v is None:
        return ""
    v = f"{v:.6g}" if isinstance(v, float) else str(v)
    return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n') else v


def outcome_dict(o) -> dict:
    if o.error is not None:
        return {"status": "error", "input": str(o.src), "output": str(o.dst), "error": str(o.error),
                "exit_code": o.error.exit_code}
    if o.skipped:
        return {"status": "skipped", "input": str(o.src), "output": str(o.dst), "reason": "up to date"}
    return {"status": "ok", **o.result.to_dict()}


def summary_table(outcomes, label):
    done = [o.result for o in outcomes if o.result is not None]
    skipped = sum(o.skipped for o in outcomes)
    failed = sum(o.error is not None for o in outcomes)
    tail = []
    if skipped:
        tail.append(f"all {skipped} up to date (-f redoes them)" if skipped == len(outcomes)
                    else f"{skipped} up to date (skipped; -f redoes them)")
    if failed:
        tail.append(f"{failed} failed")
    if out.is_terminal and len(outcomes) > 1 and done:
        t = Table(title=f"{label}ed")
        for c in ("input", "output", "frames", "token rate", "bpp", "in", "out", "time"):
            # long paths wrap instead of being cut, so rows stay distinguishable at 80 columns
            t.add_column(c, justify="right" if c not in ("input", "output") else "left",
                         overflow="fold" if c in ("input", "output") else "ellipsis")
        for r in done:
            t.add_row(r.input, r.output, str(r.frames), f"{r.token_rate:.3f}", f"{r.bpp:.4f}",
                      describe_size(r.bytes_in), describe_size(r.bytes_out), f"{r.seconds:.1f}s")
        if len(done) > 1:
            kept, total = sum(r.tokens_kept for r in done), sum(r.tokens_total for r in done)
            px = sum(r.frames * r.width * r.height for r in done)
            t.add_row(f"total ({len(done)} files)", "", str(sum(r.frames for r in done)), f"{kept / max(1, total):.3f}",
                      f"{sum(r.atok_bytes for r in done) * 8 / max(1, px):.4f}",
                      describe_size(sum(r.bytes_in for r in done)), describe_size(sum(r.bytes_out for r in done)),
                      f"{sum(r.seconds for r in done):.1f}s")
        out.print(t)
    else:
        for r in done:
            print(f"{r.input} -> {r.output}: {r.frames} frames, token rate {r.token_rate:.3f}, "
                  f"bpp {r.bpp:.4f}, {describe_size(r.bytes_in)} -> {describe_size(r.bytes_out)}, {r.seconds:.1f}s")
    if tail and (len(outcomes) > 1 or skipped):
        say(", ".join(tail))


def _compress_job(opts, force, src, dst, progress):
    """One file of a compress batch (module level so worker processes can run it)."""
    from .batch import one_torch_thread
    from .pipeline import cached_tokenizer, compress
    one_torch_thread()
    return compress(src, dst, opts, force=force, progress=progress,
                    loaded_tokenizer=cached_tokenizer(opts.tokenizer, opts.device))


def _compress_skip(opts, src, dst):
    if not dst.exists():
        return False
    from .batch import is_up_to_date
    from .pipeline import cached_tokenizer, expected_settings
    return is_up_to_date(src, dst, expected_settings(opts, cached_tokenizer(opts.tokenizer, opts.device), src))


def _decompress_job(kw, force, src, dst, progress):
    from .container import AtokReader
    with AtokReader(src, partial=kw["partial"], limits=kw["limits"]):
        pass    # a corrupt or hostile file is refused here, before torch and the models are loaded
    from .batch import one_torch_thread
    from .pipeline import decompress
    one_torch_thread()
    return decompress(src, dst, force=force, progress=progress, **kw)


def _decompress_skip(kw, src, dst):
    if not dst.exists():
        return False
    from .pipeline import decoded_up_to_date
    return decoded_up_to_date(src, dst, **kw)


MAX_PIXELS_OPTION = typer.Option(None, "--max-pixels", metavar="N",
                                 help="Resource budget: refuse containers with frames over N pixels "
                                      "[default: 4096x4096]; raise it only for files you trust.")


def limits_for(max_pixels: Optional[int]):
    from .container import DEFAULT_LIMITS, Limits
    if max_pixels is None:
        return DEFAULT_LIMITS
    if max_pixels < 1:
        raise UsageError("--max-pixels must be at least 1")
    return Limits.for_pixels(max_pixels)


OUTPUT_HELP = ("Output: a folder if it ends with '/', already is one, or there are several inputs "
               "(the input tree is mirrored inside); otherwise the one output file.")


def check_common(workers: Optional[int], device: str, as_json: bool, as_csv: bool):
    """Options every batch command shares, checked before any work (bad values are usage errors, 2)."""
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if not is_device_name(device):
        raise UsageError(f"unknown device {device!r}: use auto, cpu or cuda")
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")


# ---------------------------------------------------------------------------------------------
# commands

@app.command("compress", short_help="Encode videos into .atok containers.")
def compress_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUT", help="Videos, folders (recursive) or globs."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help=OUTPUT_HELP),
    force: bool = typer.Option(False, "-f", "--force", help="Overwrite existing outputs."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t",
                                              help=f"Keep positions whose change exceeds this, in units of the tokeniser's per-channel scale [default: {DEFAULT_THRESHOLD}]."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", "-r", help="Instead of a threshold: keep this fraction of each chunk's latent positions (the largest changes)."),
    tokenizer: str = typer.Option(DEFAULT_TOKENIZER, "--tokenizer", help="Built-in name, a .safetensors file, or a Cosmos-Tokenizer folder."),
    chunk: int = typer.Option(DEFAULT_CHUNK, "--chunk", help="Latent frames per chunk record."),
    keyframe_interval: int = typer.Option(0, "--keyframe-interval", help="Keep every N-th latent frame whole (0: only the first)."),
    level: int = typer.Option(10, "--level", "-l", help="zstd level, 1-22."),
    quant: str = typer.Option("int8", "--quant", help="int8 (per-channel scales) or fp16."),
    max_side: Optional[int] = typer.Option(None, "--max-side", help="Downscale so the longest side is at most N (16 or more)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    drop_audio: bool = typer.Option(False, "--drop-audio", help="Leave the sound out (by default the first audio stream is kept, copied as it is)."),
    keep: bool = typer.Option(False, "-k", "--keep", hidden=True, help="Accepted for gzip/zstd habits: inputs are always kept."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print nothing but errors."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Print timings."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Files processed in parallel (default: half the cores)."),
    as_csv: bool = typer.Option(False, "--csv", help="One CSV row per file on stdout (after a header row)."),
):
    """Encode videos into .atok containers (INPUT -> INPUT.atok)."""
    from .pipeline import CompressOptions
    with user_errors():
        opts = CompressOptions(threshold=threshold, keep_ratio=keep_ratio, tokenizer=tokenizer, chunk=chunk,
                               keyframe_interval=keyframe_interval, level=level, quant=quant, max_side=max_side,
                               device=device, drop_audio=drop_audio).check()
        check_common(workers, device, as_json, as_csv)
        pairs = expand_inputs(inputs, want_video)
        dsts = output_paths(pairs, output, atok_name)
        code = run_batch([(s, d) for (s, _), d in zip(pairs, dsts)], partial(_compress_job, opts, force),
                         Reporter(quiet, as_json, verbose), "compress", workers, force, partial(_compress_skip, opts),
                         as_csv)
    raise typer.Exit(code)


@app.command("decompress", short_help="Rebuild videos from .atok containers.")
def decompress_cmd(
    inputs: List[str] = typer.Argument(..., metavar="FILE.atok", help=".atok files, folders or globs."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help=OUTPUT_HELP),
    force: bool = typer.Option(False, "-f", "--force", help="Overwrite existing outputs."),
    codec: Optional[Codec] = typer.Option(None, "--codec", help="Output format (default: from the extension; .mp4 x264, .mkv ffv1, .y4m, png: a folder of frames)."),
    crf: int = typer.Option(18, "--crf", help="x264 quality, 0-51 (lower is better)."),
    no_lit: bool = typer.Option(False, "--no-lit", help="Hold-fill dropped positions instead of running LIT."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Path of the tokeniser, if it is not built in."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Print timings."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    overlay: bool = typer.Option(False, "--overlay", help="Tint the positions that were dropped (to see the mask)."),
    recover: bool = typer.Option(False, "--partial", help="Recover the complete chunks of a truncated file."),
    max_pixels: Optional[int] = MAX_PIXELS_OPTION,
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Files processed in parallel (default: half the cores)."),
    as_csv: bool = typer.Option(False, "--csv", help="One CSV row per file on stdout (after a header row)."),
):
    """Rebuild videos from .atok containers (size, frame count and fps restored)."""
    with user_errors():
        check_common(workers, device, as_json, as_csv)
        if not 0 <= crf <= 51:
            raise UsageError("--crf must be between 0 and 51")
        codec = codec.value if codec else None
        pairs = expand_inputs(inputs, want_atok)
        dsts = output_paths(pairs, output, partial(video_name, codec=codec))
        for d in dsts:
            output_kind(d, codec)       # an extension that disagrees with --codec is a usage error, up front
        kw = dict(tokenizer=tokenizer, use_lit=not no_lit, codec=codec, crf=crf, device=device, overlay=overlay,
                  partial=recover, limits=limits_for(max_pixels))
        code = run_batch([(s, d) for (s, _), d in zip(pairs, dsts)], partial(_decompress_job, kw, force),
                         Reporter(quiet, as_json, verbose), "decompress", workers, force, partial(_decompress_skip, kw),
                         as_csv)
    raise typer.Exit(code)


SORT_KEYS = {"name": "file", "rate": "token_rate", "bpp": "bpp", "bytes": "bytes", "frames": "frames"}


@app.command("inspect", short_help="Token rates, sizes and models of containers.")
def inspect_cmd(
    inputs: List[str] = typer.Argument(..., metavar="FILE.atok", help=".atok files, folders or globs."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file."),
    chunks: Optional[bool] = typer.Option(None, "--chunks/--no-chunks", help="Per-chunk tables (default: for one file)."),
    sort: SortKey = typer.Option(SortKey.name, "--sort", help="Order of files (bytes: file size)."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write a PNG (timeline + heatmap); for several files a folder (one PNG each)."),
    max_pixels: Optional[int] = MAX_PIXELS_OPTION,
):
    """Token rates per clip and per chunk, sizes and model identities (reads only header and index)."""
    with user_errors():
        files = [f for f, _ in expand_inputs(inputs, want_atok)]
        plot_dir = plot is not None and (plot.endswith(("/", os.sep)) or Path(plot).is_dir()
                                         or len(files) > 1 and not Path(plot).suffix)
        if plot is not None and not plot_dir and (len(files) > 1 or Path(plot).suffix.lower() != ".png"):
            raise UsageError(f"--plot {plot}: give a .png file for one container, or a folder (ending in /) "
                             f"for one PNG each")
        infos, failed = [], None
        for f in files:
            try:
                infos.append(inspect(f, limits_for(max_pixels)))
                if plot is not None:
                    from .atokfile import AtokFile
                    from .pictures import plot as make_plot
                    png = Path(plot) / (f.name + ".png") if plot_dir else Path(plot)
                    png.parent.mkdir(parents=True, exist_ok=True)
                    with AtokFile(f) as af:
                        make_plot(af, png)
                    say(f"{f}: wrote {png}")
            except AdaptokError as e:
                say(str(e))
                failed = e
        key = SORT_KEYS[sort.value]
        infos.sort(key=lambda i: (i[key], i["file"]))
        for info in infos:
            if as_json:
                print(json.dumps(info), flush=True)
        if not as_json:
            if len(infos) == 1:
                print_inspect(infos[0], chunks is not False)
            elif infos:
                print_inspect_many(infos, bool(chunks))
        if failed:
            raise typer.Exit(failed.exit_code if len(files) == 1 else EXIT_SOME_FAILED)


def print_inspect_many(infos: list, chunks: bool):
    t = Table(box=None if not out.is_terminal else rich_box.SIMPLE, pad_edge=False)
    for c in ("file", "WxH", "frames", "token rate", "tokens/s", "bpp", "bytes"):
        t.add_column(c, justify="left" if c == "file" else "right", overflow="fold")
    for i in infos:
        t.add_row(i["file"], f"{i['width']}x{i['height']}", str(i["frames"]), f"{i['token_rate']:.4f}",
                  f"{i['tokens_per_second']:.0f}", f"{i['bpp']:.4f}", str(i["bytes"]))
    out.print(t)
    rates = sorted(i["token_rate"] for i in infos)
    out.print(f"token rate over {len(rates)} clips: min {rates[0]:.4f}, median {statistics.median(rates):.4f}, "
              f"max {rates[-1]:.4f}", markup=False)
    kept, total = sum(i["tokens_kept"] for i in infos), sum(i["tokens_total"] for i in infos)
    seconds = sum(i["duration"] for i in infos)
    out.print(f"total: {kept} of {total} latent positions kept ({kept / total:.4f}), {describe_size(sum(i['bytes'] for i in infos))}, "
              f"{sum(i['frames'] for i in infos)} frames, {seconds:.1f} s of video ({kept / max(seconds, 1e-9):.0f} tokens/s)",
              markup=False)
    if chunks:
        for i in infos:
            print_inspect(i, True)


def print_inspect(i: dict, chunks: bool):
    tok = i["tokenizer"]
    lit = i["lit"]["fingerprint"] if i["lit"] else "none (hold-fill)"
    mode = f"threshold {i['threshold']}" if i["threshold"] is not None else f"keep ratio {i['keep_ratio']}"
    out.print(f"{i['file']}: {i['width']}x{i['height']}, {i['frames']} frames at {i['fps']:.3f} fps "
              f"({i['duration']:.2f} s)", markup=False)
    out.print(f"  token rate {i['token_rate']:.4f} ({i['tokens_kept']} of {i['tokens_total']} latent positions), "
              f"{i['tokens_per_second']:.0f} tokens/s", markup=False)
    out.print(f"  {describe_size(i['bytes'])}, {i['bpp']:.4f} bits/pixel, {i['compression_ratio']:.0f}x smaller than raw RGB",
              markup=False)
    out.print(f"  {mode}, {i['quant']}, tokeniser {tok['name']} ({tok['fingerprint']}), LIT {lit}", markup=False)
    a = i.get("audio")
    out.print(f"  audio: {a['codec']}, {a['sample_rate']} Hz {a['layout']}, {describe_size(a['bytes'])} (copied as is)"
              if a else "  audio: none", markup=False)
    if chunks:
        t = Table(box=None, pad_edge=False)
        for c in ("chunk", "frames", "latent", "kept", "total", "rate", "bytes"):
            t.add_column(c, justify="right")
        for c in i["chunks"]:
            t.add_row(str(c["index"]), f"{c['first_frame']}+{c['frames']}", str(c["latent_frames"]),
                      str(c["tokens_kept"]), str(c["tokens_total"]), f"{c['token_rate']:.3f}", str(c["bytes"]))
        out.print(t)
    if out.is_terminal:
        from .atokfile import AtokFile
        from .pictures import keep_statistics, terminal_heatmap
        with AtokFile(i["file"]) as f:
            _, heat = keep_statistics(f)
        out.print("  how often each position was kept (blank: never, █: always):", markup=False)
        for row in terminal_heatmap(heat):
            out.print("  " + row, markup=False)


@app.command("verify", short_help="Check containers without decoding frames.")
def verify_cmd(
    inputs: List[str] = typer.Argument(..., metavar="FILE.atok", help=".atok files, folders or globs."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only failures."),
    max_pixels: Optional[int] = MAX_PIXELS_OPTION,
):
    """Check containers (structure, every chunk's checksum and contents) without decoding frames."""
    from .container import AtokReader
    with user_errors():
        limits = limits_for(max_pixels)
        files = [f for f, _ in expand_inputs(inputs, want_atok)]
        failed = []
        for f in files:
            try:
                with AtokReader(f, limits=limits) as r:
                    for c in range(len(r.chunks)):
                        r.check_chunk(c)
                    for c in range(len(r.audio)):
                        r.read_audio(c)
                    n = len(r.chunks)
                if as_json:
                    print(json.dumps({"status": "ok", "file": str(f), "chunks": n}), flush=True)
                elif not quiet:
                    print(f"{f}: ok ({n} chunks)", flush=True)
            except AdaptokError as e:
                failed.append(e)
                if as_json:
                    print(json.dumps({"status": "error", "file": str(f), "error": str(e), "exit_code": e.exit_code}),
                          flush=True)
                say(str(e))
        if failed:
            raise typer.Exit(failed[0].exit_code if len(files) == 1 else EXIT_SOME_FAILED)


@app.command("eval", short_help="Quality and rate of videos, in memory.")
def eval_cmd(
    inputs: List[str] = typer.Argument(..., metavar="VIDEO", help="Videos, folders or globs."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help=f"As for compress [default: {DEFAULT_THRESHOLD}]."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", "-r", help="As for compress."),
    short_side: Optional[int] = typer.Option(None, "--short-side", help="Shrink clips whose short side is over N to N (smaller clips are scored at their own size; 0: native) [default: native size]."),
    tokenizer: str = typer.Option(DEFAULT_TOKENIZER, "--tokenizer", help="Built-in name, a .safetensors file, or a Cosmos-Tokenizer folder."),
    chunk: int = typer.Option(DEFAULT_CHUNK, "--chunk", help="Latent frames per chunk."),
    no_lit: bool = typer.Option(False, "--no-lit", help="Report hold-fill as the main figure."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print nothing but errors."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per clip, then one with the mean."),
):
    """Compress + decompress in memory; PSNR/SSIM against the decoded input at full rate, hold-fill and LIT."""
    from .evaluate import evaluate, mean_of
    from .pipeline import CompressOptions
    from .tokenizer import load_tokenizer, pick_device
    with user_errors():
        check_common(None, device, as_json, False)
        opts = CompressOptions(threshold=threshold, keep_ratio=keep_ratio, tokenizer=tokenizer, chunk=chunk,
                               short_side=short_side or None, device=device).check()   # 0: native, as before
        tok = load_tokenizer(opts.tokenizer, pick_device(device))
        files = [f for f, _ in expand_inputs(inputs, want_video)]
        reporter = Reporter(quiet, as_json)
        results, failed = [], None
        for f in files:
            try:
                with reporter.progress(f"eval {f.name}") as tick:
                    r = evaluate(f, opts, use_lit=not no_lit, tokenizer=tok, progress=lambda n, total=None: tick("frames", n, total))
            except AdaptokError as e:
                say(str(e))
                failed = e
                continue
            results.append(r)
            if as_json:
                print(json.dumps(r), flush=True)
        mean = mean_of(results)
        if as_json:
            print(json.dumps({"mean": mean, "clips": len(results)}))
        elif not quiet and results:
            print_eval(results, mean, no_lit)
        if failed:
            raise typer.Exit(failed.exit_code if len(files) == 1 else EXIT_SOME_FAILED)


@app.command("completion", short_help="Print the shell completion script.")
def completion_cmd(shell: str = typer.Argument(..., metavar="SHELL", help="bash, zsh or fish.")):
    """Print the shell completion script: eval "$(adaptok completion bash)" in ~/.bashrc."""
    from typer.completion import get_completion_script
    if shell not in ("bash", "zsh", "fish"):
        fail("completion: SHELL must be bash, zsh or fish", EXIT_USAGE)
    print(get_completion_script(prog_name="adaptok", complete_var="_ADAPTOK_COMPLETE", shell=shell))


def print_eval(results, mean, no_lit: bool):
    t = Table()
    for r in results:
        r["size"] = f"{r['width']}x{r['height']}"
    mean["size"] = ""
    cols = [("clip", "file"), ("size", "size"), ("rate", "token_rate"), ("bpp", "bpp"), ("PSNR", "psnr"), ("SSIM", "ssim"),
            ("PSNR full", "psnr_full_rate"), ("PSNR hold", "psnr_hold_fill"), ("enc fps", "fps_compress"),
            ("dec fps", "fps_decompress")]
    for name, _ in cols:
        t.add_column(name, justify="left" if name == "clip" else "right")
    fmt = lambda k, v: Path(v).name if k == "file" else v if k == "size" else (f"{v:.4f}" if k in ("token_rate", "bpp", "ssim") else f"{v:.2f}")
    for r in results:
        t.add_row(*[fmt(k, r[k]) for _, k in cols])
    t.add_row("mean", *[fmt(k, mean[k]) for _, k in cols[1:]])
    out.print(t)
    if no_lit:
        say("LIT off (--no-lit): PSNR is hold-fill")
    elif not results[0]["lit"]:
        from .pipeline import LIT_FROM_THRESHOLD
        thr = results[0]["threshold"]
        say(results[0].get("note") or (f"below threshold {LIT_FROM_THRESHOLD} decompress holds instead of running LIT: PSNR is hold-fill"
                                       if thr is not None and thr < LIT_FROM_THRESHOLD else "PSNR is hold-fill"))


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
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt     # adaptok_cli.main says so and exits 130
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
