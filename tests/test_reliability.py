"""Hostile files, cut files, signals, full disks, odd inputs, long videos, racing writers."""
import errno
import importlib.util
import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import adaptok_cli as atk
from adaptok_cli import errors
from adaptok_cli.format.container import VERSION, AtokReader, ContainerError
from adaptok_cli.running.video import VideoReader

from conftest import noise_frames, static_frames, write_video
from test_cli import child_env, one_line_error, run
from waiting import HANG_GUARD, Pause

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fuzz_container", ROOT / "tests" / "fuzz_container.py")
fuzz_container = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz_container)
BASES = fuzz_container.base_containers()


# --- hostile and damaged containers -------------------------------------------------------------

@pytest.mark.slow
def test_fuzz_short_run_only_clean_errors():
    """The CI slice of tests/fuzz_container.py (docs/RELIABILITY.md has the 100,000-case run)."""
    stats = fuzz_container.fuzz(1500, seed=0)
    assert stats["crashes"] == [], stats["crashes"][:3]
    assert stats["outcomes"]["clean error"] > 1000
    assert set(stats["kinds"]) == {"bitflip", "bytes", "truncate", "append", "insert", "delete", "header", "index",
                                   "payload"}
    assert set(stats["versions"]) == {5, 6}      # version 6: with the log-variance (compress --store-logvar)


def test_fuzz_shards_short_run():
    """The CI slice of `tests/fuzz_container.py --shards`: mutated tar shards read as verify reads them
    give only clean errors, and the tar reader holds well under a few MB (docs/RELIABILITY.md)."""
    stats = fuzz_container.fuzz_shards(300, seed=0)
    assert stats["crashes"] == [], stats["crashes"][:3]
    assert min(stats["outcomes"].get(k, 0) for k in ("read", "members refused", "shard refused")) > 30
    assert set(stats["kinds"]) == {"members", "header", "pax", "sparse", "bytes", "truncate"}
    assert stats["peak_reader_traced_mb"] < 4


def test_fuzz_audio_short_run():
    """The CI slice of `tests/fuzz_container.py --audio`: hostile audio fields and packets through
    verify's checks and decompress into .mkv/.mp4 give only AdaptokErrors."""
    stats = fuzz_container.fuzz_audio(300, seed=0)
    assert stats["crashes"] == [] and stats["hangs"] == 0, stats["crashes"][:3]
    assert stats["outcomes"]["clean error"] > 100 and stats["outcomes"].get("decoded", 0) > 25
    assert set(stats["kinds"]) == {"header", "packets"}


def test_fuzz_through_decompress_short_run():
    """The CI slice of `tests/fuzz_container.py --decode`: mutants of real containers through the
    whole decompress (built-in tokeniser and LIT); docs/RELIABILITY.md has the 100,000-case run."""
    stats = fuzz_container.fuzz_decode(300, seed=0, case_seconds=HANG_GUARD)   # a hang, not a speed
    assert stats["crashes"] == [] and stats["hangs"] == 0, stats["crashes"][:3]
    assert stats["outcomes"]["clean error"] > 150 and stats["outcomes"].get("decoded", 0) > 10
    assert set(stats["kinds"]) == {"plausible", "payload", "audio", "header", "index", "bitflip", "truncate"}


