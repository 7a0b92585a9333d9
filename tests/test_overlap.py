"""Overlapping stages (adaptok_cli/running/overlap.py) and the pipelined compress / decompress built on them:
same bytes as the serial program, errors where the serial program raises them, no thread left behind,
bounded queues, and stages that really run while the tokeniser works (shown by events, not timed)."""
import io
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

import adaptok_cli as atk
from adaptok_cli.errors import InputError
from adaptok_cli.running.overlap import Behind, ahead

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


class Progress:
    """Counts, shared between the stages' threads, that a test can wait on (never on time)."""

    def __init__(self):
        self.cond, self.counts = threading.Condition(), {}

    def add(self, name: str, n: int = 1):
        with self.cond:
            self.counts[name] = self.counts.get(name, 0) + n
            self.cond.notify_all()

    def get(self, name: str) -> int:
        return self.counts.get(name, 0)

    def wait(self, name: str, at_least: int, why: str):
        with self.cond:
            assert self.cond.wait_for(lambda: self.get(name) >= at_least, HANG_GUARD), f"a hang: {why}"


def counting(progress: Progress, name: str, fn, n=lambda args, out: 1):
    """fn, counting its calls (or n(args, result)) into progress[name] and where they ran."""
    def wrapped(*args, **kw):
        out = fn(*args, **kw)
        progress.add(name, n(args, out))
        progress.counts.setdefault(name + " threads", set()).add(threading.current_thread().name)
        return out
    return wrapped


class GatedTokenizer(FakeTokenizer):
    """A tokeniser that, inside each call, waits until the other stages have done what they can do
    meanwhile only if they run at the same time as it: read beyond the frames or chunk it holds, and
    write out what came before. Serially they could not (the run would wait forever), so a call made
    in the thread of the stage it waits on fails at once instead."""

    def __init__(self, progress: Progress, chunk: int):
        super().__init__()
        self.progress, self.chunk, self.latents_seen, self.frames_seen = progress, chunk, 0, 0

    def encode(self, frames, state=None):
        assert threading.current_thread() is not threading.main_thread(), "the tokeniser runs in the mask's thread"
        reading = self.progress.counts.get("frames read threads", set())
        assert threading.current_thread().name not in reading, "frames are read in the tokeniser's thread"
        self.frames_seen += len(frames)
        self.progress.wait("frames read", min(self.frames_seen + 1, self.progress.total), "no read-ahead")
        done_chunks = self.latents_seen // self.chunk
        self.progress.wait("records written", done_chunks, "the chunks before were not written meanwhile")
        z, state = super().encode(frames, state)
        self.latents_seen += len(z)
        return z, state

    def decode(self, latents, state=None, uint8=False):
        reading = self.progress.counts.get("chunks read threads", set())
        assert threading.current_thread().name not in reading, "chunks are read in the tokeniser's thread"
        chunk_index = self.latents_seen // self.chunk
        self.progress.wait("chunks read", min(chunk_index + 2, self.progress.chunks), "no read-ahead")
        self.progress.wait("frames written", min(self.frames_seen, self.progress.total), "the frames before were not written meanwhile")
        x, state = super().decode(latents, state, uint8)
        self.latents_seen += len(latents)
        self.frames_seen += len(x)
        return x, state


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_the_stages_run_at_the_same_time_as_the_tokeniser(tmp_path, monkeypatch, command):
    """While the tokeniser is inside a call, the reading stage reads ahead of it and the writing stage
    writes what it finished before: each call waits for those events (a serial program would never
    see them). This is the property that lets the wall time follow the slowest stage, measured in
    `make bench` (docs/BENCHMARKS.md), not here: no test depends on speed."""
    import adaptok_cli.running.pipeline as pipeline
    from adaptok_cli.format.container import AtokReader, AtokWriter
    clip = write_video(tmp_path / "c.mkv", static_frames(41, 480, 854))
    atok = tmp_path / "c.atok"
    chunk = 2
    atk.compress(clip, atok, loaded_tokenizer=FakeTokenizer(), unit="spread", chunk=chunk)
    progress = Progress()
    with AtokReader(atok) as r:
        progress.total, progress.chunks = r.frames, len(r.chunks)
    tok = GatedTokenizer(progress, chunk)
    if command == "compress":
        staged = pipeline.staged
        monkeypatch.setattr(pipeline, "staged", lambda reader, device: map(
            counting(progress, "frames read", lambda f: f), staged(reader, device)))
        monkeypatch.setattr(AtokWriter, "write_record", counting(progress, "records written", AtokWriter.write_record))
        res = atk.compress(clip, tmp_path / "o.atok", loaded_tokenizer=tok, unit="spread", chunk=chunk)
        assert (tmp_path / "o.atok").read_bytes() == atok.read_bytes()      # the gates change no byte
    else:
        monkeypatch.setattr(AtokReader, "read_chunk", counting(progress, "chunks read", AtokReader.read_chunk))
        monkeypatch.setattr(pipeline.VideoWriter, "write", counting(progress, "frames written", pipeline.VideoWriter.write))
        res = atk.decompress(atok, tmp_path / "o.y4m", use_lit=False, loaded_tokenizer=tok)
    assert res.frames == progress.total == 41 and stage_threads() == []
    assert tok.calls >= 4       # enough calls that reading ahead and writing behind both had to happen


class NaNTokenizer(FakeTokenizer):
    """The fake tokeniser gone wrong in the second chunk: NaN latents, as a broken model gives."""

    def encode(self, frames, state=None):
        z, state = super().encode(frames, state)
        return (z * float("nan") if self.calls > 1 else z), state


def test_a_tokeniser_giving_nan_writes_no_file(tmp_path):
    """compress stops with the model's error and leaves nothing behind, not a container that reads as
    corrupt (the writer refuses non-finite values)."""
    from adaptok_cli.errors import ModelUnavailableError
    clip = write_video(tmp_path / "c.mkv", static_frames(17, 96, 128))
    with pytest.raises(ModelUnavailableError, match="non-finite latents"):
        atk.compress(clip, tmp_path / "o.atok", loaded_tokenizer=NaNTokenizer(), unit="spread", chunk=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mkv"]
