"""Many files at once: inputs from files, folders and globs, mirrored outputs, up-to-date skipping,
and a pool of worker processes. One failing file never stops a batch, whatever it fails with (a bug
on one file is that file's internal error, exit 70 for it alone).

Every file is encoded with one torch thread (parallelism comes from --workers), so a container's bytes
do not depend on the worker count or the machine's core count.
"""
from __future__ import annotations

import contextlib
import glob
import os
import posixpath
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable

from adaptok_cli.defaults import VIDEO_EXTENSIONS
from adaptok_cli.errors import (EXIT_INTERRUPTED, AdaptokError, CannotCreateError, ContainerError, InputError, OutputExistsError,
                     InternalError, UsageError, internal_error)
from adaptok_cli.running.options import Outcome, settings_of
from adaptok_cli.running import remote
from adaptok_cli.running.outputs import STDOUT, is_stdout, is_temporary, plan
from adaptok_cli.running.remote import is_url

THREADS_PER_FILE = 1


def expand_inputs(items: Iterable[str], want: Callable[[Path], bool], urls: bool = False) -> list[tuple[Path | str, Path]]:
    """Files, folders (recursive), globs and (with urls) filesystem URLs -> [(file, path relative to
    what the user named)]; a file found by URL stays a URL (str)."""
    found = []
    for item in items:
        if is_stdout(item):
            raise UsageError("-: standard input is not read (a container keeps its index at its end, a video is "
                             "read twice: frames, then sound); give a file (./- for one named '-')")
        p = Path(item)
        if is_url(item) and not urls:
            raise UsageError(f"{item}: only compress reads URLs; fetch the file first")
        if is_url(item):
            remote.check_url(item)
            found += [(url, rel) for url, rel in remote.expand(item, want) if not any(map(is_temporary, rel.parts))]
        elif p.is_dir():
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
    if output.endswith(("/", os.sep)) or n_inputs > 1:
        return True
    return remote.is_dir(output) if is_url(output) else Path(output).is_dir()


def check_file_output(output: str, suffixes: tuple[str, ...] = (), writes: str = "", folders: bool = True):
    """An option naming one output file: an extension that disagrees with what the command writes is
    a usage error, and its folder must exist (adaptok makes folders only where the option names a
    folder, ending in /, as zstd does). folders: the option may name a folder instead."""
    hint = ", or end it with / for a folder" if folders else ""
    if suffixes and not output.lower().endswith(suffixes):
        raise UsageError(f"{output}: {writes}; name it NAME{suffixes[0]}{hint}")
    parent = Path(output).parent
    if not is_url(output) and not parent.is_dir():
        raise CannotCreateError(f"{output}: cannot be created: no folder {parent}"
                                + (" (folders are made only for a name that ends in /)" if folders else ""))


def output_paths(inputs, output: str | None, default_name: Callable[[str], str], suffixes: tuple[str, ...] = (),
                 writes: str = "") -> list[Path | str]:
    """One output per input: next to it by default, inside -o when it is a folder (the tree
    mirrored), else -o itself (checked by check_file_output), or standard output for `-o -` and
    one input. URLs give URLs."""
    if output is None:
        return [posixpath.join(posixpath.dirname(f), default_name(posixpath.basename(f))) if is_url(f) else
                f.parent / default_name(f.name) for f, _ in inputs]
    output = str(output)
    if is_stdout(output):
        if len(inputs) != 1:
            raise UsageError(f"-o - (standard output) takes one input, not {len(inputs)}")
        return [Path(STDOUT)]
    if not is_folder_target(output, len(inputs)):
        check_file_output(output, suffixes, writes)
        p = Path(output)
        return [output if is_url(output) else p if not is_stdout(p) else Path.cwd() / p]    # ./- is a file
    return [remote.join(output, rel.parent / default_name(rel.name)) if is_url(output) else
            Path(output) / rel.parent / default_name(rel.name) for _, rel in inputs]


def is_up_to_date(src, dst, want_settings: dict | None = None) -> bool:
    """dst exists, is newer than src, is a valid container (when it is one) made with the same settings.
    Either may be a URL (a URL container is fetched to read its header)."""
    return stale_reason(src, dst, want_settings) is None


