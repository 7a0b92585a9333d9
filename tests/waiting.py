"""Waiting for events, never for time: processes stopped at a named stage (adaptok_cli/running/stages.py) and
processes that end. HANG_GUARD bounds a wait only so that a hung run fails instead of blocking the
suite; no test measures speed with it."""
import errno
import os
import select
from pathlib import Path

HANG_GUARD = 600      # seconds


class Pause:
    """Stop the first `count` processes that reach `stage` (pass `env` to them) and learn their pids."""

    def __init__(self, folder: Path, stage: str, count: int = 1):
        folder.mkdir(parents=True)
        self.folder = folder
        for name in ("reached", "go"):
            os.mkfifo(folder / name)
        self._read = os.open(folder / "reached", os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(folder / "reached", os.O_WRONLY)    # a writer always open: no end-of-file to spin on
        self.env = {"ADAPTOK_PAUSE_AT": f"{stage}:{count}:{folder}"}
        self._lines = b""

    def wait(self, n: int = 1, unless=()) -> list[int]:
        """The pids of the next n processes to stop there. unless: processes (Popen) or file descriptors
        (a pipe) whose end means none will: then the test fails at once."""
        made = [ended(u) for u in unless if hasattr(u, "pid")]
        watch = [self._read, *made, *(u for u in unless if not hasattr(u, "pid"))]
        try:
            while self._lines.count(b"\n") < n:
                ready, _, _ = select.select(watch, [], [], HANG_GUARD)
                assert ready, f"nothing reached the stage in {HANG_GUARD} s: a hang"
                if self._read not in ready:
                    raise AssertionError("the run ended before reaching the stage")
                self._lines += os.read(self._read, 4096)
        finally:
            for fd in made:
                os.close(fd)
        *pids, self._lines = self._lines.split(b"\n", n)
        return [int(p) for p in pids]

    def release(self):
        """Let the stopped processes go on (any a signal has ended are gone already)."""
        try:
            fd = os.open(self.folder / "go", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:       # nobody waits any more
                return
            raise
        os.write(fd, b"go")
        os.close(fd)

    def close(self):
        os.close(self._read)
        os.close(self._keep)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        self.close()


def ended(p) -> int:
    """A file descriptor that becomes readable when the process p (a Popen or a pid) ends."""
    return os.pidfd_open(getattr(p, "pid", p))


def wait_gone(pids):
    """Return once every one of these processes (children or not) has ended."""
    fds = []
    try:
        for pid in pids:
            try:
                fds.append(ended(pid))
            except ProcessLookupError:
                pass
        while fds:
            ready, _, _ = select.select(fds, [], [], HANG_GUARD)
            assert ready, f"processes still alive after {HANG_GUARD} s: {pids}"
            for fd in ready:
                fds.remove(fd)
                os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)
