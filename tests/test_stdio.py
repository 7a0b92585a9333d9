"""Where outputs go (issue 32): `-` is standard output where the format streams and a usage error
where it cannot, a file output's folder must exist, an extension that disagrees with what a command
writes is a usage error; and a closed pipe ends every command quietly with 141."""
import os
import subprocess
import sys

import pytest

from adaptok_cli import errors

from conftest import static_frames, write_video
from test_cli import child_env, one_line_error, run


@pytest.fixture(scope="module")
def clip(tmp_path_factory, small_tok_path):
    """A 854x480 clip (the size users use) and its container, made by the tiny test tokeniser."""
    d = tmp_path_factory.mktemp("stdio")
    src = write_video(d / "clip.mp4", static_frames(9, 480, 854))
    p = run("compress", src, "-o", d / "clip.atok", "--tokenizer", small_tok_path, "-q")
    assert p.returncode == 0, p.stderr
    return src, d / "clip.atok"


def run_bytes(*args):
    p = subprocess.run([sys.executable, "-m", "adaptok_cli", *map(str, args)], capture_output=True, env=child_env(),
                       timeout=300)
    assert b"Traceback" not in p.stderr, p.stderr
    return p


def test_compress_to_stdout_streams_the_same_container(tmp_path, clip, small_tok_path):
    src, atok = clip
    p = run_bytes("compress", src, "-o", "-", "--tokenizer", small_tok_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == atok.read_bytes()                  # byte for byte what -o FILE writes
    assert b" -> -: 9 frames" in p.stderr                 # the summary moves to stderr
    assert not os.path.exists("-")


def test_decompress_to_stdout_streams_y4m(tmp_path, clip, small_tok_path):
    _, atok = clip
    p = run_bytes("decompress", atok, "-o", "-", "--tokenizer", small_tok_path, "--no-lit", "-q")
    assert p.returncode == 0, p.stderr
    assert run("decompress", atok, "-o", tmp_path / "x.y4m", "--tokenizer", small_tok_path, "--no-lit",
               "-q").returncode == 0
    assert p.stdout.startswith(b"YUV4MPEG2 W854 H480 ") and p.stdout == (tmp_path / "x.y4m").read_bytes()


@pytest.mark.parametrize("args", [
    ["compress", "{src}", "-o", "-", "--json", "--tokenizer", "{tok}"],            # stdout is taken by the container
    ["compress", "{src}", "-o", "-", "--csv", "--tokenizer", "{tok}"],
    ["compress", "{src}", "{src}", "-o", "-", "--tokenizer", "{tok}"],              # one stream, one input
    ["compress", "{src}", "-o", "-", "--shard-size", "1", "--tokenizer", "{tok}"],
    ["compress", "{src}", "-o", "-", "--ray", "--tokenizer", "{tok}"],
    ["compress", "{src}", "-o", "{tmp}/bear.mp4", "--tokenizer", "{tok}"],          # compress writes .atok
    ["compress", "-", "-o", "{tmp}/x.atok", "--tokenizer", "{tok}"],                # stdin is never read
    ["inspect", "-"],
    ["verify", "-"],
    ["decompress", "-", "-o", "{tmp}/x.mkv", "--tokenizer", "{tok}"],
    ["decompress", "{atok}", "-o", "-", "--codec", "x264", "--tokenizer", "{tok}"],  # mp4 and mkv need seeking
    ["decompress", "{atok}", "-o", "{tmp}/x.avi", "--tokenizer", "{tok}"],
    ["inspect", "{atok}", "--plot", "-"],                   # stdout carries the report
    ["inspect", "{atok}", "--plot", "{tmp}/x.jpg"],
    ["calibrate", "{src}", "-o", "{tmp}/cal.pt", "--tokenizer", "{tok}"],           # a calibration is a .safetensors file
])
def test_unusable_outputs_are_usage_errors(tmp_path, clip, small_tok_path, args):
    src, atok = clip
    one_line_error(run(*[a.format(src=src, atok=atok, tmp=tmp_path, tok=small_tok_path) for a in args]),
                   errors.EXIT_USAGE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["compress", "{src}", "-o", "{tmp}/no/such/x.atok", "--tokenizer", "{tok}", "--tokenizer", "{tok}"],
    ["decompress", "{atok}", "-o", "{tmp}/no/such/x.mkv", "--tokenizer", "{tok}", "--tokenizer", "{tok}"],
    ["inspect", "{atok}", "--plot", "{tmp}/no/such/x.png"],
    ["calibrate", "{src}", "-o", "{tmp}/no/such/cal.safetensors", "--tokenizer", "{tok}", "--tokenizer", "{tok}"],
])
def test_a_file_output_needs_its_folder(tmp_path, clip, small_tok_path, args):
    src, atok = clip
    args = [a.format(src=src, atok=atok, tmp=tmp_path, tok=small_tok_path) for a in args]
    line = one_line_error(run(*args), errors.EXIT_CANT_CREATE)
    assert "no folder" in line
    assert list(tmp_path.iterdir()) == []                  # nothing created on the way


