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


from .memory import fix_mmap_threshold    # noqa: E402  (glibc only; imports nothing heavy)

fix_mmap_threshold()    # frame-sized blocks go back to the system when freed (memory.py)

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
