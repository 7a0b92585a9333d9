"""The `adaptok` entry point: signals are handled before anything heavy is imported.

Ctrl-C or SIGTERM at any moment, start-up included, ends with one line and exit 130, and a closed
pipe (`adaptok inspect --json | head -1`) ends quietly, as other Unix tools do.
"""
import os
import signal
import sys

EXIT_INTERRUPTED = 130   # errors.EXIT_INTERRUPTED, repeated here so nothing else is imported first
EXIT_PIPE = 141          # errors.EXIT_PIPE: 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


def quiet_stdout():
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail on a closed pipe."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from .cli import main as cli_main
        cli_main()
    except KeyboardInterrupt:
        print("adaptok: interrupted", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        quiet_stdout()
        sys.exit(EXIT_PIPE)


if __name__ == "__main__":
    main()
