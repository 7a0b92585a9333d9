"""The `adaptok` command: a thin layer over the Python API (pipeline, report, evaluate)."""
from __future__ import annotations

import glob
import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, AdaptokError, InputError, UsageError
from .pipeline import DEFAULT_CHUNK, DEFAULT_THRESHOLD, CompressOptions, compress, decompress
from .report import describe_size, inspect
from .tokenizer import DEFAULT_TOKENIZER
from .video import VIDEO_EXTENSIONS

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Adaptive video tokenisation: drop latent positions that do not change, inpaint them back.")
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


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
        fail("interrupted", EXIT_INTERRUPTED)
    except (typer.Exit, SystemExit):
        raise
    except Exception as e:  # a bug, not a user error: still one line, and the detail on request
        if os.environ.get("ADAPTOK_DEBUG"):
            raise
        fail(f"internal error: {type(e).__name__}: {e} (set ADAPTOK_DEBUG=1 for the traceback)", EXIT_INTERNAL)


def expand_inputs(items: List[str], want) -> list[tuple[Path, Path]]:
    """Files, folders (recursive) and globs -> [(file, path relative to what the user named)]."""
    found = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and want(f):
                    found.append((f, f.relative_to(p)))
        elif not p.exists() and any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise InputError(f"{item}: no files match")
            found += [(Path(m), Path(Path(m).name)) for m in matches if Path(m).is_file()]
        else:
            found.append((p, Path(p.name)))
    if not found:
        raise InputError("no input files found")
    return found


def output_paths(inputs, output: Optional[Path], default_name) -> list[Path]:
    """One output per input: next to it by default, -o FILE for one input, -o DIR mirrors the tree."""
    if output is None:
        return [f.parent / default_name(f.name) for f, _ in inputs]
    as_dir = len(inputs) > 1 or output.is_dir() or str(output).endswith("/")
    if not as_dir:
        return [output]
    return [output / rel.parent / default_name(rel.name) for _, rel in inputs]


def atok_name(name: str) -> str:
    return name + ".atok"


def video_name(name: str) -> str:
    stem = name[:-5] if name.endswith(".atok") else name
    return stem if Path(stem).suffix.lower() in (".mp4", ".mkv", ".y4m", ".mov") else Path(stem).stem + ".mp4"


def want_video(f: Path) -> bool:
    return f.suffix.lower() in VIDEO_EXTENSIONS


def want_atok(f: Path) -> bool:
    return f.suffix == ".atok"


class Reporter:
    """Progress bars on a terminal; nothing but results when piped or quiet."""

    def __init__(self, quiet: bool, as_json: bool):
        self.quiet, self.as_json = quiet, as_json
        self.show_progress = not quiet and err.is_terminal

    @contextmanager
    def progress(self, label: str, total: Optional[int]):
        if not self.show_progress:
            yield lambda n: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} frames"),
                      TimeRemainingColumn(), console=err, transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)

    def note(self, msg: str):
        if not self.quiet:
            say(msg)


def run_batch(pairs, work, reporter: Reporter, label: str, summarise) -> int:
    """Run `work(src, dst, progress)` per file; one failure never stops the batch."""
    results, failures, notes_seen = [], [], set()
    last_error = None
    for src, dst in pairs:
        try:
            with reporter.progress(f"{label} {src.name}", None) as progress:
                res = work(src, dst, progress)
            for n in res.notes:
                if n not in notes_seen:
                    reporter.note(n)
                    notes_seen.add(n)
            results.append(res)
            if reporter.as_json:
                print(json.dumps({"status": "ok", **res.to_dict()}), flush=True)
        except AdaptokError as e:
            last_error = e
            failures.append((src, e))
            say(str(e))
            if reporter.as_json:
                print(json.dumps({"status": "error", "input": str(src), "error": str(e), "exit_code": e.exit_code}),
                      flush=True)
    if not reporter.quiet and not reporter.as_json and results:
        summarise(results)
    if not failures:
        return EXIT_OK
    if len(pairs) == 1:
        return last_error.exit_code
    return EXIT_SOME_FAILED