def stale_reason(src, dst, want_settings: dict | None = None) -> str | None:
    """Why dst is not an up-to-date output of src (is_up_to_date), or None: the settings that differ
    are named, with the file's value and the one asked now."""
    if not remote.newer(dst, src):
        return "older than its input" if remote.exists(dst) else "missing"
    if want_settings is None:
        return None
    from adaptok_cli.format.container import AtokReader
    try:
        with remote.local_copy(dst) as local, AtokReader(local) as r:
            have = settings_of(r.header)
    except (AdaptokError, ContainerError) as e:
        return f"not a container adaptok reads ({e})"
    differ = [k for k in want_settings if have.get(k) != want_settings[k]]
    if not differ:
        return None
    return "made with other settings: " + ", ".join(f"{k} {have.get(k)} (asked: {want_settings[k]})" for k in differ)


def figures_of(atok, src, dst, bytes_in: int | None = None, bytes_out: int | None = None):
    """A Result for a file that was not redone, from the container `atok` (its header and index, the
    output of compress or the input of decompress); None when it cannot be read."""
    from adaptok_cli.format.container import AtokReader
    from adaptok_cli.running.options import Result
    try:
        with remote.local_copy(atok) as local, AtokReader(local) as r:
            h = r.header
            return Result(str(src), str(dst), frames=r.frames, width=h.width, height=h.height,
                          fps=float(h.fps), tokens_kept=r.tokens_kept, tokens_total=r.tokens_total,
                          bytes_in=r.size if bytes_in is None else bytes_in,
                          bytes_out=r.size if bytes_out is None else bytes_out, atok_bytes=r.size)
    except (AdaptokError, OSError):
        return None


_IN_JOB = False
_WORKER_SLOT: int | None = None    # this process's place in its pool (0, 1, ...); None outside a pool
_PROGRESS = None        # in a worker: the queue its frames go to, (src, n, total), read by the parent's run()


def one_torch_thread():
    """Jobs call this before their first torch work (late, so a refused file never loads torch)."""
    import torch
    torch.set_num_threads(THREADS_PER_FILE)


def _worker_init(parent: int, slots=None, progress=None):
    """A worker takes its place in the pool (slots: a shared counter), ignores Ctrl-C (the parent
    decides), stops on SIGTERM, and dies with its parent; progress: a queue for the frames it does."""
    global _WORKER_SLOT, _PROGRESS
    _PROGRESS = progress
    if slots is not None:
        _WORKER_SLOT = take_slot(slots)
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


def take_slot(slots) -> int:
    """The next free place from a shared counter (a multiprocessing Value)."""
    with slots.get_lock():
        slot = slots.value
        slots.value += 1
    return slot


def spread_device(device: str, slot: int | None, gpus: int) -> str:
    """The device of pool worker `slot` when `gpus` GPUs are visible: worker i on GPU i mod N for 'cuda'
    (and 'auto', which would pick a GPU); one GPU, a named 'cuda:N', the CPU, or no pool: as asked."""
    if slot is None or gpus < 2 or device not in ("cuda", "auto"):
        return device
    return f"cuda:{slot % gpus}"


