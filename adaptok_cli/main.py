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

# Idle torch threads sleep instead of spinning (read once, when torch loads OpenMP). Spinning threads
# fight for the cores of a busy machine: calibrating the tests' tiny Wan on one clip with 2 threads on a
# loaded 2-core machine took 340 s (74 CPU s) spinning, 37 s (10 CPU s) sleeping. The user's choice wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _SignalsWaitForExtensions:
    """Signals wait while torch, numpy or PyAV are imported, and arrive the moment the import ends.

    A KeyboardInterrupt raised inside an extension's initialisation does not unwind cleanly: in a
    pybind11 callback it aborts the process (C++ terminate, exit -6), and a half-imported numpy
    cannot be imported again (both seen). Blocking the signals delays Ctrl-C by the import's time."""
    NAMES = ("torch", "numpy", "av")

    def find_spec(self, name, path=None, target=None):
        if name not in self.NAMES:
            return None
        for finder in sys.meta_path:
            find = None if finder is self else getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_with_signals_blocked(module):
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                from adaptok_cli.running.stages import reached
                reached("import")       # a test may stop here, signals held (stages.py)
                exec_module(module)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        spec.loader.exec_module = exec_with_signals_blocked
        return spec


if hasattr(signal, "pthread_sigmask"):
    sys.meta_path.insert(0, _SignalsWaitForExtensions())

EXIT_INTERRUPTED = 130   # errors.EXIT_INTERRUPTED, repeated so that nothing is imported before the handlers
EXIT_PIPE = 141          # errors.EXIT_PIPE


def main():
    try:
        from adaptok_cli.running.stages import reached
        reached("entry")        # a test may stop here (stages.py): a signal from here on is a clean 130
        from adaptok_cli.running.memory import bound_kernel_cache, fix_mmap_threshold
        fix_mmap_threshold()    # blocks over 32 MiB go back to the system when freed (memory.py)
        bound_kernel_cache()    # at most KERNEL_CACHE compiled CPU kernels, whatever the frame sizes met
        from adaptok_cli.cli.commands import main as cli_main
        from adaptok_cli.cli.printing import quiet_stdout
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