def test_a_folder_output_is_made(tmp_path, clip, small_tok_path):
    src, atok = clip
    assert run("compress", src, "-o", f"{tmp_path}/new/deeper/", "--tokenizer", small_tok_path, "-q").returncode == 0
    assert (tmp_path / "new" / "deeper" / "clip.mp4.atok").read_bytes() == atok.read_bytes()


def test_a_file_named_dash_is_reached_as_dot_slash_dash(tmp_path, clip):
    _, atok = clip
    (tmp_path / "-").write_bytes(atok.read_bytes())
    p = run("inspect", "./-", "--json", cwd=tmp_path)
    assert p.returncode == 0 and '"frames": 9' in p.stdout, p.stderr


def test_plots_of_a_tree_mirror_it_and_never_collide(tmp_path, clip):
    """inspect --plot DIR/ mirrors the input tree as compress does; two inputs that would write one
    PNG are refused before anything is written (they used to overwrite each other)."""
    pytest.importorskip("matplotlib")
    _, atok = clip
    for sub in ("a", "b"):
        (tmp_path / "dup" / sub).mkdir(parents=True)
        (tmp_path / "dup" / sub / "x.atok").write_bytes(atok.read_bytes())
    p = run("inspect", tmp_path / "dup", "--plot", f"{tmp_path}/plots/")
    assert p.returncode == 0, p.stderr
    assert sorted(f.relative_to(tmp_path / "plots").as_posix() for f in (tmp_path / "plots").rglob("*.png")) == \
        ["a/x.atok.png", "b/x.atok.png"]
    line = one_line_error(run("inspect", tmp_path / "dup" / "a" / "x.atok", tmp_path / "dup" / "b" / "x.atok",
                              "--plot", f"{tmp_path}/again/"), errors.EXIT_USAGE)
    assert "would both be written" in line and not (tmp_path / "again").exists()


CLOSED_PIPE_COMMANDS = [
    ["inspect", "{atok}"], ["inspect", "{atok}", "--json"], ["inspect", "{atok}", "{atok}", "--chunks"],
    ["verify", "{atok}"], ["verify", "{atok}", "--json"],
    ["compress", "{src}", "-o", "{tmp}/x.atok", "--tokenizer", "{tok}"],
    ["compress", "{src}", "-o", "{tmp}/x.atok", "--tokenizer", "{tok}", "--csv"],
    ["compress", "{src}", "-o", "-", "--tokenizer", "{tok}"],
    ["decompress", "{atok}", "-o", "{tmp}/x.mkv", "--tokenizer", "{tok}", "--no-lit", "--json"],
    ["decompress", "{atok}", "-o", "-", "--tokenizer", "{tok}", "--no-lit"],
    ["eval", "{small}", "--tokenizer", "{tok}", "--no-lit"],      # small: what matters here is the pipe
    ["calibrate", "{small}", "-o", "{tmp}/cal.safetensors", "--tokenizer", "{tok}", "--json", "--short-side", "0"],
    ["completion", "bash"], ["--help"], ["inspect", "--help"], ["--version"],
]


@pytest.mark.parametrize("args", CLOSED_PIPE_COMMANDS, ids=lambda a: " ".join(a[:1] + [x for x in a[1:] if x.startswith("-")]))
def test_a_closed_pipe_ends_every_command_quietly(tmp_path, clip, small_tok_path, args):
    """stdout's reader is gone before the command writes (the read end is closed before it starts, so
    this does not depend on timing): exit 141 and nothing on stderr, as a tool stopped by SIGPIPE."""
    src, atok = clip
    small = write_video(tmp_path / "small.mp4", static_frames(5, 32, 48))
    read, write = os.pipe()
    os.close(read)
    try:
        p = subprocess.run([sys.executable, "-m", "adaptok_cli",
                            *[a.format(src=src, atok=atok, tmp=tmp_path, tok=small_tok_path, small=small) for a in args]],
                           stdout=write, stderr=subprocess.PIPE, text=True, env=child_env(), timeout=300)
    finally:
        os.close(write)
    assert (p.returncode, p.stderr) == (errors.EXIT_PIPE, "")


def test_inspect_into_head(clip):
    """The issue's case, through a real `| head -1`: one line, nothing on stderr, and 141 when the
    pipe closed before inspect was done (0 when it had written everything by then); it was 1."""
    _, atok = clip
    p = subprocess.run(f"{sys.executable} -m adaptok_cli inspect {atok} --chunks | head -1; "
                       f"echo \"status ${{PIPESTATUS[0]}}\" >&2", shell=True, executable="/bin/bash",
                       capture_output=True, text=True, env=child_env(), timeout=120)
    assert len(p.stdout.splitlines()) == 1 and p.stdout.startswith(str(atok))
    assert p.stderr in (f"status {errors.EXIT_PIPE}\n", "status 0\n"), p.stderr
