"""Overlapping stages (adaptok_cli/overlap.py) and the pipelined compress / decompress built on them:
same bytes as the serial program, errors where the serial program raises them, no thread left behind,
bounded queues, and a wall time that follows the slowest stage, not the sum."""
import io
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

import adaptok_cli as atk
from adaptok_cli.errors import InputError
from adaptok_cli.overlap import Behind, ahead

from conftest import noise_frames, static_frames, write_video
from waiting import HANG_GUARD

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.pipeline import FakeTokenizer  # noqa: E402


def stage_threads():
    return [t for t in threading.enumerate() if t.name.startswith("adaptok-")]


def test_ahead_keeps_order_and_runs_at_most_depth_items_ahead():
    made, lead = [], threading.Event()

    def items():
        for i in range(20):
            made.append(i)
            if i == 3:
                lead.set()
            yield i
    with ahead(items(), depth=3) as it:
        assert lead.wait(HANG_GUARD)
        # items 0-2 wait in the queue and item 3 in the producer's hand: it cannot make item 4 before a read
        assert len(made) == 4
        assert list(it) == list(range(20))
    assert stage_threads() == []


def test_ahead_raises_the_producers_error_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise InputError("clip.mp4: decoding failed (bad data)")
    got = []
    with pytest.raises(InputError, match="decoding failed"), ahead(items(), depth=1) as it:
        for x in it:
            got.append(x)
    assert got == [1, 2] and stage_threads() == []


def test_leaving_early_stops_a_blocked_producer_and_runs_its_clean_up():
    cleaned, full = threading.Event(), threading.Event()

    def items():
        try:
            for i in range(10**9):
                if i == 2:
                    full.set()
                yield np.zeros(4)
        finally:
            cleaned.set()
    with pytest.raises(KeyboardInterrupt), ahead(items(), depth=1) as it:
        next(it)
        assert full.wait(HANG_GUARD)          # the producer holds an item it cannot put: the queue is full
        raise KeyboardInterrupt       # Ctrl-C in the caller
    assert cleaned.is_set() and stage_threads() == []


def test_a_stopping_stage_stops_the_stage_feeding_it_at_its_next_item():
    """Two chained stages, as frames -> tokeniser: the caller fails after the first chunk while the
    tokeniser thread is inside a call. With the shared stop it leaves at its next frame, not after
    the 1000 frames of its next chunk."""
    stop, pulled, calling = threading.Event(), [], threading.Event()

    def frames():
        for i in range(10**6):
            pulled.append(i)
            yield i

    def chunks(source):
        for i, _ in enumerate(source):
            if i == 0:
                yield "chunk 0"
            else:
                calling.set()
                if not stop.wait(HANG_GUARD):        # a long tokeniser call, over when the pipeline stops
                    pulled.append("never stopped")
                    return
                if i % 1000 == 0:
                    yield f"chunk {i // 1000}"
    with pytest.raises(KeyboardInterrupt), ahead(frames(), 2, stop=stop) as source, \
            ahead(chunks(source), 1, stop=stop) as latents:
        assert next(latents) == "chunk 0"
        assert calling.wait(HANG_GUARD)
        raise KeyboardInterrupt
    assert len(pulled) < 10 and "never stopped" not in pulled and stage_threads() == []


def test_behind_consumes_in_order_and_raises_the_first_error_in_the_caller():
    seen = []

    def consume(x):
        if x == 3:
            raise OSError("disk full")
        seen.append(x)
    with pytest.raises(OSError, match="disk full"), Behind(consume, depth=2) as sink:
        for x in range(100):
            sink.put(x)
        sink.close()
    assert seen == [0, 1, 2] and stage_threads() == []


def test_behind_drops_what_is_queued_when_the_caller_fails():
    started, release, seen = threading.Event(), threading.Event(), []

    def consume(x):
        started.set()
        assert release.wait(HANG_GUARD)
        seen.append(x)
    with pytest.raises(KeyboardInterrupt), Behind(consume, depth=4) as sink:
        for x in range(3):
            sink.put(x)
        assert started.wait(HANG_GUARD)
        release.set()
        raise KeyboardInterrupt
    assert seen == [0] and stage_threads() == []     # the item in hand finishes, the queued ones do not


