"""The `adaptok` entry point: signals are handled before anything else is imported.

Ctrl-C or SIGTERM at any moment from here on, start-up included, ends with one line and exit 130,
and a closed pipe (`adaptok inspect --json | head -1`) ends quietly with 141. Only the entry points
(`adaptok`, `python -m adaptok_cli`) import this module, so the handlers are theirs alone.
"""
import os
import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _interrupt)   # the first thing the process does after the interpreter starts


def _return_big_blocks_to_the_system(threshold: int = 1 << 20):
    """glibc serves large allocations from the heap once it has freed a few (its mmap threshold rises),
    so frame-sized tensors freed chunk after chunk stay in the process: peak memory then grows with
    the frame size times the number of shapes seen. A fixed threshold keeps every block over 1 MiB in
    its own mapping, given back when freed (docs/BENCHMARKS.md: 1101 -> 955 MB decompressing 1080p).
    Only the command line does this: a library does not retune its host's allocator."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)     # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass                                                # not glibc: nothing to tune


_return_big_blocks_to_the_system()

EXIT_INTERRUPTED = 130   # errors.EXIT_INTERRUPTED, repeated so that nothing is imported before the handlers
EXIT_PIPE = 141          # errors.EXIT_PIPE


def main():
    try:
        from .cli import main as cli_main
        from .cli_output import quiet_stdout
        cli_main()
    except KeyboardInterrupt:
        print("adaptok: interrupted", file=sys.stderr, flush=True)
        # os._exit, not sys.exit: CPython kills itself with SIGINT at exit when a KeyboardInterrupt once
        # escaped code it ran for an extension's import, even though we caught it (seen as exit -2)
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        quiet_stdout()
        sys.exit(EXIT_PIPE)


if __name__ == "__main__":
    main()