def summary_table(results, title):
    if out.is_terminal:
        t = Table(title=title)
        for c in ("input", "output", "frames", "token rate", "bpp", "in", "out", "time"):
            t.add_column(c, justify="right" if c not in ("input", "output") else "left")
        for r in results:
            t.add_row(r.input, r.output, str(r.frames), f"{r.token_rate:.3f}", f"{r.bpp:.4f}",
                      describe_size(r.bytes_in), describe_size(r.bytes_out), f"{r.seconds:.1f}s")
        out.print(t)
    else:
        for r in results:
            print(f"{r.input} -> {r.output}: {r.frames} frames, token rate {r.token_rate:.3f}, "
                  f"bpp {r.bpp:.4f}, {describe_size(r.bytes_in)} -> {describe_size(r.bytes_out)}, {r.seconds:.1f}s")


# ---------------------------------------------------------------------------------------------
# commands

@app.command("compress")
def compress_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Videos, folders (recursive) or globs."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder."),
    force: bool = typer.Option(False, "-f", "--force", help="Overwrite existing outputs."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t",
                                              help=f"Keep positions whose change exceeds this, in units of the tokeniser's per-channel scale [default: {DEFAULT_THRESHOLD}]."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", "-r", help="Instead of a threshold: keep this fraction of every latent frame."),
    tokenizer: str = typer.Option(DEFAULT_TOKENIZER, "--tokenizer", help="Built-in name, a .safetensors file, or a Cosmos-Tokenizer folder."),
    chunk: int = typer.Option(DEFAULT_CHUNK, "--chunk", help="Latent frames per chunk record."),
    keyframe_interval: int = typer.Option(0, "--keyframe-interval", help="Keep every N-th latent frame whole (0: only the first)."),
    level: int = typer.Option(10, "--level", "-l", help="zstd level, 1-22."),
    quant: str = typer.Option("int8", "--quant", help="int8 (per-channel scales) or fp16."),
    max_side: Optional[int] = typer.Option(None, "--max-side", help="Downscale so the longest side is at most N."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    keep: bool = typer.Option(True, "-k", "--keep", help="Keep inputs (always; accepted for gzip/zstd habits)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print nothing but errors."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Print timings."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
):
    """Encode videos into .atok containers (INPUT -> INPUT.atok)."""
    with user_errors():
        opts = CompressOptions(threshold=threshold, keep_ratio=keep_ratio, tokenizer=tokenizer, chunk=chunk,
                               keyframe_interval=keyframe_interval, level=level, quant=quant, max_side=max_side,
                               device=device).check()
        pairs = expand_inputs(inputs, want_video)
        dsts = output_paths(pairs, output, atok_name)
        tok_cache = {}

        def work(src, dst, progress):
            from .tokenizer import load_tokenizer, pick_device
            if "tok" not in tok_cache:
                tok_cache["tok"] = load_tokenizer(opts.tokenizer, pick_device(opts.device))
            res = compress(src, dst, opts, force=force, progress=progress, tokenizer=tok_cache["tok"])
            if verbose:
                reporter.note(f"{src}: " + ", ".join(f"{k} {v:.2f}s" for k, v in res.timing.items()))
            return res

        reporter = Reporter(quiet, as_json)
        code = run_batch([(s, d) for (s, _), d in zip(pairs, dsts)], work, reporter, "compress",
                         lambda rs: summary_table(rs, "compressed"))
    raise typer.Exit(code)


@app.command("decompress")
def decompress_cmd(
    inputs: List[str] = typer.Argument(..., metavar="FILE.atok...", help=".atok files, folders or globs."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output video (.mp4, .mkv, .y4m), PNG folder, or folder for many."),
    force: bool = typer.Option(False, "-f", "--force", help="Overwrite existing outputs."),
    codec: Optional[str] = typer.Option(None, "--codec", help="x264, ffv1 or png (default: from the extension)."),
    crf: int = typer.Option(18, "--crf", help="x264 quality (lower is better)."),
    no_lit: bool = typer.Option(False, "--no-lit", help="Hold-fill dropped positions instead of running LIT."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Path of the tokeniser, if it is not built in."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Print timings."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
):
    """Rebuild videos from .atok containers (size, frame count and fps restored)."""
    with user_errors():
        pairs = expand_inputs(inputs, want_atok)
        dsts = output_paths(pairs, output, video_name)
        reporter = Reporter(quiet, as_json)

        def work(src, dst, progress):
            res = decompress(src, dst, tokenizer=tokenizer, use_lit=not no_lit, codec=codec, crf=crf, force=force,
                             device=device, progress=progress)
            if verbose:
                reporter.note(f"{src}: " + ", ".join(f"{k} {v:.2f}s" for k, v in res.timing.items()))
            return res

        code = run_batch([(s, d) for (s, _), d in zip(pairs, dsts)], work, reporter, "decompress",
                         lambda rs: summary_table(rs, "decompressed"))
    raise typer.Exit(code)


@app.command("inspect")
def inspect_cmd(
    inputs: List[str] = typer.Argument(..., metavar="FILE.atok...", help=".atok files, folders or globs."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file."),
    chunks: bool = typer.Option(True, "--chunks/--no-chunks", help="Show the per-chunk table."),
):
    """Token rates per clip and per chunk, sizes and model identities (reads only header and index)."""
    with user_errors():
        files = [f for f, _ in expand_inputs(inputs, want_atok)]
        failed = None
        for f in files:
            try:
                info = inspect(f)
            except AdaptokError as e:
                say(str(e))
                failed = e
                continue
            if as_json:
                print(json.dumps(info), flush=True)
            else:
                print_inspect(info, chunks)
        if failed:
            raise typer.Exit(failed.exit_code if len(files) == 1 else EXIT_SOME_FAILED)


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
    if chunks:
        t = Table(box=None, pad_edge=False)
        for c in ("chunk", "frames", "latent", "kept", "total", "rate", "bytes"):
            t.add_column(c, justify="right")
        for c in i["chunks"]:
            t.add_row(str(c["index"]), f"{c['first_frame']}+{c['frames']}", str(c["latent_frames"]),
                      str(c["tokens_kept"]), str(c["tokens_total"]), f"{c['token_rate']:.3f}", str(c["bytes"]))
        out.print(t)


@app.command("eval")
def eval_cmd(
    inputs: List[str] = typer.Argument(..., metavar="VIDEO...", help="Videos, folders or globs."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t"),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", "-r"),
    short_side: Optional[int] = typer.Option(256, "--short-side", help="Resize so the short side is N (0: native)."),
    tokenizer: str = typer.Option(DEFAULT_TOKENIZER, "--tokenizer"),
    chunk: int = typer.Option(DEFAULT_CHUNK, "--chunk"),
    no_lit: bool = typer.Option(False, "--no-lit", help="Report hold-fill as the main figure."),
    device: str = typer.Option("auto", "--device"),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per clip, then one with the mean."),
):
    """Compress + decompress in memory; PSNR/SSIM against the decoded input at full rate, hold-fill and LIT."""
    from .evaluate import evaluate, mean_of
    from .tokenizer import load_tokenizer, pick_device
    with user_errors():
        opts = CompressOptions(threshold=threshold, keep_ratio=keep_ratio, tokenizer=tokenizer, chunk=chunk,
                               short_side=short_side or None, device=device).check()
        tok = load_tokenizer(opts.tokenizer, pick_device(device))
        files = [f for f, _ in expand_inputs(inputs, want_video)]
        reporter = Reporter(quiet, as_json)
        results, failed = [], False
        for f in files:
            try:
                with reporter.progress(f"eval {f.name}", None) as progress:
                    r = evaluate(f, opts, use_lit=not no_lit, tokenizer=tok, progress=progress)
            except AdaptokError as e:
                say(str(e))
                failed = True
                continue
            results.append(r)
            if as_json:
                print(json.dumps(r), flush=True)
        mean = mean_of(results)
        if as_json:
            print(json.dumps({"mean": mean, "clips": len(results)}))
        elif not quiet and results:
            print_eval(results, mean)
        if failed:
            raise typer.Exit(EXIT_SOME_FAILED)


def print_eval(results, mean):
    t = Table()
    cols = [("clip", "file"), ("rate", "token_rate"), ("bpp", "bpp"), ("PSNR", "psnr"), ("SSIM", "ssim"),
            ("PSNR full", "psnr_full_rate"), ("PSNR hold", "psnr_hold_fill"), ("enc fps", "fps_compress"),
            ("dec fps", "fps_decompress")]
    for name, _ in cols:
        t.add_column(name, justify="left" if name == "clip" else "right")
    fmt = lambda k, v: Path(v).name if k == "file" else (f"{v:.4f}" if k in ("token_rate", "bpp", "ssim") else f"{v:.2f}")
    for r in results:
        t.add_row(*[fmt(k, r[k]) for _, k in cols])
    t.add_row("mean", *[fmt(k, mean[k]) for _, k in cols[1:]])
    out.print(t)
    if not results[0]["lit"]:
        say("no trained LIT for this tokeniser yet: PSNR is hold-fill")


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main():
    signal.signal(signal.SIGTERM, _sigterm)
    app(prog_name="adaptok")


if __name__ == "__main__":
    main()
