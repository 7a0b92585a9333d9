"""compress on Ray (a local Ray with 2 CPUs): the same outputs, summary and exit code as the local
batch, and a run that loses a worker still completes with nothing half-written."""
import json
import os
import signal
import threading
from functools import partial

import pytest

import adaptok_cli as atk
from adaptok_cli.batch import compress_job, compress_skip, run_ray
from adaptok_cli.cli_output import outcome_dict
from adaptok_cli.container import AtokReader
from adaptok_cli.options import CompressOptions
from conftest import noise_frames, write_video
from test_cli import run
from waiting import Pause

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
    """The first worker to have written part of an output stops there (adaptok_cli/stages.py) and is
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
