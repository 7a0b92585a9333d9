"""A local Ray started by `compress --ray` ends with the process that started it, even one killed by
SIGKILL.

ray.init() starts its processes (GCS, raylet, and under the raylet its agents and workers) from the
driver. They follow a dead parent only by polling, and the agents first retry the dead GCS: after a
kill -9 of the driver, two of them outlived it by over 10 s (issue 29). So before ray.init the
driver puts a token in the environment every Ray process inherits, and starts a watchdog in a session
of its own, holding the read end of a pipe whose write end only the driver has. While the driver
runs, the watchdog notes the run's processes: those whose environment holds the token, and their
children (Ray's agents rewrite their process title over their environment, so they are known by
their parent). However the driver ends, the pipe closes; the watchdog then kills the run's
processes (each known by pid and start time, so a reused pid is never hit) until none is left, and
exits. Linux only (it reads /proc); elsewhere a no-op.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from contextlib import contextmanager

VARIABLE = "ADAPTOK_RAY_RUN"
MARKER = "adaptok-ray-watchdog"        # in the watchdog's command line, so that it can be found

WATCHDOG = r"""
import os, select, signal, sys, time
entry, me = sys.argv[1].encode(), os.getpid()
run, seen = {}, set()          # the run's processes: pid -> start time; (pid, start time) already looked at

def table():
    out = {}                   # pid -> (parent pid, start time, zombie)
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    s = f.read().rpartition(b")")[2].split()
                out[int(p)] = (int(s[1]), int(s[19]), s[0] == b"Z")
            except (OSError, IndexError, ValueError):
                pass
    return out

def marked(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False

def update():
    t = table()
    for pid, (parent, start, _) in t.items():
        if pid != me and (pid, start) not in seen:
            seen.add((pid, start))
            if marked(pid):
                run[pid] = start
    grew = True
    while grew:                # a child of the run's is the run's, whatever its environment now says
        grew = False
        for pid, (parent, start, _) in t.items():
            if pid != me and pid not in run and run.get(parent) == t.get(parent, (0, -1))[1]:
                run[pid] = start
                grew = True
    return t

while True:                    # until the driver's end of the pipe closes: the driver has ended
    ready, _, _ = select.select([0], [], [], 0.5)
    if ready and not os.read(0, 4096):
        break
    update()
for _ in range(600):           # then kill the run's processes until none is left
    t = update()
    alive = [p for p, start in run.items() if p in t and t[p][1] == start and not t[p][2]]
    if not alive:
        break
    for p in alive:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.05)
"""


@contextmanager
def watched():
    """Processes started inside the block (a local Ray) are killed when this process ends, or when the
    block ends; the block waits for that."""
    if not sys.platform.startswith("linux"):
        yield
        return
    token = f"{VARIABLE}={secrets.token_hex(12)}"
    dog = subprocess.Popen([sys.executable, "-c", WATCHDOG, token, MARKER], stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    before = os.environ.get(VARIABLE)
    os.environ[VARIABLE] = token.partition("=")[2]
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = before
        dog.stdin.close()               # what a dead driver does too: the watchdog sweeps what is left
        dog.wait()
