"""A cache's manifest (issue 32): inspect --csv with --json's per-clip fields, --where filters read by a
tiny parser (never evaluated), -q, and skipped rows of compress/decompress that carry the figures of
the output they kept."""
import csv
import io
import json
from pathlib import Path

import pytest

from adaptok_cli import errors
from adaptok_cli.errors import UsageError
from adaptok_cli.measure.manifest import CSV_COLUMNS, Clause, matches, parse_where

from conftest import noise_frames, static_frames, write_video
from test_cli import one_line_error, run


def test_where_clauses_are_parsed_never_evaluated():
    assert parse_where(["token_rate<0.3"]) == [Clause("token_rate", "<", 0.3)]
    assert parse_where([" frames >= 45 , bpp!=1e-2", "width=854"]) == [
        Clause("frames", ">=", 45.0), Clause("bpp", "!=", 0.01), Clause("width", "=", 854.0)]
    info = {"token_rate": 0.25, "frames": 45, "threshold": None}
    assert matches(info, parse_where(["token_rate<0.3", "frames==45"]))
    assert not matches(info, parse_where(["token_rate>.3"]))
    assert not matches(info, parse_where(["threshold<1"])) and not matches(info, parse_where(["threshold>=0"]))
    for bad in ("__import__('os').system('true')<1", "token_rate<0.3 or 1", "token_rate", "token_rate<x",
                "file<1", "tokenizer=1", "token_rate<1e999", "token_rate<nan", "token_rate<<1", ""):
        with pytest.raises(UsageError, match="--where"):
            parse_where([bad])


@pytest.fixture(scope="module")
def cache(tmp_path_factory, small_tok_path):
    d = tmp_path_factory.mktemp("manifest")
    (d / "in").mkdir()
    write_video(d / "in" / "still.mkv", static_frames(5, 480, 854))
    write_video(d / "in" / "busy.mkv", noise_frames(5, 480, 854))
    p = run("compress", d / "in", "-o", d / "lat", "--tokenizer", small_tok_path, "--csv")
    assert p.returncode == 0, p.stderr
    return d, list(csv.DictReader(io.StringIO(p.stdout)))


def test_inspect_csv_is_the_json_table(cache):
    d, _ = cache
    p = run("inspect", d / "lat", "--csv", "--sort", "rate")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    rows = list(csv.reader(io.StringIO(p.stdout)))
    assert rows[0] == CSV_COLUMNS and len(rows) == 3
    js = [json.loads(line) for line in run("inspect", d / "lat", "--json", "--sort", "rate").stdout.splitlines()]
    for row, info in zip(rows[1:], js):
        got = dict(zip(CSV_COLUMNS, row))
        assert got["file"] == info["file"] and int(got["frames"]) == info["frames"] == 5
        assert float(got["token_rate"]) == pytest.approx(info["token_rate"], rel=1e-5)
        assert int(got["bytes"]) == info["bytes"] and got["tokenizer_fingerprint"] == info["tokenizer"]["fingerprint"]
        assert got["keep_ratio"] == "" and float(got["threshold"]) == info["threshold"]
    assert float(rows[1][CSV_COLUMNS.index("token_rate")]) < float(rows[2][CSV_COLUMNS.index("token_rate")])


def test_where_builds_a_training_list(cache):
    d, _ = cache
    rates = {json.loads(line)["file"]: json.loads(line)["token_rate"]
             for line in run("inspect", d / "lat", "--json").stdout.splitlines()}
    cut = sum(rates.values()) / 2                          # between the still clip and the busy one
    p = run("inspect", d / "lat", "--csv", "--where", f"token_rate<{cut}", "-q")
    files = [r["file"] for r in csv.DictReader(io.StringIO(p.stdout))]
    assert p.returncode == 0 and files == [f for f, r in rates.items() if r < cut] and len(files) == 1
    p = run("inspect", d / "lat", "--where", f"token_rate>={cut}", "--where", "frames=5")
    assert p.returncode == 0 and "busy.mkv.atok" in p.stdout and "still.mkv.atok" not in p.stdout
    p = run("inspect", d / "lat", "--where", "bpp<0")
    assert p.returncode == 0 and p.stdout == "" and "no clip matches" in p.stderr
    one_line_error(run("inspect", d / "lat", "--where", "rate<0.3"), errors.EXIT_USAGE)
    one_line_error(run("inspect", d / "lat", "--csv", "--json"), errors.EXIT_USAGE)
    p = run("inspect", d / "lat", "-q")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_skipped_rows_carry_the_kept_outputs_figures(cache, small_tok_path):
    d, first = cache
    p = run("compress", d / "in", "-o", d / "lat", "--tokenizer", small_tok_path, "--csv")
    again = list(csv.DictReader(io.StringIO(p.stdout)))
    assert p.returncode == 0 and [r["status"] for r in again] == ["skipped", "skipped"]
    for a, b in zip(first, again):
        assert {k: a[k] for k in ("input", "output", "frames", "token_rate", "bpp", "bytes_in", "bytes_out")} == \
               {k: b[k] for k in ("input", "output", "frames", "token_rate", "bpp", "bytes_in", "bytes_out")}
        timed = b["seconds"]
        assert timed == ""                                 # a skipped file: nothing was timed
    assert run("decompress", d / "lat", "-o", d / "dec/", "--tokenizer", small_tok_path, "--no-lit", "-q").returncode == 0
    p = run("decompress", d / "lat", "-o", d / "dec/", "--tokenizer", small_tok_path, "--no-lit", "--json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    for r in rows:                                         # read from the input container's header
        assert r["frames"] == 5 and r["token_rate"] > 0 and r["bytes_out"] == Path(r["output"]).stat().st_size
        assert r["bytes_in"] == r["atok_bytes"] == Path(r["input"]).stat().st_size