def original_chunks(data, tmp_path):
    p = tmp_path / "orig.atok"
    p.write_bytes(data)
    with AtokReader(p) as r:
        return r.chunks, [r.read_chunk(i) for i in range(len(r.chunks))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_flipped_bit_is_detected(tmp_path, data):
    base = data.draw(st.sampled_from(BASES))
    pos = data.draw(st.integers(0, len(base) - 1))
    bit = data.draw(st.integers(0, 7))
    b = bytearray(base)
    b[pos] ^= 1 << bit
    p = tmp_path / "flip.atok"
    p.write_bytes(bytes(b))
    with pytest.raises(ContainerError):
        fuzz_container.read_all(p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_cut_anywhere_fails_cleanly_or_recovers_complete_chunks_exactly(tmp_path, data):
    base = data.draw(st.sampled_from(BASES))
    cut = data.draw(st.integers(0, len(base) - 1))
    index, chunks = original_chunks(base, tmp_path)
    p = tmp_path / "cut.atok"
    p.write_bytes(base[:cut])
    with pytest.raises(ContainerError):
        fuzz_container.read_all(p)
    complete = [c for c in index if c[0] + 4 + c[1] <= cut]
    try:
        with AtokReader(p, partial=True) as r:
            assert len(r.chunks) == len(complete) and r.salvaged
            for i in range(len(r.chunks)):
                c = r.read_chunk(i)
                assert torch.equal(c.mask, chunks[i].mask) and torch.equal(c.codes, chunks[i].codes)
    except ContainerError:
        assert not complete or cut < 40   # nothing complete, or the header itself is cut


def test_flipped_bit_names_the_chunk(tmp_path, small_tok_path):
    src = write_video(tmp_path / "a.mkv", noise_frames(17, 32, 32))
    run("compress", src, "-o", tmp_path / "a.atok", "--chunk", "2", "--tokenizer", small_tok_path, "-q")
    with AtokReader(tmp_path / "a.atok") as r:
        off, length = r.chunks[1][:2]
    data = bytearray((tmp_path / "a.atok").read_bytes())
    data[off + 4 + length // 2] ^= 0x04
    (tmp_path / "b.atok").write_bytes(bytes(data))
    p = run("verify", tmp_path / "a.atok", tmp_path / "b.atok", "--json")
    assert p.returncode == errors.EXIT_SOME_FAILED
    recs = {Path(r["file"]).name: r for r in map(json.loads, p.stdout.splitlines())}
    assert recs["a.atok"]["status"] == "ok" and recs["a.atok"]["chunks"] == 3
    assert recs["b.atok"]["status"] == "error" and "chunk 1" in recs["b.atok"]["error"]
    one_line_error(run("verify", tmp_path / "b.atok"), errors.EXIT_BAD_CONTAINER)


def test_decompress_partial_recovers_frames_exactly(tmp_path, small_tok_path):
    src = write_video(tmp_path / "a.mkv", static_frames(33, 32, 48))
    tok = ["--tokenizer", small_tok_path]
    run("compress", src, "-o", tmp_path / "a.atok", "--chunk", "2", *tok, "-q")
    run("decompress", tmp_path / "a.atok", "-o", tmp_path / "full.mkv", *tok, "-q")
    with AtokReader(tmp_path / "a.atok") as r:
        third = r.chunks[2]
    data = (tmp_path / "a.atok").read_bytes()
    (tmp_path / "cut.atok").write_bytes(data[:third[0] + 10])      # cut inside chunk 2
    one_line_error(run("decompress", tmp_path / "cut.atok", "-o", tmp_path / "x.mkv", *tok), errors.EXIT_BAD_CONTAINER)
    assert not (tmp_path / "x.mkv").exists()
    p = run("decompress", tmp_path / "cut.atok", "-o", tmp_path / "part.mkv", "--partial", *tok)
    assert p.returncode == 0 and "recovered 2 complete chunks (13 frames)" in p.stderr
    full = np.stack(list(VideoReader(tmp_path / "full.mkv")))
    part = np.stack(list(VideoReader(tmp_path / "part.mkv")))
    assert len(part) == 13 and np.array_equal(part, full[:13])     # 1 + 4 + 8 frames of 2 + 2 latent frames


# --- interruptions and failing writes -----------------------------------------------------------

def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_compress_and_decompress_leaves_nothing(tmp_path, small_tok_path, sig):
    """A signal while the output is half written (the run stops there: adaptok_cli/running/stages.py)."""
    src = write_video(tmp_path / "long.mkv", noise_frames(41, 192, 256))
    out = tmp_path / "out"
    out.mkdir()
    tok = ["--tokenizer", str(small_tok_path)]
    run("compress", src, "-o", tmp_path / "done.atok", "--chunk", "1", *tok, "-q")
    for k, (args, tmp_glob) in enumerate(((["compress", src, "-o", out / "a.atok", "--chunk", "1"], ".a.atok.*"),
                                          (["decompress", tmp_path / "done.atok", "-o", out / "a.mkv"], ".a.mkv.*"))):
        with Pause(tmp_path / f"pause{k}", "frames") as pause:
            # A shell that starts us in the background (`make test &`) ignores SIGINT, and Python keeps an
            # ignored SIGINT ignored: give the child the default a terminal user has.
            p = subprocess.Popen([sys.executable, "-m", "adaptok_cli", *map(str, args), *tok], env={**child_env(), **pause.env},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            pause.wait(unless=[p])
            assert list(out.glob(tmp_glob)), "stopped with its first frames written, its temporary is there"
            p.send_signal(sig)
            pause.release()
            _, stderr = p.communicate(timeout=HANG_GUARD)
        assert p.returncode == errors.EXIT_INTERRUPTED, stderr
        assert stderr.strip() == "adaptok: interrupted" and "Traceback" not in stderr
        assert list(out.iterdir()) == [], list(out.iterdir())


class FullDisk:
    """A file object that fails like a full disk after `room` bytes."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        if self.room < len(b):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_full_disk_gives_clear_error_and_removes_partial(tmp_path, small_tok_path, monkeypatch):
    from adaptok_cli.running import outputs
    src = write_video(tmp_path / "a.mkv", noise_frames(33, 32, 32))
    real_init = outputs.AtomicOutput.__init__

    def init(self, path, force=False, folder=False):
        real_init(self, path, force, folder)
        self.f = FullDisk(self.f, 3000)
    monkeypatch.setattr(outputs.AtomicOutput, "__init__", init)
    with pytest.raises(errors.WriteError, match="No space left"):
        atk.compress(src, tmp_path / "a.atok", tokenizer=str(small_tok_path), chunk=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mkv"]


# --- inputs from anywhere -----------------------------------------------------------------------

def write_raw(path, frames, codec="ffv1", pix_fmt="yuv420p", rate=25, pts=None, rotation=None, audio=False):
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = frames[0].shape[:2] if frames else (16, 16)
        s.pix_fmt = pix_fmt
        if rotation is not None:
            s.set_display_rotation(rotation)
        if pts is not None:
            s.time_base = Fraction(1, 1000)
        a = c.add_stream("aac", rate=44100) if audio else None
        c.start_encoding()  # the header is written even when no frame follows
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt)
            if pts is not None:
                vf.pts, vf.time_base = pts[i], Fraction(1, 1000)
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
        if a is not None:
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate = 44100
            for pkt in list(a.encode(af)) + list(a.encode()):
                c.mux(pkt)
    return path


def round_trip(tmp_path, src, small_tok_path, *extra):
    tok = ["--tokenizer", small_tok_path]
    p = run("compress", src, "-o", tmp_path / "x.atok", *tok, "-f", "--json", *extra)
    assert p.returncode == 0, p.stderr
    p = run("decompress", tmp_path / "x.atok", "-o", tmp_path / "x.mkv", *tok, "-f", "-q")
    assert p.returncode == 0, p.stderr
    return np.stack(list(VideoReader(tmp_path / "x.mkv")))


def test_not_a_video_and_zero_frames(tmp_path, small_tok_path):
    (tmp_path / "a.mp4").write_text("just text")
    one_line_error(run("compress", tmp_path / "a.mp4", "--tokenizer", small_tok_path), errors.EXIT_BAD_INPUT)
    empty = write_raw(tmp_path / "empty.mkv", [])
    line = one_line_error(run("compress", empty, "--tokenizer", small_tok_path), errors.EXIT_BAD_INPUT)
    assert "no frames" in line and not (tmp_path / "empty.mkv.atok").exists()


@pytest.mark.parametrize("h,w,t", [(1, 1, 3), (16, 4000, 2), (33, 17, 1)])
def test_edge_sizes_round_trip(tmp_path, small_tok_path, h, w, t):
    frames = noise_frames(t, h, w)
    src = write_raw(tmp_path / "in.mkv", frames, pix_fmt="bgr0")
    out = round_trip(tmp_path, src, small_tok_path)
    assert out.shape == (t, h, w, 3)


@pytest.mark.slow
def test_10bit_and_yuv444_inputs(tmp_path, small_tok_path):
    frames = static_frames(9, 32, 48)
    for pix_fmt in ("yuv420p10le", "yuv444p"):
        src = write_raw(tmp_path / f"{pix_fmt}.mkv", frames, pix_fmt=pix_fmt)
        out = round_trip(tmp_path, src, small_tok_path)
        assert out.shape == (9, 32, 48, 3)


def test_variable_frame_rate_keeps_every_frame(tmp_path, small_tok_path):
    pts = [0, 40, 50, 130, 140, 300, 310, 320, 400]
    src = write_raw(tmp_path / "vfr.mkv", static_frames(9, 32, 48), pts=pts)
    out = round_trip(tmp_path, src, small_tok_path)
    assert len(out) == 9


def test_rotation_metadata_is_applied(tmp_path, small_tok_path):
    frames = static_frames(5, 32, 48)
    src = write_raw(tmp_path / "rot.mp4", frames, codec="libx264", rotation=90)
    with VideoReader(src) as r:
        shown = np.stack(list(r))
    assert shown.shape == (5, 48, 32, 3)            # shown upright, as players show it
    assert np.abs(shown[0].astype(int) - np.rot90(frames[0]).astype(int)).mean() < 8
    out = round_trip(tmp_path, src, small_tok_path)
    assert out.shape == (5, 48, 32, 3)


def tone_video(path, seconds=2.0, codec="aac", rate=44100, fps=25, size=(48, 32)):
    """A generated clip with sound: a moving square and a 440 Hz tone in `codec`."""
    w, h = size
    with av.open(str(path), "w") as c:
        v = c.add_stream("ffv1", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = c.add_stream(codec, rate=rate, layout="mono")
        n = int(seconds * fps)
        for i, f in enumerate(static_frames(n, h, w)):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")
            vf.pts = i
            c.mux(v.encode(vf))
        t = np.arange(int(seconds * rate)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        fmt = a.codec_context.format.name
        step = a.codec_context.frame_size or 1024
        for k in range(0, samples.shape[1] - step + 1, step):
            chunk = samples[:, k:k + step]
            if fmt == "s16":
                chunk = (chunk * 32767).astype(np.int16)
            af = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
            af.sample_rate, af.pts = rate, k
            c.mux(a.encode(af))
        c.mux(v.encode(None))
        c.mux(a.encode(None))
    return path


def audio_samples(path):
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray() for f in c.decode(c.streams.audio[0])], axis=1)


@pytest.mark.parametrize("codec,ext", [("aac", ".mkv"), ("aac", ".mp4"), ("pcm_s16le", ".mkv")])
def test_audio_comes_back_sample_for_sample(tmp_path, small_tok_path, codec, ext):
    """The audio stream's packets are stored as they are and muxed back: decoded samples are equal."""
    src = tone_video(tmp_path / "talk.mkv", codec=codec)
    tok = ["--tokenizer", str(small_tok_path)]
    assert run("compress", src, "-o", tmp_path / "t.atok", *tok, "-q").returncode == 0
    info = json.loads(run("inspect", tmp_path / "t.atok", "--json").stdout)
    assert info["audio"]["codec"] == codec and info["audio"]["bytes"] > 0
    assert run("verify", tmp_path / "t.atok").returncode == 0
    out = tmp_path / f"back{ext}"
    p = run("decompress", tmp_path / "t.atok", "-o", out, *tok, "-q")
    assert p.returncode == 0, p.stderr
    assert np.array_equal(audio_samples(out), audio_samples(src))
    assert len(list(VideoReader(out))) == 50


def test_audio_where_it_cannot_go_is_said(tmp_path, small_tok_path):
    src = tone_video(tmp_path / "talk.mkv", codec="pcm_s16le", seconds=0.4)
    tok = ["--tokenizer", str(small_tok_path)]
    assert run("compress", src, "-o", tmp_path / "t.atok", *tok, "-q").returncode == 0
    p = run("decompress", tmp_path / "t.atok", "-o", tmp_path / "v.y4m", *tok)
    assert p.returncode == 0 and "audio is not written" in p.stderr
    line = one_line_error(run("decompress", tmp_path / "t.atok", "-o", tmp_path / "v.mp4", *tok), errors.EXIT_USAGE)
    assert "write .mkv" in line and not (tmp_path / "v.mp4").exists()


@pytest.mark.slow
def test_drop_audio_leaves_the_sound_out(tmp_path, small_tok_path):
    """--drop-audio leaves the sound out: no audio in the header, no audio records, no index entries."""
    src = tone_video(tmp_path / "talk.mkv", seconds=0.4)
    tok = ["--tokenizer", str(small_tok_path)]
    assert run("compress", src, "-o", tmp_path / "t.atok", "--drop-audio", *tok, "-q").returncode == 0
    assert (tmp_path / "t.atok").read_bytes()[8:10] == VERSION.to_bytes(2, "little")
    assert json.loads(run("inspect", tmp_path / "t.atok", "--json").stdout)["audio"] is None
    # without --drop-audio the same output is not up to date: never replaced without -f, redone with it
    one_line_error(run("compress", src, "-o", tmp_path / "t.atok", *tok), errors.EXIT_CANT_CREATE)
    assert run("compress", src, "-o", tmp_path / "t.atok", *tok, "-f", "-q").returncode == 0
    assert json.loads(run("inspect", tmp_path / "t.atok", "--json").stdout)["audio"]["codec"] == "aac"
    p = run("compress", src, "-o", tmp_path / "t.atok", *tok)
    assert p.returncode == 0 and "skipped (up to date)" in p.stderr
    assert round_trip(tmp_path, src, small_tok_path, "--drop-audio").shape == (10, 32, 48, 3)


@pytest.fixture(scope="module")
def talk(tmp_path_factory, small_tok_path):
    """A real container with an AAC track (0.5 s), as bytes."""
    d = tmp_path_factory.mktemp("talk")
    atk.compress(tone_video(d / "talk.mkv", seconds=0.5), d / "t.atok", tokenizer=str(small_tok_path), device="cpu")
    return (d / "t.atok").read_bytes()


def with_audio(data: bytes, **fields) -> bytes:
    """data with header audio fields replaced, all else valid."""
    _, _, _, hlen, _ = fuzz_container.PRELUDE.unpack_from(data)
    h = fuzz_container.msgpack.unpackb(data[fuzz_container.PRELUDE.size:fuzz_container.PRELUDE.size + hlen], raw=False)
    h["audio"].update(fields)
    return fuzz_container.with_header(data, h)


@pytest.mark.parametrize("fields,words", [
    ({"layout": "evil"}, "audio layout 'evil' is not one of FFmpeg's named layouts"),
    ({"layout": "64c"}, "not one of FFmpeg's named layouts"),
    ({"layout": "FL+FL"}, "not one of FFmpeg's named layouts"),        # a custom map: PyAV frees it twice
    ({"layout": "22.2"}, "is not what FFmpeg's aac takes"),
    ({"sample_rate": 7}, "aac audio at 7 Hz"),
    ({"codec": "opus"}, "OpusHead"),
    ({"codec": "flac"}, "audio packet 0 is not flac"),
    ({"codec": "mp3"}, "audio packet 0 is not mp3"),
    ({"time_base_num": 1 << 30}, "over a second")])
def test_audio_descriptions_ffmpeg_would_refuse_are_refused_up_front(tmp_path, talk, small_tok_path, fields, words):
    """Every audio field PyAV is handed is tried as the writer uses it (layout, rate, codec against the
    packets): verify and decompress refuse with 65 naming the input, inspect too for what the header
    alone shows; nothing is written (issue 29: 70 from inside PyAV, or 74 naming a hidden temporary)."""
    bad = tmp_path / "bad.atok"
    bad.write_bytes(with_audio(talk, **fields))
    assert words in one_line_error(run("verify", bad), errors.EXIT_BAD_CONTAINER)
    if "audio packet" not in words:         # inspect reads the header, not the packets
        assert words in one_line_error(run("inspect", bad), errors.EXIT_BAD_CONTAINER)
    for ext in (".mkv", ".mp4"):
        line = one_line_error(run("decompress", bad, "-o", tmp_path / f"o{ext}", "--tokenizer", small_tok_path),
                              errors.EXIT_BAD_CONTAINER)
        assert line.startswith(f"adaptok: {bad}:") and words in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.atok"]


def test_hostile_audio_timestamps_are_the_containers_fault(tmp_path, talk, small_tok_path):
    """Timestamps out of range are refused by the reader; in range but out of order, by the muxer: both
    65 naming the input, not 74 naming the temporary file."""
    packets = fuzz_container.audio_record(talk, 0)
    far = [list(p) for p in packets]
    far[2][0] = far[2][1] = 1 << 60
    (tmp_path / "far.atok").write_bytes(fuzz_container.with_audio_record(talk, 0, far))
    assert "audio record 0 packets" in one_line_error(run("verify", tmp_path / "far.atok"), errors.EXIT_BAD_CONTAINER)
    back = [list(p) for p in packets]
    back[3][0] = back[3][1] = back[1][1]            # dts goes back: a muxer cannot take it
    (tmp_path / "back.atok").write_bytes(fuzz_container.with_audio_record(talk, 0, back))
    assert run("verify", tmp_path / "back.atok").returncode == 0          # the file itself is well formed
    for ext in (".mkv", ".mp4"):
        line = one_line_error(run("decompress", tmp_path / "back.atok", "-o", tmp_path / f"o{ext}", "--tokenizer",
                                  small_tok_path), errors.EXIT_BAD_CONTAINER)
        assert line.startswith(f"adaptok: {tmp_path / 'back.atok'}: corrupt container (audio packet") and ".tmp" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.atok", "far.atok"]


def test_an_audio_record_holds_one_zstd_frame(tmp_path, talk, small_tok_path):
    """A second zstd frame after an audio record's own (checksums valid) is refused, not ignored, as
    in a chunk record (FORMAT.md: one frame)."""
    second = fuzz_container.zstandard.ZstdCompressor(write_checksum=True).compress(b"hidden" * 10)
    bad = tmp_path / "two.atok"
    bad.write_bytes(fuzz_container.with_audio_record(talk, 0, fuzz_container.audio_record(talk, 0), extra=second))
    assert "unused data" in one_line_error(run("verify", bad), errors.EXIT_BAD_CONTAINER)
    line = one_line_error(run("decompress", bad, "-o", tmp_path / "o.mkv", "--tokenizer", small_tok_path),
                          errors.EXIT_BAD_CONTAINER)
    assert line.startswith(f"adaptok: {bad}:") and "unused data" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.atok"]


def test_a_bad_file_in_a_folder_does_not_end_the_batch(tmp_path, talk, small_tok_path):
    """decompress DIR/ -o out/: the file with a hostile layout fails, the ones after it are decoded."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.atok").write_bytes(with_audio(talk, layout="evil"))
    (tmp_path / "in" / "b.atok").write_bytes(talk)
    p = run("decompress", tmp_path / "in", "-o", tmp_path / "out/", "--tokenizer", small_tok_path, "--codec", "ffv1",
            "-j", "1")
    assert p.returncode == errors.EXIT_SOME_FAILED and "a.atok: corrupt container (audio layout" in p.stderr
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["b.decoded.mkv"]


# --- weights ------------------------------------------------------------------------------------

def test_pickle_weights_are_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "evil.safetensors").write_bytes((tmp_path / "evil.pt").read_bytes())
    for name in ("evil.pt", "evil.safetensors"):
        p = run("compress", ROOT / "sample_videos" / "static_ball.mp4", "-o", tmp_path / "o.atok",
                "--tokenizer", tmp_path / name)
        assert p.returncode == errors.EXIT_UNAVAILABLE
    assert not marker.exists()


# --- long videos and racing writers -------------------------------------------------------------

def peak_rss_kb(*args):
    p = subprocess.run([sys.executable, ROOT / "tests" / "peak_rss.py", *map(str, args)], capture_output=True,
                       text=True, env=child_env(), timeout=HANG_GUARD)
    assert p.returncode == 0, p.stderr
    return int(p.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_memory_is_flat_in_video_length(tmp_path, small_tok_path):
    """300 frames of 480p (a buffered pipeline would hold ~280 MB more) against 30 frames."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for n in (30, 300):
        with av.open(str(tmp_path / f"v{n}.mp4"), "w") as c:
            s = c.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
            s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
            for i in range(n):
                for pkt in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 3 * i, 1), format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
    rss = {}
    for n in (30, 300):
        c = peak_rss_kb("compress", tmp_path / f"v{n}.mp4", "--tokenizer", small_tok_path, "-q")
        d = peak_rss_kb("decompress", tmp_path / f"v{n}.mp4.atok", "--tokenizer", small_tok_path, "-q",
                        "-o", tmp_path / f"o{n}.mkv")
        rss[n] = (c, d)
    assert rss[300][0] < 1.5 * rss[30][0] and rss[300][1] < 1.5 * rss[30][1], rss


def test_two_writers_of_one_output_never_corrupt_it(tmp_path, small_tok_path):
    a = write_video(tmp_path / "a.mkv", static_frames(33, 32, 48))
    b = write_video(tmp_path / "b.mkv", noise_frames(33, 32, 48))
    procs = [subprocess.Popen([sys.executable, "-m", "adaptok_cli", "compress", str(src), "-o",
                               str(tmp_path / "same.atok"), "-f", "-q", "--tokenizer", str(small_tok_path)],
                              env=child_env(), stderr=subprocess.PIPE, text=True) for src in (a, b)]
    codes = []
    for p in procs:
        _, stderr = p.communicate(timeout=HANG_GUARD)
        codes.append(p.returncode)
        # the later writer is refused while the first holds the output (or both run, one after the other)
        assert p.returncode == 0 or (p.returncode == errors.EXIT_CANT_CREATE and "another adaptok process" in stderr)
    assert 0 in codes
    assert run("verify", tmp_path / "same.atok").returncode == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
