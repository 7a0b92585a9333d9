"""What the `adaptok` commands print: one-line messages, progress bars, tables, JSON lines and CSV.

Also the one exit-code rule and the one per-file loop every command uses (`for_each`, `exit_code`).
"""
from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import typer
from rich import box as rich_box
from rich.console import Console
from rich.filesize import decimal as describe_size
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from adaptok_cli.errors import EXIT_INTERNAL, EXIT_OK, EXIT_PIPE, EXIT_SOME_FAILED, AdaptokError, UsageError, internal_error



class _Console(Console):
    """rich's Console, but a closed pipe ends the command as everywhere else (141, main.py), where
    rich's own choice is a silent exit 1."""

    def on_broken_pipe(self):
        self.quiet = True
        raise BrokenPipeError


err = _Console(stderr=True, highlight=False)
out = _Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)


@dataclass(frozen=True)
class Column:
    """One figure of a compress/decompress report: key (a Result attribute, and the --json/--csv field),
    its header in the summary table, its cell text, its piece of the plain line ({}: the cell), and its
    value in the table's total row (from all the Results)."""
    key: str
    header: str
    cell: Callable
    plain: str
    total: Callable
    path: bool = False      # a path: left-aligned, long ones wrap instead of being cut


def _total_rate(rs) -> float:
    return sum(r.tokens_kept for r in rs) / max(1, sum(r.tokens_total for r in rs))


def _total_bpp(rs) -> float:
    return sum(r.atok_bytes for r in rs) * 8 / max(1, sum(r.frames * r.width * r.height for r in rs))


# The one list of report columns: a new one is added here (and, if new, as a Result attribute)
COLUMNS = (
    Column("input", "input", str, "{}", lambda rs: f"total ({len(rs)} files)", path=True),
    Column("output", "output", str, " -> {}:", lambda rs: "", path=True),
    Column("frames", "frames", str, " {} frames,", lambda rs: sum(r.frames for r in rs)),
    Column("token_rate", "token rate", "{:.3f}".format, " token rate {},", _total_rate),
    Column("bpp", "bpp", "{:.4f}".format, " bpp {},", _total_bpp),
    Column("bytes_in", "in", describe_size, " {} ->", lambda rs: sum(r.bytes_in for r in rs)),
    Column("bytes_out", "out", describe_size, " {},", lambda rs: sum(r.bytes_out for r in rs)),
    Column("seconds", "time", "{:.1f}s".format, " {}", lambda rs: sum(r.seconds for r in rs)),
)
CSV_FIELDS = ["status", *(c.key for c in COLUMNS), "error"]


def exit_code(errors: list, n_files: int) -> int:
    """The one rule: 0 if all went well; one file's own code if it was alone; else 1 (some failed)."""
    if not errors:
        return EXIT_OK
    return errors[0].exit_code if n_files == 1 else EXIT_SOME_FAILED


def for_each(files: Iterable, work: Callable, on_error: Callable | None = None, parts: Callable | None = None) -> int:
    """Run work(f) for every file; a failing file is reported on one line and the rest go on -> exit code.

    With parts(f) -> (name, item, error) for each part of a file (a shard's clips, shards.each_container),
    work(name, item) runs for every part, and each part counts as a file: a bad one is reported and the
    next is still checked. A bug on one file is reported as that file's internal error (70)."""
    failed, count = [], 0

    def attempt(name, fn, *args):
        nonlocal count
        count += 1
        try:
            fn(*args)
        except AdaptokError as e:
            failure = e
        except BrokenPipeError:     # our own output is gone: the command ends (141), not this file
            raise
        except Exception as e:      # a bug: that file's failure, not the batch's end
            failure = internal_error(e, name)
        else:
            return
        say(str(failure))
        failed.append(failure)
        if on_error:
            on_error(name, failure)

    for f in files:
        if parts is None:
            attempt(f, work, f)
            continue
        found = iter(parts(f))
        while True:
            try:
                part = next(found, None)
            except Exception as e:      # the file itself stops being readable: it fails, as one more part
                attempt(f, _raise, e)
                break
            if part is None:
                break
            name, item, error = part
            attempt(name, *((_raise, error) if error is not None else (work, name, item)))
    return exit_code(failed, count)


def _raise(e: Exception):
    raise e


class CsvRows:
    """--csv: a header row, then one row per outcome, through csv.writer (quoting done right)."""

    def __init__(self):
        self.w = csv.writer(sys.stdout, lineterminator="\n")
        self.w.writerow(CSV_FIELDS)
        sys.stdout.flush()

    def write(self, d: dict):
        self.w.writerow(["" if d.get(k) is None else f"{d[k]:.6g}" if isinstance(d[k], float) else d[k]
                         for k in CSV_FIELDS])
        sys.stdout.flush()


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
        fail(str(internal_error(e)), EXIT_INTERNAL)


