"""Writing outputs without ever losing a file: atomic replacement, locks, and stale temporaries.

Every output (an .atok file, a video, a folder of PNG frames) is written to a hidden temporary beside
its target, `.NAME.adaptok-PID-RANDOM.tmp`, on which the writing process holds an exclusive `flock`.
The lock says "someone is writing this": a second adaptok process that finds a locked temporary for
the same target refuses (exit 73) instead of racing it, and a temporary whose lock can be taken
belongs to a dead process (kill -9, power loss) and is removed. The kernel drops a dead process's
locks, so this needs no pid files and no clean-up pass.

On success a file is fsynced and moved into place: without --force by `link` (which fails if the
target appeared meanwhile, so two writers cannot both "win"), with --force by an atomic `rename`.
Targets that are not regular files (device nodes, FIFOs, folders that are not adaptok frame
folders) are never replaced.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import sys
from contextlib import contextmanager
from pathlib import Path

from adaptok_cli.errors import OutputExistsError, WriteError

TEMP_PATTERN = re.compile(r"^\..+\.adaptok-\d+-[0-9a-f]{8}\.tmp$")
FRAME_NAME = re.compile(r"^\d{6}\.png$")


def is_temporary(path) -> bool:
    """True for adaptok's own in-progress (or stale) outputs: folder scans never take them as inputs."""
    return bool(TEMP_PATTERN.match(Path(path).name))


def _temp_prefix(path: Path) -> str:
    return f".{path.name[:200]}.adaptok-"


def temporary_name(name: str) -> str:
    """A fresh name for a temporary of the file called `name`, one that is_temporary() recognises."""
    return f"{_temp_prefix(Path(name))}{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _try_lock(p: Path):
    """An fd holding an exclusive lock on p, or None if a live process holds it."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return -1          # vanished or unreadable: nothing to clean
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _remove_tree_or_file(p: Path):
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def live_writers(path: Path, mine: Path | None = None) -> list[Path]:
    """Temporaries of `path` that another live process holds; stale ones are removed on the way."""
    live = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return live
    prefix = _temp_prefix(path)
    for p in siblings:
        if p == mine or not p.name.startswith(prefix) or not is_temporary(p):
            continue
        fd = _try_lock(p)
        if fd is None:
            live.append(p)
        elif fd >= 0:
            _remove_tree_or_file(p)
            os.close(fd)
    return live


def check_target(path: Path, force: bool, folder: bool = False):
    """Refuse what must never be replaced: an existing output without force, a non-regular file,
    a folder (unless it is a frame folder adaptok wrote and folder=True)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputExistsError(f"{path}: cannot check the output ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        if not folder:
            raise OutputExistsError(f"{path}: is a folder")
        if any(not FRAME_NAME.match(f.name) for f in path.iterdir()):
            raise OutputExistsError(f"{path}: is a folder with other files than frames; adaptok will not replace it")
    elif not stat.S_ISREG(st.st_mode):
        raise OutputExistsError(f"{path}: is not a regular file (a device, FIFO or socket); adaptok will not replace it")
    if not force:
        raise OutputExistsError(f"{path}: already exists (use -f to overwrite)")


class AtomicOutput:
    """A locked temporary beside `path` (a file, or a folder with folder=True), moved into place by
    commit() and removed by abort(). `tmp` is where to write; for files `f` is open on it."""

    def __init__(self, path, force=False, folder=False):
        self.path, self.force, self.folder = Path(path), force, folder
        check_target(self.path, force, folder)
        self.tmp = self.path.parent / temporary_name(self.path.name)
        self.f, self._lock = None, None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if folder:
                self.tmp.mkdir()
                self._lock = os.open(self.tmp, os.O_RDONLY)
            else:
                self.f = open(self.tmp, "xb")
                self._lock = os.dup(self.f.fileno())
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self.abort()
            raise WriteError(f"{self.path}: cannot write ({e.strerror})") from None
        if live_writers(self.path, mine=self.tmp):
            self.abort()
            raise OutputExistsError(f"{self.path}: another adaptok process is writing it")

    def commit(self):
        """Move the finished output into place (fsynced first); then release the lock."""
        try:
            if self.f is not None:
                self.f.flush()
                os.fsync(self.f.fileno())
                self.f.close()
            check_target(self.path, self.force, self.folder)
            if self.folder:
                self._commit_folder()
            elif self.force:
                os.replace(self.tmp, self.path)
            else:
                os.link(self.tmp, self.path)       # fails if the target appeared meanwhile
                os.unlink(self.tmp)
        except FileExistsError:
            self.abort()
            raise OutputExistsError(f"{self.path}: already exists (use -f to overwrite)") from None
        except OutputExistsError:
            self.abort()
            raise
        except OSError as e:
            self.abort()
            raise WriteError(f"{self.path}: write failed ({e.strerror})") from None
        self._unlock()

    def _commit_folder(self):
        old = None
        if self.path.exists():              # a frame folder adaptok wrote, and force (check_target)
            old = self.path.parent / temporary_name(self.path.name)
            os.rename(self.path, old)
        try:
            os.rename(self.tmp, self.path)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError from None
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self):
        """Remove the temporary (whatever state it is in) and release the lock."""
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
        _remove_tree_or_file(self.tmp)
        self._unlock()

    def _unlock(self):
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def size(self) -> int:
        """Bytes of the committed output (a frame folder: all its files)."""
        if self.path.is_dir():
            return sum(f.stat().st_size for f in self.path.iterdir())
        return self.path.stat().st_size