def worker_device(device: str) -> str:
    """The device this process runs a job on: spread_device() with the GPUs torch sees."""
    if _WORKER_SLOT is None or device not in ("cuda", "auto"):
        return device
    import torch
    return spread_device(device, _WORKER_SLOT, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _on_sigterm(signum, frame):
    if _IN_JOB:
        raise KeyboardInterrupt     # the job's own handlers remove its temporary output
    os._exit(EXIT_INTERRUPTED)


def _call(job, src, dst):
    global _IN_JOB
    _IN_JOB = True
    tick = None if _PROGRESS is None else lambda n, total=None: _PROGRESS.put((str(src), n, total))
    try:
        return job(src, dst, tick), None
    except AdaptokError as e:
        return None, e
    except Exception as e:          # a bug on this file: reported for it, the batch goes on
        return None, internal_error(e, src)
    except KeyboardInterrupt:
        os._exit(EXIT_INTERRUPTED)  # never go on to another queued file
    finally:
        _IN_JOB = False


# What one worker process needs at most for frames up to 1920x1080 with the built-in models
# (docs/BENCHMARKS.md, memory against frame size: about 1.0 GB peak for decompress at 1080p).
WORKER_MB = 1000


def available_mb() -> int | None:
    """Memory the system can give without swapping (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def default_workers(n_files: int) -> int:
    """Half the cores (each file also uses a thread for video I/O), no more than the free memory holds
    (WORKER_MB each), at least 1, at most one per file."""
    by_memory = (available_mb() or 1 << 30) // WORKER_MB
    return max(1, min(n_files, (os.cpu_count() or 1) // 2, by_memory))


def _collector(outcomes: list[Outcome], on_done, progress) -> Callable[[Outcome], None]:
    """done(outcome): kept, reported to on_done, counted on the progress bar."""
    def done(o: Outcome):
        outcomes.append(o)
        if on_done:
            on_done(o)
        if progress:
            progress("files", 1, name=o.src)
    return done


def _not_up_to_date(pairs, skip, done) -> list[tuple[Path, Path]]:
    """The pairs to work on; the others are reported as skipped."""
    todo = []
    for src, dst in pairs:
        verdict = _skips(skip, src, dst) if skip is not None else False     # True, or the kept output's figures
        if verdict:
            done(Outcome(src, dst, skipped=True, existing=None if verdict is True else verdict))
        else:
            todo.append((src, dst))
    return todo


def _skips(skip, src, dst) -> bool:
    """skip(src, dst); a file it cannot tell about is worked on (its job then reports what is wrong),
    so one unreadable file never ends the batch here."""
    try:
        return skip(src, dst)
    except Exception:
        return False


def _run_here(todo, job, progress, done):
    """run()'s jobs one after another in this process."""
    for src, dst in todo:
        try:
            if progress:
                progress("file", name=src)
            tick = (lambda n, total=None: progress("frames", n, total)) if progress else None
            done(Outcome(src, dst, job(src, dst, tick)))
        except AdaptokError as e:
            done(Outcome(src, dst, error=e))
        except BrokenPipeError:  # our own output is gone: the command ends (141), not this file
            raise
        except Exception as e:  # a bug on this file: reported for it, the batch goes on
            done(Outcome(src, dst, error=internal_error(e, src)))


def run(pairs: list[tuple[Path, Path]], job, workers: int | None = 1,
        skip: Callable[[Path, Path], bool] | None = None,
        progress=None, on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run job(src, dst, progress) -> Result for every pair; failures are collected, not raised.

    job must be picklable (a module-level function or functools.partial of one) when workers > 1;
    workers=None: default_workers().
    progress(kind, n, total=None, name=None) is told when a file starts ("file", name=src), about its
    frames in-process ("frames", n, total) and when it ends ("files", 1).
    """
    plan(pairs)
    outcomes: list[Outcome] = []
    done = _collector(outcomes, on_done, progress)
    todo = _not_up_to_date(pairs, skip, done)
    workers = default_workers(len(todo)) if workers is None else workers
    if workers <= 1 or len(todo) <= 1:
        _run_here(todo, job, progress, done)
        return outcomes
    _run_in_pool(todo, job, workers, progress, done)
    return outcomes


def _run_in_pool(todo, job, workers: int, progress, done):
    """run()'s jobs in `workers` spawned processes, files started as workers free up. A worker that
    dies (a crash in native code, the OOM killer) takes the files then in flight with it: they are
    run again one at a time in a new pool, so the file that kills its worker alone is reported
    (exit 70) and every other file is still done."""
    ctx = get_context("spawn")
    # SimpleQueue: put() writes to the pipe before it returns (no feeder thread), so a file's frames are
    # all there when its result is; the parent reads them between results
    frames = ctx.SimpleQueue() if progress else None
    pool = _new_pool(ctx, workers, frames)
    try:
        queue, alone, futures = list(reversed(todo)), [], {}
        while queue or alone or futures:
            while (alone or queue) and len(futures) < (1 if alone else workers):
                src, dst = alone.pop() if alone else queue.pop()
                futures[pool.submit(_call, job, src, dst)] = (src, dst)
                if progress:
                    progress("file", name=src)
            finished, _ = wait(futures, timeout=None if frames is None else 0.2, return_when=FIRST_COMPLETED)
            while frames is not None and not frames.empty():
                name, n, total = frames.get()
                progress("frames", n, total, name=name)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in finished):
                lost = _after_a_dead_worker(futures, done)
                if len(lost) == 1:
                    done(Outcome(*lost[0], error=worker_died(lost[0][0])))
                else:
                    alone.extend(reversed(lost))
                pool.shutdown(wait=True)
                pool = _new_pool(ctx, workers, frames)
                continue
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


def _new_pool(ctx, workers: int, frames) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(os.getpid(), ctx.Value("i", 0), frames))


def _after_a_dead_worker(futures: dict, done) -> list[tuple[Path, Path]]:
    """The pool broke: the files that finished are reported, the others (in flight when a worker died)
    returned to be run again; futures is emptied."""
    lost = []
    for fut, pair in list(futures.items()):
        if fut.done() and fut.exception() is None:
            res, e = fut.result()
            done(Outcome(*pair, res, e))
        else:
            lost.append(pair)
    futures.clear()
    return lost


def worker_died(src) -> InternalError:
    """The error of a file whose worker process died while it alone was being worked on."""
    return InternalError(f"{src}: the worker process died on this file (a crash in native code, or killed: "
                         "out of memory?); the other files went on")


# --- what each command names its outputs, and runs per file ------------------------------------

def atok_name(name: str) -> str:
    return name + ".atok"


CODEC_EXTENSION = {"x264": ".mp4", "ffv1": ".mkv", "y4m": ".y4m", "png": ""}


def video_name(name: str, codec: str | None = None) -> str:
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


def compress_job(opts, force, src, dst, progress):
    """One file of a compress batch (module level so worker processes can run it). A URL input is
    fetched first and a URL output uploaded when it is complete (remote.py)."""
    from dataclasses import replace

    from adaptok_cli.running.batch import one_torch_thread, worker_device
    from adaptok_cli.running.pipeline import cached_tokenizer, compress
    one_torch_thread()
    opts = replace(opts, device=worker_device(opts.device))
    if not force and remote.exists(dst):        # not up to date (else it was skipped): say why
        reason = compress_stale_reason(opts, src, dst)
        if reason:
            raise OutputExistsError(f"{dst}: already exists, {reason} (use -f to overwrite)")
    with remote.published(dst, force) as local_dst, remote.local_copy(src) as local_src:
        try:
            res = compress(local_src, local_dst, opts, force=force, progress=progress,
                           loaded_tokenizer=cached_tokenizer(opts.tokenizer, opts.device, opts.dtype))
        except AdaptokError as e:       # name what the user named, not the temporary copies
            e.args = (str(e).replace(str(local_src), str(src)).replace(str(local_dst), str(dst)),)
            raise
    res.input, res.output = str(src), str(dst)
    return res


def compress_skip(opts, src, dst):
    """False, or (up to date) the kept output's figures, read from its header (True if unreadable)."""
    if not remote.exists(dst) or compress_stale_reason(opts, src, dst) is not None:
        return False
    return figures_of(dst, src, dst, None if is_url(src) else Path(src).stat().st_size) or True


def compress_stale_reason(opts, src, dst) -> str | None:
    """stale_reason() for the container compress(src) would write to dst with these options."""
    from adaptok_cli.running.pipeline import cached_tokenizer, expected_settings
    with remote.opened(src) as source:      # a URL source: only its header is read
        return stale_reason(src, dst, expected_settings(opts, cached_tokenizer(opts.tokenizer, opts.device,
                                                                                 opts.dtype), source))


def decompress_job(opts, force, src, dst, progress):
    """One file of a decompress batch (module level so worker processes can run it)."""
    from dataclasses import replace

    from adaptok_cli.format.container import AtokReader
    with AtokReader(src, partial=opts.partial, limits=opts.limits):
        pass    # a corrupt or hostile file is refused here, before torch and the models are loaded
    from adaptok_cli.running.batch import one_torch_thread, worker_device
    from adaptok_cli.running.pipeline import decompress
    one_torch_thread()
    return decompress(src, dst, replace(opts, device=worker_device(opts.device)), force=force, progress=progress)


def decompress_skip(opts, src, dst):
    """False, or (up to date) the kept output's figures, read from the container (True if unreadable)."""
    if not dst.exists():
        return False
    from adaptok_cli.running.pipeline import decoded_up_to_date
    if not decoded_up_to_date(src, dst, opts):
        return False
    return figures_of(src, src, dst, bytes_out=dst.stat().st_size if dst.is_file() else None) or True


# --- the same batch on a Ray cluster ---------------------------------------------------------------

class RayWorker:
    """A Ray actor running batch jobs; the models it loads stay cached in its process between files."""

    def call(self, job, src, dst):
        return src, dst, *_call(job, src, dst)

    def pid(self):
        return os.getpid()


def run_ray(pairs: list[tuple[Path, Path]], job, workers: int | None = None,
            skip: Callable[[Path, Path], bool] | None = None, progress=None,
            on_done: Callable[[Outcome], None] | None = None, address: str | None = None,
            gpus: float = 0.0) -> list[Outcome]:
    """run() on Ray: the same jobs, skips, outcomes and order of reports, on actors of a cluster
    (address) or, without one, a local Ray with `workers` CPUs. A worker that dies is restarted and
    its file retried by Ray; outputs are written atomically, so a retry never meets a half-written one."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        from adaptok_cli.errors import ModelUnavailableError
        raise ModelUnavailableError("--ray needs the extra: pip install 'adaptok[ray]'") from None
    plan(pairs)
    outcomes: list[Outcome] = []
    done = _collector(outcomes, on_done, progress)
    todo = _not_up_to_date(pairs, skip, done)
    if not todo:
        return outcomes
    started = not ray.is_initialized()
    from adaptok_cli.running.raywatch import watched       # a local Ray we start ends with this process, even on kill -9
    with watched() if started and address is None else contextlib.nullcontext():
        if started:
            ray.init(address=address, num_cpus=None if address else (workers or default_workers(len(todo))),
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=3, max_task_retries=3)(RayWorker)
            pool = ActorPool([actor.remote() for _ in range(min(n, len(todo)))])
            for src, dst, res, e in pool.map_unordered(lambda a, p: a.call.remote(job, *p), todo):
                done(Outcome(src, dst, res, e))
        finally:
            if started:
                ray.shutdown()
    return outcomes


# --- many files, from Python (the CLI's compress and decompress are these plus reports) ------------

@dataclass
class Batch:
    """A planned batch: how many files it reports on, and start(progress, on_done) -> [Outcome] to run it
    (progress may be None); printing.run_batch runs it with progress bars and reports."""
    n_files: int
    start: Callable



def gpus_per_worker(tokenizer: str) -> float:
    """The GPU share a Ray actor asks for when none is given: a TinyTok-architecture model (a built-in
    name or a .safetensors file, 8 MB of weights) a quarter, so four actors share a GPU; a VAE (a
    diffusers or Cosmos folder, hf:...), whose activations at 480p take gigabytes, a whole one."""
    return 1.0 if tokenizer.startswith("hf:") or Path(tokenizer).is_dir() else 0.25


def check_gpus_per_worker(gpus: float | None):
    """Ray takes a fraction of one GPU or a whole number of them."""
    if gpus is not None and not (0 < gpus <= 1 or gpus == int(gpus) and 1 <= gpus <= 64):
        raise UsageError("--ray-gpus-per-worker must be in (0, 1] or a whole number of GPUs")


def compress_pairs(pairs, output, opts, force: bool = False, workers: int | None = None, ray: bool = False,
                   ray_address: str | None = None, shard_size: int | None = None, progress=None,
                   on_done: Callable[[Outcome], None] | None = None, ray_gpus: float | None = None) -> list[Outcome]:
    """compress_many() on expand_inputs()'s pairs."""
    if output is not None and is_url(str(output)):
        remote.check_url(str(output), output=True)     # a store that keeps files and can be reached, up front
    job = partial(compress_job, opts, force)
    skip = None if force or is_stdout(output) else partial(compress_skip, opts)
    if is_stdout(output) and (ray or ray_address is not None):
        raise UsageError("-o - writes to this process's standard output; --ray runs elsewhere: give a folder")

    def run_all(todo, on_done=on_done):
        if ray or ray_address is not None:
            gpus = ray_gpus if ray_gpus is not None else (gpus_per_worker(opts.tokenizer) if opts.device.startswith("cuda")
                                                          else 0.0)
            return run_ray(todo, job, workers, skip, progress, on_done, ray_address, gpus=gpus)
        return run(todo, job, workers, skip, progress, on_done)

    if shard_size is not None:
        from adaptok_cli.format.shards import compress_to_shards
        check_shard_target(output, shard_size)
        outcomes: list[Outcome] = []
        done = _collector(outcomes, on_done, progress)
        made = compress_to_shards(pairs, str(output), shard_size, run_all,
                                  lambda src, member: done(Outcome(src, member, skipped=True)), on_done)
        return outcomes + made
    dsts = output_paths(pairs, output, atok_name, (".atok",), "compress writes an .atok container")
    return run_all([(src, dst) for (src, _), dst in zip(pairs, dsts)])


def check_shard_target(output, shard_size: int | None):
    """--shard-size needs a folder (or URL) to put the shards in, and at least one clip per shard."""
    if shard_size is not None and (output is None or is_stdout(output)):
        raise UsageError("--shard-size needs -o FOLDER for the shards")
    if shard_size is not None and shard_size < 1:
        raise UsageError("--shard-size must be at least 1")


def compress_batch(inputs, output=None, opts=None, force: bool = False, workers: int | None = None,
                   ray: bool = False, ray_address: str | None = None, shard_size: int | None = None,
                   ray_gpus: float | None = None, in_process: bool = True) -> Batch:
    """compress_many()'s batch, checked and planned, not yet run. in_process=False: URLs must name a store
    that outlives this process (the CLI's case)."""
    if workers is not None and workers < 1:
        raise UsageError("workers must be at least 1")
    check_shard_target(output, shard_size)
    check_gpus_per_worker(ray_gpus)
    inputs = [str(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not in_process:
        for url in [i for i in inputs if is_url(i)] + ([output] if output and is_url(str(output)) else []):
            remote.check_url(url, output=url is output, in_process=False)
    pairs = expand_inputs(inputs, want_video, urls=True)
    return Batch(len(pairs), partial(compress_pairs, pairs, output, opts, force, workers, ray, ray_address, shard_size,
                                     ray_gpus=ray_gpus))


def compress_many(inputs, output=None, options=None, force: bool = False, workers: int | None = None,
                  ray: bool = False, ray_address: str | None = None, shard_size: int | None = None,
                  on_done: Callable[[Outcome], None] | None = None, ray_gpus: float | None = None,
                  **option_values) -> list[Outcome]:
    """`adaptok compress INPUT... -o OUTPUT` from Python: files, folders, globs or filesystem URLs,
    compressed by `workers` local processes, or on Ray (ray=True: a local Ray; ray_address: a cluster),
    or into shards of shard_size clips. Options as for compress(). One Outcome per input file (result,
    error or skipped); a failing file never stops the others. ray_gpus: the GPU share each Ray actor
    asks for with device="cuda" (default gpus_per_worker()); local workers spread over the visible GPUs."""
    from adaptok_cli.running.options import options_of
    opts = options_of(options, option_values)
    batch = compress_batch(inputs, output, opts, force, workers, ray, ray_address, shard_size, ray_gpus)
    return batch.start(None, on_done)


@contextlib.contextmanager
def decompress_batch(inputs, output=None, opts=None, force: bool = False, workers: int | None = None):
    """Yields decompress_many()'s batch, checked and planned: shards' clips staged (in a temporary folder
    removed when the block ends), outputs named and their formats checked up front."""
    from adaptok_cli.running.shard_inputs import renamed, staged_clips
    from adaptok_cli.format.shards import want_container
    from adaptok_cli.running.video import output_kind
    if workers is not None and workers < 1:
        raise UsageError("workers must be at least 1")
    pairs = expand_inputs([str(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)], want_container)
    if output is not None and is_url(str(output)):
        raise UsageError(f"{output}: only compress writes URLs; decompress to a local path")
    with staged_clips(pairs) as clips:      # a shard: each of its clips, as if it were a folder of them
        ok = [c for c in clips if c.error is None]
        dsts = output_paths([(c.source, c.rel) for c in ok], output, partial(video_name, codec=opts.codec)) if ok else []
        for d in dsts:
            output_kind(d, opts.codec)      # an extension that disagrees with the codec is a usage error, up front
        skip = None if force or is_stdout(output) else partial(decompress_skip, opts)
        start = partial(run, [(c.staged, d) for c, d in zip(ok, dsts)], partial(decompress_job, opts, force), workers,
                        skip)
        yield Batch(len(clips), renamed(start, clips))


def decompress_many(inputs, output=None, options=None, force: bool = False, workers: int | None = None,
                    on_done: Callable[[Outcome], None] | None = None, **option_values) -> list[Outcome]:
    """`adaptok decompress FILE.atok... -o OUTPUT` from Python: files, shards (each clip), SHARD.tar:KEY,
    folders or globs, decoded by `workers` local processes. Options as for decompress() (a
    DecompressOptions or its keywords). One Outcome per clip; a failing one never stops the others."""
    from adaptok_cli.running.options import decompress_options_of
    opts = decompress_options_of(options, option_values)
    with decompress_batch(inputs, output, opts, force, workers) as batch:
        return batch.start(None, on_done)