class Reporter:
    """Progress bars on a terminal; nothing but results when piped or quiet."""

    def __init__(self, quiet: bool, as_json: bool, verbose: bool = False):
        self.quiet, self.as_json, self.verbose = quiet, as_json, verbose
        self.show_progress = not quiet and err.is_terminal
        self.seen = set()

    @contextmanager
    def progress(self, label: str, n_files: int = 1, unit: str = "frames"):
        """Yields tick(kind, n, total=None, name=None), told of ("file", name=...) when a file starts,
        ("frames", n, total, name=...) as frames are done (name: which file, when several run at once;
        else the latest) and ("files", 1, name=...) when a file ends. One file: a bar of frames done /
        total; several: a bar of files that moves with the frames of those in progress (with -j, each
        worker's), which are named beside it with their frames."""
        if not self.show_progress:
            yield lambda kind, n=1, total=None, name=None: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                      TimeRemainingColumn(), TextColumn("{task.fields[detail]}"), console=err, transient=True) as bar:
            task = bar.add_task(label, total=None if n_files == 1 else n_files, count="", detail="")
            files, last = [0], [None]
            running: dict = {}          # files in progress (in parallel with -j): key -> [label, frames, total]

            def tick(kind, n=1, total=None, name=None):
                key = str(name) if name is not None else last[0]     # frames without a name: the latest file
                if kind == "file":
                    running[key], last[0] = [short_name(name, 40 if n_files == 1 else 30), 0, None], key
                elif kind == "frames":
                    r = running.setdefault(key, ["", 0, None])
                    r[1] += n
                    r[2] = total if total is not None else r[2]
                elif kind == "files":
                    files[0] += n
                    if n_files > 1:
                        running.pop(key, None)
                if n_files == 1:
                    name_, frames, tot = running.get(key) or ("", 0, None)
                    bar.update(task, completed=frames, total=tot, count=f"{frames}/{tot or '?'} {unit}", detail=name_,
                               refresh=True)
                    return
                now = list(running.values())
                detail = ", ".join(f"{lbl} {f}/{t or '?'}" for lbl, f, t in now[:3]) + (" …" if len(now) > 3 else "")
                bar.update(task, completed=files[0] + sum(min(1.0, f / t) for _, f, t in now if t),
                           count=f"{files[0]}/{n_files} files", detail=f"{detail} {unit}" if now else "", refresh=True)
            yield tick

    @contextmanager
    def stages(self):
        """Yields update(label, done, total, unit, note=""): a bar of absolute counts with an ETA for a
        long single job (calibrate, train-lit); a new label starts a new bar (its own speed and ETA).
        unit "Mpx" shows pixel counts in millions."""
        if not self.show_progress:
            yield lambda *a, **k: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                      TimeRemainingColumn(), TextColumn("{task.fields[detail]}"), console=err, transient=True) as bar:
            tasks = {}

            def update(label, done, total, unit, note=""):
                if label not in tasks:
                    for t in tasks.values():
                        bar.update(t, visible=False)
                    tasks[label] = bar.add_task(label, total=total, count="", detail="")
                count = (f"{done / 1e6:.1f}/{total / 1e6:.1f} Mpx" if unit == "Mpx" and total
                         else f"{done}/{total or '?'} {unit}")
                bar.update(tasks[label], completed=done, total=total, count=count,
                           detail=note, refresh=True)
            yield update

    def note_once(self, msg: str):
        if not self.quiet and msg not in self.seen:
            self.seen.add(msg)
            say(msg)