STDOUT = "-"


def is_stdout(path) -> bool:
    """`-o -`: the output goes to standard output (as for zstd; ./- names a file called '-')."""
    return str(path) == STDOUT


class StreamOutput:
    """AtomicOutput's interface on standard output, for formats that stream (.atok, .y4m): `f` and
    `tmp` are this object, which counts what it writes. Nothing written can be taken back, so abort()
    only stops: the reader sees a cut-short stream and the exit code says it failed."""

    def __init__(self):
        self.path = self.tmp = self.f = self
        self._out, self.written = sys.stdout.buffer, 0

    def write(self, data) -> int:
        self._out.write(data)
        self.written += len(data)
        return len(data)

    def flush(self):
        self._out.flush()

    def commit(self):
        self._out.flush()

    def abort(self):
        pass

    def size(self) -> int:
        return self.written

    def __str__(self):
        return STDOUT


def open_output(path, force=False, folder=False):
    """Where one output is written: standard output for `-`, else a locked temporary (AtomicOutput)."""
    return StreamOutput() if is_stdout(path) else AtomicOutput(path, force, folder)


@contextmanager
def atomic_path(path):
    """AtomicOutput for writers that want a file name (safetensors, torch.save, np.save): yields the
    locked temporary's path; fsynced and moved into place (replacing the old file) when the block
    ends, removed if it raises. For files adaptok makes for itself: weights, checkpoints, caches."""
    out = AtomicOutput(path, force=True)
    out.f.close()
    out.f = None            # the writer reopens the temporary by name; the lock stays on it
    try:
        yield out.tmp
        with open(out.tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        out.abort()
        raise
    out.commit()


def plan(pairs: list[tuple[Path, Path]]) -> None:
    """Check a whole batch's outputs before any work starts: no two inputs may write one output, and
    no output may be an input of the same run (not even with --force)."""
    from adaptok_cli.errors import UsageError
    seen: dict[Path, Path] = {}
    inputs = {_key(src): src for src, _ in pairs}
    for src, dst in pairs:
        k = _key(dst)
        if k in inputs:
            raise OutputExistsError(f"{dst}: is an input of this run; adaptok never writes over its inputs")
        if k in seen:
            raise UsageError(f"{seen[k]} and {src} would both be written to {dst}: "
                             f"name the common folder instead, or run them with separate -o folders")
        seen[k] = src


def _key(p) -> Path | str:
    """A path as the file system sees it (symlinks and .. resolved), for comparing outputs and inputs;
    a file:// URL is the path it names, another URL is itself."""
    s = str(p)
    if s.startswith("file://"):
        s = s[len("file://"):]
    elif "://" in s:
        return s
    return Path(os.path.realpath(s))
