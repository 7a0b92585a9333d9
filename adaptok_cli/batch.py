"""Many files at once: inputs from files, folders and globs, mirrored outputs, up-to-date skipping,
and a pool of worker processes. One failing file never stops a batch.

Every file is encoded with one torch thread (parallelism comes from --workers), so a container's bytes
do not depend on the worker count or the machine's core count.
"""
from __future__ import annotations

import glob
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable

from .errors import EXIT_INTERRUPTED, AdaptokError, ContainerError, InputError
from .outputs import is_temporary

THREADS_PER_FILE = 1


def expand_inputs(items: Iterable[str], want: Callable[[Path], bool]) -> list[tuple[Path, Path]]:
    """Files, folders (recursive) and globs -> [(file, path relative to what the user named)]."""
    found = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and want(f) and not any(is_temporary(part) for part in f.relative_to(p).parts):
                    found.append((f, f.relative_to(p)))
        elif not p.exists() and any(c in str(item) for c in "*?["):
            matches = sorted(glob.glob(str(item), recursive=True))
            if not matches:
                raise InputError(f"{item}: no files match")
            found += [(Path(m), Path(Path(m).name)) for m in matches if Path(m).is_file() and not is_temporary(m)]
        else:
            found.append((p, Path(p.name)))
    if not found:
        raise InputError("no input files found")
    return found


def is_folder_target(output: str, n_inputs: int) -> bool:
    """The one -o rule: a folder if it ends with '/', already is a folder, or there are several inputs."""
    return output.endswith(("/", os.sep)) or Path(output).is_dir() or n_inputs > 1


def output_paths(inputs, output: str | None, default_name: Callable[[str], str]) -> list[Path]:
    """One output per input: next to it by default, inside -o when it is a folder (the tree
    mirrored), else -o itself."""
    if output is None:
        return [f.parent / default_name(f.name) for f, _ in inputs]
    if not is_folder_target(str(output), len(inputs)):
        return [Path(output)]
    return [Path(output) / rel.parent / default_name(rel.name) for _, rel in inputs]


def settings_of(header: dict) -> dict:
    """The header fields that decide a container's content, for up-to-date checks."""
    keys = ("threshold", "keep_ratio", "keyframe_interval", "quant", "chunk", "level", "max_side", "short_side")
    return {"tokenizer": header["tokenizer"]["fingerprint"], "audio": bool(header.get("audio")),
            "lit": (header.get("lit") or {}).get("fingerprint"), **{k: header.get(k) for k in keys}}


def is_up_to_date(src: Path, dst: Path, want_settings: dict | None = None) -> bool:
    """dst exists, is newer than src, is a valid container (when it is one) made with the same settings."""
    try:
        if dst.stat().st_mtime < Path(src).stat().st_mtime:
            return False
    except OSError:
        return False
    if want_settings is None:
        return True
    from .container import AtokReader
    try:
        with AtokReader(dst) as r:
            return settings_of(r.header) == want_settings
    except (AdaptokError, ContainerError):
        return False


@dataclass
class Outcome:
    """What happened to one file of a batch."""
    src: Path
    dst: Path
    result: object = None      # a pipeline.Result
    error: AdaptokError | None = None
    skipped: bool = False


_IN_JOB = False


def one_torch_thread():
    """Jobs call this before their first torch work (late, so a refused file never loads torch)."""
    import torch
    torch.set_num_threads(THREADS_PER_FILE)


def _worker_init(parent: int):
    """A worker ignores Ctrl-C (the parent decides), stops on SIGTERM, and dies with its parent."""
    one_torch_thread()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _die_with_parent(parent)


def _die_with_parent(parent: int):
    """Ask Linux for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere, best effort."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:      # the parent died before the request took effect
        os._exit(EXIT_INTERRUPTED)


def _on_sigterm(signum, frame):
    if _IN_JOB:
        raise KeyboardInterrupt     # the job's own handlers remove its temporary output
    os._exit(EXIT_INTERRUPTED)


def _call(job, src, dst):
    global _IN_JOB
    _IN_JOB = True
    try:
        return job(src, dst, None), None
    except AdaptokError as e:
        return None, e
    except KeyboardInterrupt:
        os._exit(EXIT_INTERRUPTED)  # never go on to another queued file
    finally:
        _IN_JOB = False


def default_workers(n_files: int) -> int:
    """Half the cores (each file also uses a thread for video I/O), at least 1, at most one per file."""
    return max(1, min(n_files, (os.cpu_count() or 1) // 2))


def run(pairs: list[tuple[Path, Path]], job, workers: int = 1,
        skip: Callable[[Path, Path], bool] | None = None,
        progress=None, on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run job(src, dst, progress) -> Result for every pair; failures are collected, not raised.

    job must be picklable (a module-level function or functools.partial of one) when workers > 1.
    progress(kind, n, total=None, name=None) is told when a file starts ("file", name=src), about its
    frames in-process ("frames", n, total) and when it ends ("files", 1).
    """
    outcomes: list[Outcome] = []

    def done(o: Outcome):
        outcomes.append(o)
        if on_done:
            on_done(o)
        if progress:
            progress("files", 1)

    todo = []
    for src, dst in pairs:
        if skip is not None and skip(src, dst):
            done(Outcome(src, dst, skipped=True))
        else:
            todo.append((src, dst))
    if workers <= 1 or len(todo) <= 1:
        for src, dst in todo:
            try:
                if progress:
                    progress("file", name=src)
                tick = (lambda n, total=None: progress("frames", n, total)) if progress else None
                done(Outcome(src, dst, job(src, dst, tick)))
            except AdaptokError as e:
                done(Outcome(src, dst, error=e))
        return outcomes
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init,
                               initargs=(os.getpid(),))
    try:
        queue, futures = list(reversed(todo)), {}
        while queue or futures:
            while queue and len(futures) < workers:   # files start only as workers free up
                src, dst = queue.pop()
                futures[pool.submit(_call, job, src, dst)] = (src, dst)
                if progress:
                    progress("file", name=src)
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                src, dst = futures.pop(fut)
                res, e = fut.result()
                done(Outcome(src, dst, res, e))
    except BaseException:
        for p in list(getattr(pool, "_processes", {}).values()):
            try:
                p.terminate()      # SIGTERM: the worker aborts and removes its temporary file
            except Exception:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return outcomes
