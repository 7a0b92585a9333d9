"""The parallel batch's progress (issue 32): workers send their frames to the parent, so the bar of
a `-j 2` batch moves with the frames, not only when a file ends."""
from functools import partial

from adaptok_cli.running import batch
from adaptok_cli.running.options import CompressOptions

from conftest import noise_frames, static_frames, write_video


def test_workers_report_their_frames_to_the_parent(tmp_path, small_tok_path):
    srcs = [write_video(tmp_path / "a.mp4", static_frames(9, 480, 854)),
            write_video(tmp_path / "b.mp4", noise_frames(5, 480, 854))]
    events = []
    opts = CompressOptions(tokenizer=str(small_tok_path), chunk=1).check()
    outcomes = batch.run([(s, s.with_suffix(".atok")) for s in srcs], partial(batch.compress_job, opts, False),
                         workers=2, progress=lambda kind, n=1, total=None, name=None: events.append((kind, n, total, name)))
    assert [o.error for o in outcomes] == [None, None]
    for src, frames in zip(srcs, (9, 5)):
        mine = [e for e in events if e[3] in (src, str(src))]
        assert mine[0][0] == "file" and mine[-1][0] == "files"          # started, frames, ended: in order
        ticks = [e for e in mine if e[0] == "frames"]
        assert ticks[0][1:3] == (0, frames)                              # the total first, from the worker
        assert sum(e[1] for e in ticks) == frames and len(ticks) > 2     # then each chunk as it is done


def test_the_bar_moves_with_the_frames_of_files_in_progress(monkeypatch):
    import io

    from rich.console import Console

    from adaptok_cli.cli import printing as cli
    screen = io.StringIO()
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(cli, "err", Console(file=screen, force_terminal=True, width=160))
    with cli.Reporter(quiet=False, as_json=False).progress("compress", 6) as tick:
        tick("file", name="clips/a.mp4")
        tick("file", name="clips/b.mp4")
        tick("frames", 0, 45, name="clips/a.mp4")
        tick("frames", 0, 30, name="clips/b.mp4")
        tick("frames", 29, name="clips/b.mp4")
        tick("frames", 12, name="clips/a.mp4")
        text = screen.getvalue()
        assert "0/6 files" in text and "clips/a.mp4 12/45, clips/b.mp4 29/30 frames" in text
        tick("files", 1, name="clips/b.mp4")
        assert "1/6 files" in screen.getvalue().split(text)[-1]
