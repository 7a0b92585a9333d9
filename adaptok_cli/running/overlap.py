"""Overlapping stages: reading, device work and writing at once, joined by bounded queues.

compress and decompress do three kinds of work: reading and decoding (PyAV, zstd), the network
(torch) and compressing and writing (zstd, PyAV's encoders). Each releases the GIL while it works, so
run in threads they overlap, and the wall time follows the slowest stage instead of the sum.

- `ahead(items, depth)`: a thread runs an iterator up to `depth` items ahead of whoever reads it.
- `Behind(consume, depth)`: a thread consumes, in order, what the caller puts, up to `depth` behind.

An error raised in a stage's thread reaches the caller unchanged (same type, so the same exit code)
where the serial program would have raised it. Leaving the `with` block, normally or by an error
(Ctrl-C lands in the main thread), stops the threads and waits for them: nothing runs on after the
caller gives up, and the caller removes its half-written output knowing nothing writes to it. Stages
chained one into the next share a `stop` event: a stage that stops makes the stage feeding it stop
at its next item (a thread that runs a tokeniser does not finish a whole chunk first).
With threaded=False each stage runs inline, in the caller's thread and in the same order: the serial
program, kept for measuring what the overlap buys.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Callable, Iterable, Iterator

_END = object()
# A stage's thread waits on its queue in slices of this many seconds. Ctrl-C can land in the main
# thread between a queue taking an item and its notifying the other side (queue.py is Python code),
# and a thread that waited without a limit would then sleep for good; this way it looks again.
POLL = 0.1


class Halted(BaseException):
    """Raised in a stage's thread when the pipeline stops under it (never reaches the caller)."""


class _Failed:
    """An error raised in a stage's thread, on its way to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


class Busy:
    """Seconds a stage spent working (not waiting), summed over its items and threads: over the wall
    time, its share; the stage with the largest is the one the others wait for."""

    def __init__(self):
        self.seconds = 0.0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - t0


def timed_iter(items: Iterable, busy: Busy) -> Iterator:
    """items, with the time spent producing each one added to busy."""
    it = iter(items)
    while True:
        with busy.timed():
            x = next(it, _END)
        if x is _END:
            return
        yield x


@contextlib.contextmanager
def ahead(items: Iterable, depth: int, threaded: bool = True, name: str = "adaptok-ahead",
          stop: threading.Event | None = None):
    """An iterator over items, produced by a thread at most `depth` items ahead of the reader.
    stop: an event shared with the other stages of one pipeline (set when any of them stops)."""
    if not threaded:
        it = iter(items)
        try:
            yield it
        finally:
            _close(it)
        return
    q: queue.Queue = queue.Queue(max(1, depth))
    stop = stop or threading.Event()

    def produce():
        it = None
        try:
            it = iter(items)
            for x in it:
                if not _offer(q, x, stop) or stop.is_set():
                    return
            _offer(q, _END, stop)
        except BaseException as e:      # noqa: BLE001  (handed to the consumer, raised there)
            _offer(q, _Failed(e), stop)
        finally:
            _close(it)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()

    def consume():
        while True:
            if stop.is_set():
                raise Halted
            try:
                x = q.get(timeout=POLL)
            except queue.Empty:
                continue
            if x is _END:
                return
            if isinstance(x, _Failed):
                raise x.error
            yield x
    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():     # a producer blocked on a full queue is freed by the draining
            _drain(q)
            thread.join(0.05)


class Behind:
    """A thread that calls consume(x) on every x put, in order, at most `depth` items behind the caller.

    close() waits for the last one and raises the first error any consume raised; leaving the `with`
    block by an error drops what is still queued (the item being consumed finishes) and waits."""

    def __init__(self, consume: Callable, depth: int, threaded: bool = True, name: str = "adaptok-behind",
                 stop: threading.Event | None = None):
        self.consume, self.threaded = consume, threaded
        self.error: BaseException | None = None
        self._stop = stop or threading.Event()
        self._closed = False
        if threaded:
            self._q: queue.Queue = queue.Queue(max(1, depth))
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self):
        while True:
            try:
                x = self._q.get(timeout=POLL)
            except queue.Empty:
                continue
            if x is _END:
                return
            if self.error is not None or self._stop.is_set():
                continue                   # after an error or an abort: drop, keep the queue moving
            try:
                self.consume(x)
            except BaseException as e:     # noqa: BLE001  (raised in the caller's thread)
                self.error = e

    def put(self, x):
        if self.error is not None:
            raise self.error
        if not self.threaded:
            self.consume(x)
            return
        self._q.put(x)       # never blocks for good: the thread takes items until _END, even after an error

    def close(self):
        """Wait for everything put to be consumed; raise the first error."""
        self._finish()
        if self.error is not None:
            raise self.error

    def _finish(self):
        if self.threaded and not self._closed:
            self._closed = True
            self._q.put(_END)
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None:
            self._stop.set()
        self._finish()


def _offer(q: queue.Queue, x, stop: threading.Event) -> bool:
    """Put x, waiting for room as long as the consumer has not stopped -> whether it went in."""
    while not stop.is_set():
        try:
            q.put(x, timeout=POLL)
            return True
        except queue.Full:
            pass
    return False


def _drain(q: queue.Queue):
    with contextlib.suppress(queue.Empty):
        while True:
            q.get_nowait()


def _close(it):
    """Close a generator in the thread that ran it, so its own clean-up runs there."""
    close = getattr(it, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
