"""What a new user trips over (issue 16): one -o rule, values that make no sense, ordinary situations
that are not bugs, eval's sizes and messages, completion, plots, summaries, start-up."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adaptok_cli import errors

from conftest import noise_frames, static_frames, write_video
from test_cli import child_env, one_line_error, run
from waiting import HANG_GUARD


@pytest.fixture(scope="module")
def work(tmp_path_factory, small_tok_path):
    d = tmp_path_factory.mktemp("newuser")
    write_video(d / "one.mp4", static_frames(9, 32, 48))
    p = run("compress", d / "one.mp4", "-o", d / "one.atok", "--tokenizer", small_tok_path, "-q")
    assert p.returncode == 0, p.stderr
    return d


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*"))


@pytest.mark.parametrize("output,codec,expect", [
    ("newdir/", None, ["newdir", "newdir/one.decoded.mp4"]),          # trailing slash: a folder, even a new one
    ("v.mp4", None, ["v.mp4"]),
    ("v.mkv", None, ["v.mkv"]),
    ("v.y4m", None, ["v.y4m"]),
    ("frames", None, ["frames", "frames/000000.png"]),                 # no extension: a folder of frames
    ("frames", "png", ["frames", "frames/000000.png"]),
    ("out/", "png", ["out", "out/one.decoded", "out/one.decoded/000000.png"]),
    ("out/", "ffv1", ["out", "out/one.decoded.mkv"]),
    ("v.mkv", "ffv1", ["v.mkv"]),
    ("v.mp4", "x264", ["v.mp4"]),
])
def test_one_output_rule_for_decompress(tmp_path, work, small_tok_path, output, codec, expect):
    args = ["decompress", work / "one.atok", "-o", f"{tmp_path}/{output}", "--tokenizer", small_tok_path, "-q"]
    p = run(*args, *(["--codec", codec] if codec else []), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    frames = [e for e in listing(tmp_path) if e.endswith(".png")]
    assert len(frames) in (0, 9)                        # all 9 frames, or no frame folder
    assert [e for e in listing(tmp_path) if not e.endswith(".png") or e.endswith("000000.png")] == expect


@pytest.mark.parametrize("output,codec", [("v.mp4", "png"), ("cup.mp4", "ffv1"), ("v.mkv", "x264"), ("v.avi", None)])
def test_extension_that_disagrees_with_codec_is_a_usage_error(tmp_path, work, small_tok_path, output, codec):
    p = run("decompress", work / "one.atok", "-o", tmp_path / output, "--tokenizer", small_tok_path,
            *(["--codec", codec] if codec else []))
    one_line_error(p, errors.EXIT_USAGE)
    assert list(tmp_path.iterdir()) == []


def test_one_output_rule_for_compress(tmp_path, work, small_tok_path):
    src = work / "one.mp4"
    assert run("compress", src, "-o", str(tmp_path / "newdir") + "/", "--tokenizer", small_tok_path, "-q").returncode == 0
    assert run("compress", src, "-o", tmp_path / "file.atok", "--tokenizer", small_tok_path, "-q").returncode == 0
    (tmp_path / "existing").mkdir()
    assert run("compress", src, "-o", tmp_path / "existing", "--tokenizer", small_tok_path, "-q").returncode == 0
    assert listing(tmp_path) == ["existing", "existing/one.mp4.atok", "file.atok", "newdir", "newdir/one.mp4.atok"]


@pytest.mark.parametrize("args", [["-t", "-1"], ["-t", "nan"], ["-t", "1e9"], ["-j", "0"], ["-j", "-2"],
                                  ["--max-side", "7"], ["--json", "--csv"], ["--device", "tpu"], ["-r", "1.5"],
                                  ["-t", "0.2", "-r", "0.5"], ["--chunk", "0"]])
def test_values_that_make_no_sense_are_usage_errors(tmp_path, work, args):
    one_line_error(run("compress", work / "one.mp4", "-o", tmp_path / "x.atok", *args), errors.EXIT_USAGE)
    assert not (tmp_path / "x.atok").exists()


@pytest.mark.parametrize("args", [["--crf", "-5"], ["--crf", "52"], ["--device", "tpu"], ["-j", "0"]])
def test_bad_decompress_values_are_usage_errors(tmp_path, work, args):
    one_line_error(run("decompress", work / "one.atok", "-o", tmp_path / "x.mkv", *args), errors.EXIT_USAGE)


def test_closed_pipe_ends_quietly(tmp_path, work):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1000):      # more output than a pipe buffer holds, so the writer must meet the closed end
        (folder / f"{i:04d}.atok").write_bytes((work / "one.atok").read_bytes())
    for cmd in (["verify", folder], ["inspect", folder, "--json"]):
        p = subprocess.run(f"{sys.executable} -m adaptok_cli {' '.join(map(str, cmd))} | head -1", shell=True,
                           capture_output=True, text=True, env=child_env(), timeout=HANG_GUARD)
        assert len(p.stdout.splitlines()) == 1 and p.stderr == "", (cmd, p.stderr)
    # the exit status itself: close the read end after one line
    proc = subprocess.Popen([sys.executable, "-m", "adaptok_cli", "verify", str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env())
    proc.stdout.readline()
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == errors.EXIT_PIPE and stderr == b""


@pytest.mark.slow
def test_eval_never_upscales_and_says_what_it_measured(tmp_path, small_tok_path):
    small = write_video(tmp_path / "small.mkv", noise_frames(5, 40, 56))
    p = run("eval", small, "--tokenizer", small_tok_path, "--json")
    clip = json.loads(p.stdout.splitlines()[0])
    assert (clip["width"], clip["height"]) == (56, 40)              # native by default
    p = run("eval", small, "--tokenizer", small_tok_path, "--json", "--short-side", "256")
    assert json.loads(p.stdout.splitlines()[0])["width"] == 56       # never upscaled
    p = run("eval", small, "--tokenizer", small_tok_path, "--json", "--short-side", "20")
    assert json.loads(p.stdout.splitlines()[0])["height"] == 20      # shrunk when asked
    p = run("eval", small, "--tokenizer", small_tok_path, "--no-lit")
    assert "56x40" in p.stdout and "--no-lit" in p.stderr and "no trained LIT" not in p.stderr
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(3000))
    one_line_error(run("eval", bad, "--tokenizer", small_tok_path), errors.EXIT_BAD_INPUT)


def test_completion_offers_values(tmp_path):
    for words, cword, want in (("adaptok inspect --sort ", "3", {"name", "rate", "bpp", "bytes", "frames"}),
                               ("adaptok decompress x.atok --codec ", "4", {"x264", "ffv1", "y4m", "png"}),
                               ("adaptok compress x.mp4 --unit ", "4", {"decoder", "spread"}),
                               ("adaptok compress x.mp4 --quant ", "4", {"int8", "fp16"}),
                               ("adaptok eval x.mp4 --device ", "4", {"auto", "cpu", "cuda"}),
                               ("adaptok calibrate x.mp4 --device c", "4", {"cpu", "cuda"})):
        p = subprocess.run([sys.executable, "-m", "adaptok_cli"], capture_output=True, text=True, timeout=HANG_GUARD,
                           env={**child_env(), "_ADAPTOK_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword})
        assert set(p.stdout.split()) == want, p.stdout


def test_man_page_names_the_environment():
    page = (Path(__file__).resolve().parent.parent / "man" / "adaptok.1").read_text()
    env = page.split(".SH ENVIRONMENT")[1].split(".SH ")[0]
    for name in ("ADAPTOK_CACHE", "ADAPTOK_DEBUG", "OMP_WAIT_POLICY"):
        assert name in env


def test_help_starts_fast_without_torch():
    """--help, --version and inspect's help never import torch (timing is a benchmark, not a test:
    measured 0.4-0.65 s for `adaptok --help` on the 2-core machine)."""
    code = ("import sys\nfrom adaptok_cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    for args in (["--help"], ["inspect", "--help"], ["--version"], ["compress", "--help"]):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=child_env(), timeout=HANG_GUARD)
        assert p.stderr.strip().endswith("no torch"), (args, p.stderr)


def test_inspect_plot_rule_and_folder_totals(tmp_path, work):
    pytest.importorskip("matplotlib")
    folder = tmp_path / "many"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.atok").write_bytes((work / "one.atok").read_bytes())
    for name in ("many.png", "many.txt"):      # several files need a folder: never one named like a file
        one_line_error(run("inspect", folder, "--plot", tmp_path / name), errors.EXIT_USAGE)
        assert not (tmp_path / name).exists()
    one_line_error(run("inspect", folder / "a.atok", "--plot", tmp_path / "one.txt"), errors.EXIT_USAGE)
    p = run("inspect", folder, "--plot", tmp_path / "plots")
    assert p.returncode == 0 and sorted(f.name for f in (tmp_path / "plots").iterdir()) == ["a.atok.png", "b.atok.png"]
    assert "wrote" in p.stderr and "a.atok.png" in p.stderr
    assert "total:" in p.stdout and "frames" in p.stdout


def test_all_skipped_says_so(tmp_path, work, small_tok_path):
    src = tmp_path / "in"
    src.mkdir()
    for n in ("a", "b"):
        write_video(src / f"{n}.mkv", noise_frames(3, 16, 16))
    assert run("compress", src, "--tokenizer", small_tok_path, "-q").returncode == 0
    p = run("compress", src, "--tokenizer", small_tok_path)
    assert p.returncode == 0 and "all 2 up to date" in p.stderr and p.stdout == ""


def test_progress_shows_frames_of_total_and_the_current_file(monkeypatch):
    import io

    from rich.console import Console

    from adaptok_cli.cli import printing as cli
    screen = io.StringIO()
    monkeypatch.setenv("TERM", "xterm")        # scripts/make_man.py, imported by another test, sets TERM=dumb
    monkeypatch.setattr(cli, "err", Console(file=screen, force_terminal=True, width=120))
    rep = cli.Reporter(quiet=False, as_json=False)
    with rep.progress("compress", 1) as tick:
        tick("file", name="clips/a-rather-long-folder-name/with/more/levels/one.mp4")
        tick("frames", 0, total=45)
        tick("frames", 29)                                # each tick redraws the bar (refresh=True): no waiting
    text = screen.getvalue()
    assert "29/45 frames" in text and "one.mp4" in text
    screen.seek(0), screen.truncate()
    with rep.progress("compress", 3) as tick:
        tick("file", name="b.mp4")
        tick("frames", 0, total=10)
        tick("frames", 4)
        tick("files", 1)
    text = screen.getvalue()
    assert "1/3 files" in text and "b.mp4 4/10 frames" in text


def test_summary_at_80_columns_keeps_paths_apart(monkeypatch, capsys):
    import io

    from rich.console import Console

    from adaptok_cli.running import batch, pipeline
    from adaptok_cli.cli import printing as cli
    screen = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=screen, force_terminal=True, width=80, color_system=None))
    names = [f"/data/some/very/long/folder/name/for/clips/camera-{i}/clip.mp4" for i in range(2)]
    outcomes = [batch.Outcome(Path(n), Path(n + ".atok"), pipeline.Result(n, n + ".atok", frames=9, width=48, height=32,
                                                                        tokens_kept=5, tokens_total=10))
                for n in names]
    cli.summary_table(outcomes, "compress")
    rows = [line.split("│") for line in screen.getvalue().splitlines() if line.startswith("│")]
    first_column = "".join(r[1].strip() for r in rows)
    assert all(n in first_column for n in names), screen.getvalue()   # folded onto more lines, never cut
    assert "…" not in screen.getvalue()


def test_docs_make_sense_without_the_workspace():
    root = Path(__file__).resolve().parents[1]
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "man" / "adaptok.1"]:
        assert "../shared" not in doc.read_text(), doc
    man = (root / "man" / "adaptok.1").read_text()
    assert all(f".SH {s}" in man for s in ("EXAMPLES", "ENVIRONMENT", "EXIT STATUS"))
    codes = [int(line[3:-3]) for line in man.split(".SH EXIT STATUS")[1].split(".SH")[0].splitlines()
             if line.startswith("\\fB")]
    assert codes == sorted(codes) and 141 in codes
