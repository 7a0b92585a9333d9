"""Errors a user can cause, each with the exit code the CLI returns for it (sysexits-style).

Scripts rely on these numbers: they are documented in the README and the man page and never change.
"""

EXIT_OK = 0
EXIT_SOME_FAILED = 1      # a batch ran, but at least one file failed
EXIT_USAGE = 2            # bad flags or arguments
EXIT_BAD_CONTAINER = 65   # EX_DATAERR: not an .atok file, corrupt, truncated or hostile
EXIT_BAD_INPUT = 66       # EX_NOINPUT: input missing, unreadable or not a video
EXIT_UNAVAILABLE = 69     # EX_UNAVAILABLE: unknown tokeniser, or the model a container needs is missing
EXIT_CANT_CREATE = 73     # EX_CANTCREAT: output exists (use -f) or cannot be written
EXIT_IO = 74              # EX_IOERR: write failed (disk full, ...)
EXIT_INTERNAL = 70        # EX_SOFTWARE: a bug in adaptok (please report it)
EXIT_INTERRUPTED = 130    # Ctrl-C / SIGTERM; partial outputs are removed
EXIT_PIPE = 141           # stdout was closed by its reader (`... | head -1`): stopped quietly

DEBUG_VARIABLE = "ADAPTOK_DEBUG"    # set: a bug raises with its traceback instead of becoming one line


class AdaptokError(Exception):
    """An error caused by input, arguments or environment; printed as one line, never a traceback."""

    exit_code = EXIT_USAGE


class UsageError(AdaptokError):
    exit_code = EXIT_USAGE


class InputError(AdaptokError):
    exit_code = EXIT_BAD_INPUT


class ContainerError(AdaptokError):
    exit_code = EXIT_BAD_CONTAINER


class ModelUnavailableError(AdaptokError):
    exit_code = EXIT_UNAVAILABLE


class OutputExistsError(AdaptokError):
    exit_code = EXIT_CANT_CREATE


class CannotCreateError(AdaptokError):
    """An output that cannot be made where it is named (its folder does not exist)."""
    exit_code = EXIT_CANT_CREATE


class WriteError(AdaptokError):
    exit_code = EXIT_IO


class CacheMismatchError(AdaptokError):
    """A cache made with another tokeniser or other settings than its reader asked for."""
    exit_code = EXIT_UNAVAILABLE


class InternalError(AdaptokError):
    """A bug met while working on one file: reported as that file's failure (exit 70), so a batch goes on."""
    exit_code = EXIT_INTERNAL


def internal_error(e: Exception, name=None) -> InternalError:
    """An unexpected exception as one line naming the file it happened on; raises e itself when
    ADAPTOK_DEBUG is set (the traceback is wanted)."""
    import os
    if os.environ.get(DEBUG_VARIABLE):
        raise e
    where = f"{name}: " if name is not None else ""
    return InternalError(f"{where}internal error: {type(e).__name__}: {e} (set {DEBUG_VARIABLE}=1 for the traceback)")
