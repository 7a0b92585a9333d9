"""Named moments of a run where a test can stop a process, to signal or kill it there rather than
after a guessed delay (on a loaded machine every delay is wrong).

    ADAPTOK_PAUSE_AT=STAGE:N:FOLDER     FOLDER holds two FIFOs the test made: `reached` and `go`

The first N processes to reach STAGE each write their pid and a newline to `reached`, then wait
until something is written to `go` or a signal ends the wait (a signal held at that moment, as in
an extension's import, arrives when the run goes on). A process stops at most once per stage.
Without the variable, reached() costs one lookup. Imports nothing heavy: main.py calls it before
anything else is imported.

Stages: "entry" (main.py: signal handlers in place, nothing imported yet); "import" (inside the
first import of torch, numpy or PyAV, signals held); "models" (compress/decompress: models loaded,
no output opened yet); "frames" (compress/decompress: the first chunk written to the temporary output).
"""
import os
import select

STAGES = ("entry", "import", "models", "frames")
_passed: set = set()


def reached(stage: str):
    spec = os.environ.get("ADAPTOK_PAUSE_AT")
    if not spec or stage in _passed:
        return
    _passed.add(stage)
    want, count, folder = (spec.split(":", 2) + ["", ""])[:3]
    if want == stage and count.isdigit() and any(_claim(folder, i) for i in range(int(count))):
        _pause(folder)


def _claim(folder: str, i: int) -> bool:
    try:
        os.mkdir(os.path.join(folder, f"claimed-{i}"))
        return True
    except OSError:        # taken already, or no such folder: go on
        return False


def _pause(folder: str):
    go = os.open(os.path.join(folder, "go"), os.O_RDONLY | os.O_NONBLOCK)   # open before saying so: never missed
    try:
        fd = os.open(os.path.join(folder, "reached"), os.O_WRONLY)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        waiting = select.poll()
        waiting.register(go, select.POLLIN)
        waiting.poll()
    finally:
        os.close(go)
