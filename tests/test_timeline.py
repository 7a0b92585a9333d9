"""compress's frame range and rate (--start, --duration, --frames, --fps) and --short-side: the frames
kept, the header that records them, the up-to-date check and the audio cut."""
import json
from fractions import Fraction

import av
import numpy as np
import pytest

import adaptok_cli as atk
from adaptok_cli.format.container import AtokReader
from adaptok_cli.errors import ContainerError, InputError, UsageError
from adaptok_cli.running.options import CompressOptions
from adaptok_cli.running.timeline import Timeline
from adaptok_cli.running.video import VideoReader
from conftest import write_video
from test_cli import one_line_error, run
from test_security import forge

FPS30 = Fraction(30)


def kept(timeline, n=30, fps=FPS30):
    """Indices select() keeps from n frames at fps."""
    return list(timeline.select(((i / float(fps), i) for i in range(n)), fps))


def test_ranges_and_rates_pick_the_frames_on_screen():
    assert kept(Timeline(start=0.5)) == list(range(15, 30))
    assert kept(Timeline(start=0.5, duration=0.2)) == [15, 16, 17, 18, 19, 20]
    assert kept(Timeline(duration=0.2, frames=3)) == [0, 1, 2]
    assert kept(Timeline(fps=Fraction(15))) == list(range(0, 30, 2))                # dropped
    assert kept(Timeline(fps=Fraction(60), frames=6)) == [0, 0, 1, 1, 2, 2]         # repeated
    assert kept(Timeline(start=0.1, fps=Fraction(10))) == [3, 6, 9, 12, 15, 18, 21, 24, 27]
    # 0.2 s at 24 frames/s: at 0.125 s frame 4 (0.133 s) is within a quarter of a frame, so it counts as shown
    assert kept(Timeline(fps=Fraction(24)), n=6) == [0, 1, 2, 4, 5]
    assert kept(Timeline(start=2.0)) == []
    for t in (Timeline(start=0.5), Timeline(start=0.1, fps=Fraction(10)), Timeline(fps=Fraction(60), duration=0.25)):
        assert t.estimate(30, FPS30) == len(kept(t))


@pytest.fixture(scope="module")
def counting(tmp_path_factory):
    """854x480, 30 frames at 30 frames/s, frame i a flat grey of 8 i (lossless FFV1)."""
    path = tmp_path_factory.mktemp("timeline") / "count.mkv"
    return write_video(path, [np.full((480, 854, 3), 8 * i, np.uint8) for i in range(30)], fps=FPS30)


def test_the_reader_keeps_the_range_at_the_rate_asked(counting):
    with VideoReader(counting, timeline=Timeline(start=0.5, fps=Fraction(15), frames=5)) as r:
        assert r.info.fps == 15 and r.info.frames == 5
        greys = [round(int(f[0, 0, 0]) / 8) for f in r]        # YUV 4:2:0 moves a grey by 1 at most
    assert greys == [15, 17, 19, 21, 23]


def test_options_are_checked():
    for bad in (dict(start=-1.0), dict(duration=0.0), dict(frames=0), dict(fps="fast"), dict(fps=0),
                dict(fps=5000), dict(short_side=240, max_side=320), dict(start=float("nan"))):
        with pytest.raises(UsageError):
            CompressOptions(**bad).check()
    assert CompressOptions(fps="30000/1001").check().fps == Fraction(30000, 1001)


def test_compress_records_the_range_and_a_changed_one_is_stale(tmp_path, counting, small_tok_path):
    out, tok = tmp_path / "c.atok", str(small_tok_path)
    args = ["compress", counting, "-o", out, "--tokenizer", tok, "--start", "0.5", "--duration", "0.4",
            "--fps", "15", "--short-side", "240", "--json"]
    p = run(*args)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert (res["frames"], res["fps"], res["width"], res["height"]) == (6, 15.0, 427, 240)
    with AtokReader(out) as r:
        h = r.header
    assert (h["start"], h["duration"], h["resample_fps"], h["short_side"]) == (0.5, 0.4, [15, 1], 240)
    assert "frame_limit" not in h and (h["fps_num"], h["fps_den"]) == (15, 1)
    p = run(*args)
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "skipped"         # same range: up to date
    line = one_line_error(run(*args[:-1], "--frames", "3"), 73)                         # another range: stale
    assert "already exists, made with other settings: frame_limit None (asked: 3) (use -f" in line
    atk.compress(counting, tmp_path / "plain.atok", tokenizer=tok, chunk=2)
    with AtokReader(tmp_path / "plain.atok") as r:
        assert not {"start", "duration", "frame_limit", "resample_fps"} & set(r.header)   # only when asked
    res = atk.compress(counting, tmp_path / "api.atok", tokenizer=tok, frames=4, start=0.9)   # the last 0.1 s
    assert res.frames == 3
    with pytest.raises(InputError, match="no frames in the range"):
        atk.compress(counting, tmp_path / "none.atok", tokenizer=tok, start=1.5)
    assert not (tmp_path / "none.atok").exists()


def test_hostile_range_fields_are_refused(tmp_path, counting, small_tok_path):
    src = tmp_path / "c.atok"
    atk.compress(counting, src, tokenizer=str(small_tok_path), fps=15, frames=2)
    with AtokReader(src) as r:
        assert r.header["resample_fps"] == [15, 1] and r.header["frame_limit"] == 2
    for i, fields in enumerate((dict(resample_fps=[30, 1]), dict(resample_fps=[15]), dict(start=-1.0),
                                dict(duration=float("inf")), dict(frame_limit=0), dict(start="0"))):
        with pytest.raises(ContainerError):
            AtokReader(forge(src, tmp_path / f"b{i}.atok", **fields))


def test_the_audio_is_cut_to_the_range(tmp_path, small_tok_path):
    from test_reliability import tone_video
    src = tone_video(tmp_path / "talk.mkv", seconds=2.0, codec="pcm_s16le", rate=8000)
    with av.open(str(src)) as c:
        whole = sum(p.size for p in c.demux(c.streams.audio[0]) if p.size)
    atk.compress(src, tmp_path / "t.atok", tokenizer=str(small_tok_path), start=0.5, duration=1.0)
    with AtokReader(tmp_path / "t.atok") as r:
        packets = list(r.iter_audio())
        tb = Fraction(r.header["audio"]["time_base_num"], r.header["audio"]["time_base_den"])
    assert abs(float(packets[0][0] * tb)) < 0.15                   # the range starts at 0
    cut = sum(len(p[4]) for p in packets)
    assert 0.4 * whole <= cut <= 0.6 * whole                      # 1 s of 2, to a packet's length
