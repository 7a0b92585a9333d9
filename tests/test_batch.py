"""Batches as scripts run them: failures reported not fatal, resumable, identical with --workers."""
import csv
import io
import json
import os
from pathlib import Path

import pytest

from adaptok_cli import errors

from conftest import noise_frames, static_frames, write_video
from test_cli import run


def make_tree(root):
    write_video(root / "a.mp4", static_frames(9, 32, 48))
    write_video(root / "b.mkv", noise_frames(6, 24, 40))
    (root / "sub").mkdir(parents=True)
    write_video(root / "sub" / "c.mp4", static_frames(13, 40, 40, seed=3))
    (root / "sub" / "unreadable.mp4").write_bytes(os.urandom(2000))


@pytest.mark.slow
def test_batch_with_bad_files_then_resume(tmp_path, small_tok_path):
    src, out = tmp_path / "in", tmp_path / "out"
    make_tree(src)
    p = run("compress", src, "-o", out, "--tokenizer", small_tok_path, "--json")
    assert p.returncode == errors.EXIT_SOME_FAILED
    recs = {os.path.relpath(r["input"], src): r for r in map(json.loads, p.stdout.splitlines())}
    assert {k: r["status"] for k, r in recs.items()} == {"a.mp4": "ok", "b.mkv": "ok", "sub/c.mp4": "ok",
                                                          "sub/unreadable.mp4": "error"}
    assert recs["sub/unreadable.mp4"]["exit_code"] == errors.EXIT_BAD_INPUT
    assert all(0 < recs[k]["token_rate"] <= 1 for k in ("a.mp4", "b.mkv", "sub/c.mp4"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "a.mp4.atok", "b.mkv.atok", "sub", "sub/c.mp4.atok"]

    # a corrupt container among good ones: decompress does the rest and names the bad one
    bad = out / "sub" / "c.mp4.atok"
    data = bytearray(bad.read_bytes())
    data[-40] ^= 0x10
    bad.write_bytes(bytes(data))
    p = run("decompress", out, "-o", tmp_path / "dec", "--tokenizer", small_tok_path, "--json", "--no-lit")
    assert p.returncode == errors.EXIT_SOME_FAILED
    status = {os.path.basename(r["input"]): r["status"] for r in map(json.loads, p.stdout.splitlines())}
    assert status == {"a.mp4.atok": "ok", "b.mkv.atok": "ok", "c.mp4.atok": "error"}
    assert "c.mp4.atok" in p.stderr and (tmp_path / "dec" / "a.decoded.mp4").exists()
    assert not (tmp_path / "dec" / "sub" / "c.decoded.mp4").exists()

    # running the same command again skips what is up to date and redoes nothing else
    bad.unlink()
    before = {f: f.stat().st_mtime_ns for f in out.rglob("*.atok")}
    p = run("compress", src, "-o", out, "--tokenizer", small_tok_path, "--csv")
    assert p.returncode == errors.EXIT_SOME_FAILED       # the unreadable file still fails
    rows = {os.path.relpath(r["input"], src): r for r in csv.DictReader(io.StringIO(p.stdout))}
    assert rows["a.mp4"]["status"] == "skipped" and rows["b.mkv"]["status"] == "skipped"
    assert rows["sub/c.mp4"]["status"] == "ok" and rows["sub/unreadable.mp4"]["status"] == "error"
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())

    # other settings: not up to date, and never overwritten without -f
    p = run("compress", src / "a.mp4", "-o", out / "a.mp4.atok", "--tokenizer", small_tok_path, "-t", "0.5")
    assert p.returncode == errors.EXIT_CANT_CREATE          # ... and the error says which setting differs
    assert "already exists, made with other settings: threshold 0.15 (asked: 0.5) (use -f to overwrite)" in p.stderr
    # a newer input makes the output stale
    later = (out / "b.mkv.atok").stat().st_mtime_ns + 10**9
    os.utime(src / "b.mkv", ns=(later, later))
    p = run("compress", src / "b.mkv", "-o", out / "b.mkv.atok", "--tokenizer", small_tok_path)
    assert p.returncode == errors.EXIT_CANT_CREATE and "already exists, older than its input" in p.stderr
    p = run("compress", src / "b.mkv", "-o", out / "b.mkv.atok", "--tokenizer", small_tok_path, "-f", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "ok"


@pytest.mark.slow
def test_workers_give_identical_bytes(tmp_path, small_tok_path):
    src = tmp_path / "in"
    make_tree(src)
    (src / "sub" / "unreadable.mp4").unlink()
    for n in (1, 2):
        p = run("compress", src, "-o", tmp_path / f"w{n}", "--tokenizer", small_tok_path, "--workers", n, "-q")
        assert p.returncode == 0, p.stderr
    files = sorted(f.relative_to(tmp_path / "w1") for f in (tmp_path / "w1").rglob("*.atok"))
    assert len(files) == 3
    for f in files:
        assert (tmp_path / "w1" / f).read_bytes() == (tmp_path / "w2" / f).read_bytes(), f


def test_inspect_many_sorted_with_distribution(tmp_path, small_tok_path):
    src = tmp_path / "in"
    make_tree(src)
    run("compress", src, "-o", tmp_path / "out", "--tokenizer", small_tok_path, "-q")
    p = run("inspect", tmp_path / "out", "--sort", "rate")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    order = [l.split()[0] for l in lines[1:4]]
    rates = [float(l.split()[3]) for l in lines[1:4]]
    assert rates == sorted(rates) and order[-1].endswith("b.mkv.atok")      # noise keeps the most
    assert lines[4].startswith("token rate over 3 clips: min ")
    p = run("inspect", tmp_path / "out", "--sort", "rate", "--json")
    js = [json.loads(l)["token_rate"] for l in p.stdout.splitlines()]
    assert js == sorted(js) and len(js) == 3
    assert run("inspect", tmp_path / "out", "--sort", "colour").returncode == errors.EXIT_USAGE


@pytest.mark.slow
def test_plot_and_overlay(tmp_path, small_tok_path):
    src = write_video(tmp_path / "a.mp4", static_frames(9, 32, 48))
    run("compress", src, "-o", tmp_path / "a.atok", "--tokenizer", small_tok_path, "-q")
    p = run("inspect", tmp_path / "a.atok", "--plot", tmp_path / "a.png")
    assert p.returncode == 0 and (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = run("decompress", tmp_path / "a.atok", "-o", tmp_path / "o.mkv", "--overlay", "--tokenizer", small_tok_path)
    assert p.returncode == 0
    from adaptok_cli.running.video import VideoReader
    with VideoReader(tmp_path / "o.mkv") as r:
        frames = list(r)
    assert len(frames) == 9
    # frame 0 is kept whole (untinted); later frames of a still scene are mostly dropped (tinted blue)
    assert frames[5][..., 2].mean() > frames[0][..., 2].mean() + 20


def test_default_workers_fit_cores_and_free_memory(monkeypatch):
    from adaptok_cli.running import batch
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(batch, "available_mb", lambda: 64_000)
    assert batch.default_workers(100) == 8 and batch.default_workers(3) == 3
    monkeypatch.setattr(batch, "available_mb", lambda: 2_500)     # two workers' worth of memory
    assert batch.default_workers(100) == 2
    monkeypatch.setattr(batch, "available_mb", lambda: 300)       # never below one
    assert batch.default_workers(100) == 1
    monkeypatch.setattr(batch, "available_mb", lambda: None)      # unknown: the cores decide
    assert batch.default_workers(100) == 8


def test_ray_without_the_extra_names_it(monkeypatch, tmp_path):
    import sys

    import pytest

    from adaptok_cli.running.batch import run_ray
    from adaptok_cli.errors import ModelUnavailableError
    monkeypatch.setitem(sys.modules, "ray", None)          # as if not installed
    with pytest.raises(ModelUnavailableError, match=r"adaptok\[ray\]"):
        run_ray([(tmp_path / "a.mp4", tmp_path / "a.atok")], print)


def test_urls_in_and_out_match_local_files(tmp_path, small_tok_path):
    """compress_many over fsspec URLs: an object store (memory://, no real rename) and file://. Outputs
    equal a local run byte for byte, a rerun skips them, an existing one is never replaced, a failing
    file names the URL, and nothing temporary is left in the store."""
    import fsspec

    import adaptok_cli as atk
    src = tmp_path / "in"
    make_tree(src)
    local = atk.compress_many(src, tmp_path / "local", workers=1, tokenizer=str(small_tok_path))
    mem = fsspec.filesystem("memory")
    for f in src.rglob("*"):
        if f.is_file():
            mem.pipe(f"/bucket/in/{f.relative_to(src).as_posix()}", f.read_bytes())
    outcomes = atk.compress_many("memory://bucket/in", "memory://bucket/out/", workers=1, tokenizer=str(small_tok_path))
    status = {o.src: ("error" if o.error else "ok") for o in outcomes}
    assert status == {"memory:///bucket/in/a.mp4": "ok", "memory:///bucket/in/b.mkv": "ok",
                      "memory:///bucket/in/sub/c.mp4": "ok", "memory:///bucket/in/sub/unreadable.mp4": "error"}
    bad = next(o.error for o in outcomes if o.error)
    assert str(bad).startswith("memory:///bucket/in/sub/unreadable.mp4:") and bad.exit_code == errors.EXIT_BAD_INPUT
    assert sorted(mem.find("/bucket/out")) == ["/bucket/out/a.mp4.atok", "/bucket/out/b.mkv.atok", "/bucket/out/sub/c.mp4.atok"]
    for rel in ("a.mp4.atok", "b.mkv.atok", "sub/c.mp4.atok"):
        assert mem.cat(f"/bucket/out/{rel}") == (tmp_path / "local" / rel).read_bytes()
    assert [o.skipped for o in local if not o.error] == [False] * 3

    # file:// to file:// (how a mounted or local store looks), with a rerun that skips what is done
    url_out = f"file://{tmp_path}/via-url/"
    first = atk.compress_many(f"file://{src}", url_out, workers=1, tokenizer=str(small_tok_path))
    assert sum(o.error is None for o in first) == 3
    assert (tmp_path / "via-url" / "sub" / "c.mp4.atok").read_bytes() == (tmp_path / "local" / "sub" / "c.mp4.atok").read_bytes()
    again = atk.compress_many(f"file://{src}", url_out, workers=1, tokenizer=str(small_tok_path))
    assert sorted(o.skipped for o in again if o.error is None) == [True] * 3
    # never replaced without force, even when out of date
    os.utime(src / "a.mp4")
    (tmp_path / "via-url" / "a.mp4.atok").write_bytes(b"mine")
    third = atk.compress_many(f"file://{src}/a.mp4", f"file://{tmp_path}/via-url/a.mp4.atok", tokenizer=str(small_tok_path))
    assert third[0].error.exit_code == errors.EXIT_CANT_CREATE and (tmp_path / "via-url" / "a.mp4.atok").read_bytes() == b"mine"
    assert not [p for p in (tmp_path / "via-url").rglob("*") if "adaptok-" in p.name]
    # an input is never written over, whether it is named by path or by file:// URL
    (src / "v.atok").write_bytes((src / "a.mp4").read_bytes())      # a video named as an output would be
    p = run("compress", src / "v.atok", "-o", f"file://{src}/v.atok", "-f", "--tokenizer", small_tok_path)
    assert p.returncode == errors.EXIT_CANT_CREATE and "is an input" in p.stderr
    # only compress takes URLs
    p = run("decompress", f"file://{tmp_path}/via-url/b.mkv.atok", "--tokenizer", small_tok_path)
    assert p.returncode == errors.EXIT_USAGE and "only compress" in p.stderr
    try:
        atk.compress_many("nope://x/y.mp4", tmp_path / "z")
    except errors.AdaptokError as e:
        assert e.exit_code == errors.EXIT_USAGE and "nope://x/y.mp4: unknown protocol" in str(e)   # up front
    else:
        raise AssertionError("an unknown protocol was accepted")


def test_an_unexpected_error_on_one_file_is_that_files_alone(tmp_path, monkeypatch):
    """A bug met on one file (any exception) is that file's internal error (70) and the batch goes on:
    in the serial loop, in a worker's call, and in the per-file loop of inspect/verify."""
    from adaptok_cli.running.batch import _call, run as run_batch
    from adaptok_cli.cli.printing import for_each
    monkeypatch.delenv(errors.DEBUG_VARIABLE, raising=False)
    seen = []

    def job(src, dst, progress):
        seen.append(src)
        if src == "a":
            raise KeyError("surprise")
        return f"made {dst}"
    outcomes = run_batch([("a", tmp_path / "a.out"), ("b", tmp_path / "b.out")], job)
    assert seen == ["a", "b"] and outcomes[1].result == f"made {tmp_path / 'b.out'}"
    assert outcomes[0].error.exit_code == errors.EXIT_INTERNAL and "a: internal error: KeyError" in str(outcomes[0].error)
    res, err = _call(job, "a", tmp_path / "x")
    assert res is None and err.exit_code == errors.EXIT_INTERNAL
    assert for_each(["a", "b", "c"], lambda f: job(f, f, None)) == errors.EXIT_SOME_FAILED and seen[-2:] == ["b", "c"]
    assert for_each(["a"], lambda f: job(f, f, None)) == errors.EXIT_INTERNAL


def killed_on_crash(src, dst, progress):
    """A job whose worker dies on files named crash* (SIGKILL: as a crash in native code or the OOM
    killer would end it): module level, so spawned workers can run it."""
    import signal
    if Path(src).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    Path(dst).write_text("made")
    return f"made {Path(dst).name}"


def test_a_worker_that_dies_costs_only_its_own_file(tmp_path):
    """With -j 2, a file that kills its worker process takes the file then in flight beside it down
    too; both are run again one at a time, so only the file that kills its worker alone fails (70,
    named), and every other file is done once (issue 29's review: the whole batch ended)."""
    from adaptok_cli.running.batch import run as run_batch
    names = ["a", "b", "crash", "c", "d", "e"]
    outcomes = run_batch([(tmp_path / n, tmp_path / f"{n}.out") for n in names], killed_on_crash, workers=2)
    by_name = {Path(o.src).name: o for o in outcomes}
    assert sorted(by_name) == sorted(names) and len(outcomes) == len(names)
    bad = by_name.pop("crash")
    assert bad.error.exit_code == errors.EXIT_INTERNAL and "worker process died on this file" in str(bad.error)
    assert all(o.error is None and o.result == f"made {n}.out" for n, o in by_name.items())
    assert not (tmp_path / "crash.out").exists()


def test_urls_that_are_not_stores_are_refused_up_front(tmp_path, small_tok_path, monkeypatch):
    """memory:// (gone with the process), zip:// and chains, unknown protocols, read-only or unreachable
    outputs: one line before any work (2; an output that cannot be reached: 73), never a crash (70) or a
    success whose output vanished (issue 29)."""
    write_video(tmp_path / "a.mp4", static_frames(5, 32, 48))
    tok = ["--tokenizer", small_tok_path]
    for out, code, words in [("memory://x/", errors.EXIT_USAGE, "would be gone when it exits"),
                             ("zip://a.atok", errors.EXIT_USAGE, "does not keep files"),
                             ("simplecache::file:///tmp/x/", errors.EXIT_USAGE, "chained URLs"),
                             ("nope://x/", errors.EXIT_USAGE, "unknown protocol"),
                             ("ftp://127.0.0.1:1/out/", errors.EXIT_CANT_CREATE, "cannot reach it")]:
        p = run("compress", tmp_path / "a.mp4", "-o", out, *tok)
        assert p.returncode == code and words in p.stderr and len(p.stderr.splitlines()) == 1, (out, p.stderr)
    for src in ("zip://a.mp4::file:///tmp/x.zip", "memory://a.mp4"):
        p = run("compress", src, "-o", tmp_path / "o/", *tok)
        assert p.returncode == errors.EXIT_USAGE and len(p.stderr.splitlines()) == 1, (src, p.stderr)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.mp4"]
    from adaptok_cli.running import remote
    from adaptok_cli.errors import UsageError
    monkeypatch.setattr(remote, "READ_ONLY", {"LocalFileSystem"})   # http:// needs a plug-in not installed here
    with pytest.raises(UsageError, match="read-only"):
        remote.check_url(f"file://{tmp_path}/o/", output=True)


def test_a_file_the_up_to_date_check_fails_on_is_still_worked_on(tmp_path):
    """A skip check that raises for one file (an unreadable URL, a bug) leaves that file to its job,
    which reports it; the other files are skipped or done as usual."""
    from adaptok_cli.running.batch import run as run_batch

    def skip(src, dst):
        if src == "a":
            raise errors.InputError("a: cannot check")
        return src == "b"
    outcomes = run_batch([("a", tmp_path / "a"), ("b", tmp_path / "b"), ("c", tmp_path / "c")],
                         lambda src, dst, progress: f"made {src}", skip=skip)
    assert sorted((o.src, o.skipped, o.result) for o in outcomes) == [("a", False, "made a"), ("b", True, None),
                                                                     ("c", False, "made c")]
