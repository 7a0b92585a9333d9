"""compress on Ray (a local Ray with 2 CPUs): the same outputs, summary and exit code as the local
batch, and a run that loses a worker still completes with nothing half-written."""
import json
import os
import signal
import subprocess
import sys
import threading
from functools import partial

import pytest

import adaptok_cli as atk
from adaptok_cli.running.batch import compress_job, compress_skip, run_ray
from adaptok_cli.cli.printing import outcome_dict
from adaptok_cli.format.container import AtokReader
from adaptok_cli.running.options import CompressOptions
from conftest import noise_frames, write_video
from test_cli import run
from waiting import Pause, wait_gone

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("rayclips")
    for i in range(4):
        write_video(d / f"c{i}.mp4", noise_frames(9 + 4 * i, 32, 48, seed=i))
    (d / "broken.mp4").write_bytes(b"not a video")
    return d


def summary(rows):
    drop = ("seconds", "timing", "output", "input", "error")
    return sorted((r["input"].removeprefix("file://"), json.dumps({k: v for k, v in r.items() if k not in drop},
                                                                  sort_keys=True)) for r in rows)


@pytest.mark.slow
def test_ray_and_local_batch_agree(tmp_path, clips, small_tok_path):
    """The CLI on Ray, reading and writing file:// URLs, and compress_many(ray=True) from Python give
    the local batch's outputs byte for byte, its report and its exit code."""
    args = ["--tokenizer", small_tok_path, "--json", "-j", "2"]
    local = run("compress", clips, "-o", tmp_path / "local", *args)
    on_ray = run("compress", f"file://{clips}", "-o", f"file://{tmp_path}/ray/", "--ray", *args)
    assert on_ray.returncode == local.returncode != 0                 # the broken clip: same code, the rest made
    local_rows = [json.loads(line) for line in local.stdout.splitlines()]
    assert summary(json.loads(line) for line in on_ray.stdout.splitlines()) == summary(local_rows)
    from_python = atk.compress_many(clips, tmp_path / "py", ray=True, workers=2, tokenizer=str(small_tok_path))
    assert summary(map(outcome_dict, from_python)) == summary(local_rows)
    made = sorted(p.name for p in (tmp_path / "local").glob("*.atok"))
    assert len(made) == 4
    for out in ("ray", "py"):
        assert made == sorted(p.name for p in (tmp_path / out).glob("*.atok"))
        for name in made:
            assert (tmp_path / out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_a_killed_worker_is_replaced_and_nothing_is_half_written(tmp_path, clips, small_tok_path, monkeypatch):
    """The first worker to have written part of an output stops there (adaptok_cli/running/stages.py) and is
    killed: Ray restarts it and retries its file, which is written whole."""
    srcs = [clips / f"c{i}.mp4" for i in range(4)] * 3
    pairs = [(s, tmp_path / f"{k}-{s.name}.atok") for k, s in enumerate(srcs)]
    job = partial(compress_job, CompressOptions(tokenizer=str(small_tok_path), chunk=1).check(), False)
    killed = []
    ended_r, ended_w = os.pipe()
    with Pause(tmp_path / "pause", "frames") as pause:
        monkeypatch.setenv("ADAPTOK_PAUSE_AT", pause.env["ADAPTOK_PAUSE_AT"])   # Ray's workers take the driver's

        def killer():
            killed.extend(pause.wait(unless=[ended_r]))     # fails if the run ends without a stop
            os.kill(killed[0], signal.SIGKILL)
        t = threading.Thread(target=killer)
        t.start()
        try:
            outcomes = run_ray(pairs, job, workers=2)
        finally:
            os.write(ended_w, b"x")
            t.join()
    os.close(ended_r), os.close(ended_w)
    assert killed, "no worker stopped in the middle of a file"
    assert [o.error for o in outcomes if o.error] == [] and len(outcomes) == len(pairs)
    for _, dst in pairs:
        with AtokReader(dst) as r:                                     # complete and valid
            for c in range(len(r.chunks)):
                r.check_chunk(c)
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
    again = run_ray(pairs, job, workers=2, skip=partial(compress_skip, job.args[0]))    # up to date: skipped
    assert all(o.skipped for o in again) and len(again) == len(pairs)


def processes() -> dict:
    """pid -> (parent pid, command line) of the live processes (zombies are dead)."""
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    stat = f.read().rpartition(b")")[2].split()
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if stat[0] != b"Z":
                out[int(p)] = (int(stat[1]), cmdline)
    return out


def descendants(pid: int) -> dict:
    """pid -> command line of the live descendants of pid."""
    table, found, frontier = processes(), {}, [pid]
    while frontier:
        parent = frontier.pop()
        for p, (pp, cmdline) in table.items():
            if pp == parent and p not in found:
                found[p] = cmdline
                frontier.append(p)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog reads /proc")
def test_the_local_ray_dies_with_a_killed_driver(tmp_path, small_tok_path):
    """kill -9 of a `compress --ray` driver: every process of its local Ray (GCS, raylet, its agents,
    the actors) is gone once the watchdog is done (issue 29: the two agents outlived the driver by
    over 10 s; measured without the watchdog: still alive 20 s on, reparented to init)."""
    from adaptok_cli.running.raywatch import MARKER
    write_video(tmp_path / "in" / "long.mp4", noise_frames(600, 256, 320))     # keeps the actors busy a while
    with Pause(tmp_path / "pause", "frames") as pause:      # an actor holds frames: the Ray is fully up
        driver = subprocess.Popen([sys.executable, "-m", "adaptok_cli", "compress", str(tmp_path / "in"), "-o",
                                   f"{tmp_path / 'out'}/", "--ray", "-j", "2", "--tokenizer", str(small_tok_path), "-q",
                                   "-f"], env={**os.environ, **pause.env},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            pause.wait(1, unless=[driver])
            run = descendants(driver.pid)
            dogs = [p for p, c in run.items() if MARKER.encode() in c]
            ray_pids = {p: c for p, c in run.items() if p not in dogs}
            assert len(dogs) == 1 and sum(b"Agent" in c for c in ray_pids.values()) == 2 and len(ray_pids) >= 5
        finally:
            driver.kill()
            driver.wait()
    wait_gone(dogs)
    alive = processes()
    assert [c[:40] for p, c in ray_pids.items() if alive.get(p, (0, b""))[1] == c] == []