def test_serial_stages_run_in_the_callers_thread():
    where = []
    with ahead((threading.current_thread() for _ in range(2)), 1, threaded=False) as it, \
            Behind(where.append, 1, threaded=False) as sink:
        for t in it:
            sink.put(t)
        sink.close()
    assert where == [threading.main_thread()] * 2


def test_pipelined_writes_the_serial_bytes_and_frames_at_480p(tmp_path, small_tok_path):
    clip480 = write_video(tmp_path / "c480.mkv", static_frames(21, 480, 854))
    a, b = tmp_path / "p.atok", tmp_path / "s.atok"
    atk.compress(clip480, a, tokenizer=str(small_tok_path), unit="spread")
    atk.compress(clip480, b, tokenizer=str(small_tok_path), unit="spread", pipelined=False)
    assert a.read_bytes() == b.read_bytes()
    atk.decompress(a, tmp_path / "p.y4m", tokenizer=str(small_tok_path))
    atk.decompress(a, tmp_path / "s.y4m", tokenizer=str(small_tok_path), pipelined=False)
    assert (tmp_path / "p.y4m").read_bytes() == (tmp_path / "s.y4m").read_bytes()
    assert stage_threads() == []


def h264(frames) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return buf.getvalue()


def test_an_error_mid_stream_fails_as_in_the_serial_program(tmp_path, small_tok_path):
    """Frames that change size after 30 frames: the reading thread raises, the caller gets the same
    error (so the same exit code) as serially, and nothing is left behind."""
    src = tmp_path / "a.264"
    src.write_bytes(h264(noise_frames(30, 96, 128)) + h264(noise_frames(10, 64, 96)))
    errors = []
    for pipelined in (True, False):
        with pytest.raises(InputError) as e:
            atk.compress(src, tmp_path / "a.atok", tokenizer=str(small_tok_path), pipelined=pipelined)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "frame size changes mid-stream" in errors[0]
    assert stage_threads() == [] and [p.name for p in tmp_path.iterdir()] == ["a.264"]


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# the stages each thread runs, by the names of Result.timing
THREADS = {"compress": [["read"], ["encode"], ["mask"], ["zstd"], ["write"]],
           "decompress": [["read", "fill"], ["lit", "decode"], ["write"]]}


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_wall_time_follows_the_slowest_stage_not_the_sum(tmp_path, command):
    """A tokeniser that takes a fixed time per call (a sleep: its CPU is free, as while a GPU works),
    twice what the rest takes. Serially the stages add up; pipelined, the run must save at least half
    of what the stages other than the slowest took in the serial run (the work before and after the
    stages, opening files, fsync, is the same in both and cancels; no absolute time is asked)."""
    clip = write_video(tmp_path / "c.mkv", static_frames(41, 480, 854))
    atok = tmp_path / "c.atok"
    atk.compress(clip, atok, loaded_tokenizer=FakeTokenizer(), unit="spread", chunk=2)

    def run(tok, pipelined):
        t0 = time.perf_counter()
        if command == "compress":
            res = atk.compress(clip, tmp_path / "o.atok", loaded_tokenizer=tok, unit="spread", chunk=2, force=True,
                               pipelined=pipelined)
        else:
            res = atk.decompress(atok, tmp_path / "o.y4m", use_lit=False, force=True, pipelined=pipelined,
                                 loaded_tokenizer=tok)
        return time.perf_counter() - t0, res.timing
    free = FakeTokenizer()
    wall, _ = run(free, False)
    tok = FakeTokenizer(seconds=2 * wall / free.calls)
    serial, timing = run(tok, False)
    pipelined, _ = run(tok, True)
    busy = [sum(timing[k] for k in names) for names in THREADS[command]]
    assert max(busy) == busy[1] >= tok.calls / 2 * tok.seconds       # the tokeniser is the slowest stage
    hidden = sum(busy) - max(busy)
    assert serial - pipelined >= 0.5 * hidden, (serial, pipelined, busy)
