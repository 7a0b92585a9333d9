"""`adaptok verify`: every container of a cache checked without decoding frames, in parallel processes.

Torch-free (container.py and shards.py only), so workers start fast. Results come back in input order,
whatever order the workers finish in, so output and exit code do not depend on --jobs.
"""
from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Iterator

from adaptok_cli.format.container import DEFAULT_LIMITS, AtokReader, Limits
from adaptok_cli.errors import AdaptokError
from adaptok_cli.format.shards import each_container


def check_file(f, limits: Limits = DEFAULT_LIMITS) -> list[tuple[str, int | None, AdaptokError | None]]:
    """Structure, every chunk's checksum and contents, every audio record of the containers in f (an
    .atok, or each clip of a shard, every one checked even after a bad one) -> [(name, chunks, None)]
    for those that passed, [(name, None, error)] for those that did not (a shard that stops being a
    tar is its last entry, under the shard's name)."""
    parts = []
    try:
        for name, source, error in each_container(f, limits):
            if error is not None:
                parts.append((name, None, error))
                continue
            try:
                with AtokReader(source, limits=limits) as r:
                    for c in range(r.num_chunks):
                        r.check_chunk(c)
                    for c in range(r.num_audio_records):
                        r.read_audio(c)
                    r.probe_audio()
                    parts.append((name, r.num_chunks, None))
            except AdaptokError as e:
                parts.append((name, None, e))
    except AdaptokError as e:
        parts.append((str(f), None, e))
    return parts


def _worker_init(parent: int):
    """Ctrl-C is the parent's to handle; a worker dies with its parent."""
    from adaptok_cli.running.batch import _die_with_parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)


@contextmanager
def checked(files: list, jobs: int = 1, limits: Limits = DEFAULT_LIMITS) -> Iterator[Iterator[tuple]]:
    """Yields an iterator of (file, check_file's parts) per file, in the order of files; with jobs > 1 the
    files are checked by that many worker processes, which end with the block (also on Ctrl-C)."""
    if jobs <= 1 or len(files) <= 1:
        yield ((f, check_file(f, limits)) for f in files)
        return
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(files)), mp_context=get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    try:
        futures = [pool.submit(check_file, f, limits) for f in files]
        yield ((f, fut.result()) for f, fut in zip(files, futures))
    except BaseException:
        for p in list(getattr(pool, "_processes", {}).values()):
            try:
                p.terminate()
            except Exception:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True, cancel_futures=True)


def verify_files(inputs: list, jobs: int = 1, limits: Limits = DEFAULT_LIMITS, as_json: bool = False,
                 quiet: bool = False) -> int:
    """`adaptok verify`: each container of inputs (files, shards, folders, globs) checked and reported (a
    line or a JSON object each; several files: a last line on stderr naming the bad ones) -> exit code."""
    import json

    from adaptok_cli.running.batch import expand_inputs
    from adaptok_cli.cli.printing import exit_code, for_each, say
    from adaptok_cli.errors import UsageError
    from adaptok_cli.format.shards import want_container
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
    return code


def verify_summary(n_files: int, bad: list, containers: int, show: int = 20) -> str:
    """The last line of a verify over many files: how many passed, and which did not."""
    head = f"verify: {n_files - len(bad)} of {n_files} files ok ({containers} containers checked)"
    if not bad:
        return head
    more = f", and {len(bad) - show} more" if len(bad) > show else ""
    return f"{head}; {len(bad)} bad: {', '.join(bad[:show])}{more}"