def plural(n: int, word: str) -> str:
    """'1 clip', '3 clips'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def short_name(path, width: int = 40) -> str:
    """The end of a long path, which is the part that tells files apart."""
    s = str(path)
    return s if len(s) <= width else "…" + s[-(width - 1):]


def outcome_dict(o) -> dict:
    if o.error is not None:
        return {"status": "error", "input": str(o.src), "output": str(o.dst), "error": str(o.error),
                "exit_code": o.error.exit_code}
    if o.skipped:           # with the kept output's figures, read from a container's header
        figures = o.existing.to_dict() if o.existing is not None else {}
        return {"status": "skipped", "input": str(o.src), "output": str(o.dst), "reason": "up to date",
                **{k: v for k, v in figures.items() if k not in ("input", "output", "seconds", "timing", "notes")}}
    return {"status": "ok", **o.result.to_dict()}


def summary_table(outcomes, label, to_stderr: bool = False):
    """The batch's summary: a table on a terminal, else one line per file (on stderr when stdout
    carries the output itself, `-o -`)."""
    done = [o.result for o in outcomes if o.result is not None]
    skipped = sum(o.skipped for o in outcomes)
    failed = sum(o.error is not None for o in outcomes)
    tail = []
    if skipped:
        tail.append(f"all {skipped} up to date (-f redoes them)" if skipped == len(outcomes)
                    else f"{skipped} up to date (skipped; -f redoes them)")
    if failed:
        tail.append(f"{failed} failed")
    if out.is_terminal and len(outcomes) > 1 and done and not to_stderr:
        t = Table(title=f"{label}ed")
        for c in COLUMNS:
            t.add_column(c.header, justify="left" if c.path else "right", overflow="fold" if c.path else "ellipsis")
        for r in done:
            t.add_row(*(c.cell(getattr(r, c.key)) for c in COLUMNS))
        if len(done) > 1:
            t.add_row(*(c.cell(c.total(done)) for c in COLUMNS))
        out.print(t)
    else:
        for r in done:
            print("".join(c.plain.format(c.cell(getattr(r, c.key))) for c in COLUMNS),
                  file=sys.stderr if to_stderr else sys.stdout)
    if tail and (len(outcomes) > 1 or skipped):
        say(", ".join(tail))


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


def print_inspect(i: dict, chunks: bool, source=None):
    """One container's report; source: what to open for the heatmap (a shard member's Section), else i["file"]."""
    tok = i["tokenizer"]
    lit = i["lit"]["fingerprint"] if i["lit"] else "none (hold-fill)"
    mode = f"threshold {i['threshold']}" if i["threshold"] is not None else f"keep ratio {i['keep_ratio']}"
    mode += f" ({i['unit']} unit)"
    out.print(f"{i['file']}: {i['width']}x{i['height']}, {i['frames']} frames at {i['fps']:.3f} fps "
              f"({i['duration']:.2f} s)", markup=False)
    out.print(f"  token rate {i['token_rate']:.4f} ({i['tokens_kept']} of {i['tokens_total']} latent positions), "
              f"{i['tokens_per_second']:.0f} tokens/s", markup=False)
    out.print(f"  {describe_size(i['bytes'])}, {i['bpp']:.4f} bits/pixel, {i['compression_ratio']:.0f}x smaller than raw RGB",
              markup=False)
    out.print(f"  {mode}, {i['quant']}, tokeniser {tok['name']} ({tok['fingerprint']}), LIT {lit}", markup=False)
    if i.get("logvar"):
        out.print(f"  posterior log-variance: stored ({i['logvar']}), so a trainer can sample latents", markup=False)
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
        from adaptok_cli.format.container import AtokReader
        from adaptok_cli.measure.pictures import terminal_heatmap
        with AtokReader(source or i["file"]) as r:
            rows = terminal_heatmap(r)
        out.print("  how often each position was kept (blank: never, █: always):", markup=False)
        for row in rows:
            out.print("  " + row, markup=False)


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
        from adaptok_cli.models.matching import LIT_FROM_THRESHOLD
        thr = results[0]["threshold"]
        say(results[0].get("note") or (f"below threshold {LIT_FROM_THRESHOLD} decompress holds instead of running LIT: PSNR is hold-fill"
                                       if thr is not None and thr < LIT_FROM_THRESHOLD else "PSNR is hold-fill"))


def run_batch(batch, reporter: Reporter, label: str, as_csv: bool, to_stdout: bool = False):
    """Run a batch.Batch (compress_batch, decompress_batch) with progress, streaming --json/--csv, and the
    summary (on stderr when the output goes to stdout, to_stdout); -> exit code."""
    if to_stdout and (reporter.as_json or as_csv):
        raise UsageError("-o - writes the output to standard output: --json and --csv cannot share it")
    rows = CsvRows() if as_csv else None

    def on_done(o):
        if o.skipped and not reporter.quiet:
            say(f"{o.dst}: skipped (up to date)")
        if o.error is not None:
            say(str(o.error))
        for n in (o.result.notes if o.result else []):
            reporter.note_once(n)
        if reporter.verbose and o.result:
            say(f"{o.src}: " + ", ".join(f"{k} {v:.2f}s" for k, v in o.result.timing.items()))
        if reporter.as_json:
            print(json.dumps(outcome_dict(o)), flush=True)
        if rows:
            rows.write(outcome_dict(o))

    with reporter.progress(label, batch.n_files) as progress:
        outcomes = batch.start(progress, on_done)
    if not reporter.quiet and not reporter.as_json and not as_csv:
        summary_table(outcomes, label, to_stdout)
    return exit_code([o.error for o in outcomes if o.error is not None], batch.n_files)


def write_plot(f, png: Path, quiet: bool = False, name=None):
    """f: a path, or a shard member's container.Section (then name says which clip it is)."""
    from adaptok_cli.format.container import AtokReader
    from adaptok_cli.measure.pictures import plot
    png.parent.mkdir(parents=True, exist_ok=True)
    with AtokReader(f) as r:
        plot(r, png)
    if not quiet:
        say(f"{name or f}: wrote {png}")
