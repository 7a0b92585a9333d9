"""A cache's manifest: `adaptok inspect` over many files (inspect_files), its per-clip rows as CSV, and
`--where` filters to pick clips by their figures (a training list: `adaptok inspect latents/ --where
'token_rate<0.3' --csv`).

A filter is `FIELD OP NUMBER` (OP one of < <= > >= = == !=), read by a regular expression and
compared as floats: nothing is evaluated. Clauses joined by commas, or given as several --where,
must all hold; a clip whose field is empty (threshold of a keep-ratio file) matches none.
"""
from __future__ import annotations

import math
import operator
import os
import re
from dataclasses import dataclass
from pathlib import Path

from adaptok_cli.defaults import SORT_KEYS
from adaptok_cli.errors import UsageError

# --json's per-clip fields, nested ones flattened (tokenizer -> tokenizer, tokenizer_fingerprint);
# the per-chunk table stays with --json and --chunks
CSV_COLUMNS = ["file", "width", "height", "frames", "fps", "duration", "token_rate", "tokens_kept", "tokens_total",
               "tokens_per_second", "bytes", "bpp", "compression_ratio", "threshold", "keep_ratio", "unit", "quant",
               "chunk", "keyframe_interval", "tokenizer", "tokenizer_fingerprint", "lit_fingerprint", "audio_codec",
               "source", "created_by", "logvar"]
NUMERIC = ("width", "height", "frames", "fps", "duration", "token_rate", "tokens_kept", "tokens_total",
           "tokens_per_second", "bytes", "bpp", "compression_ratio", "threshold", "keep_ratio", "chunk",
           "keyframe_interval")
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq,
             "==": operator.eq, "!=": operator.ne}
CLAUSE = re.compile(r"\s*([a-z_]+)\s*(<=|>=|==|!=|<|>|=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")


def csv_row(info: dict) -> list:
    """One clip's row of CSV_COLUMNS, from inspect's dict (ContainerInfo.to_dict())."""
    flat = {**info, "tokenizer": info["tokenizer"]["name"], "tokenizer_fingerprint": info["tokenizer"]["fingerprint"],
            "lit_fingerprint": (info.get("lit") or {}).get("fingerprint"),
            "audio_codec": (info.get("audio") or {}).get("codec")}
    return ["" if flat.get(k) is None else f"{flat[k]:.6g}" if isinstance(flat[k], float) else flat[k]
            for k in CSV_COLUMNS]


@dataclass(frozen=True)
class Clause:
    field: str
    op: str
    value: float

    def holds(self, info: dict) -> bool:
        v = info.get(self.field)
        return v is not None and OPERATORS[self.op](float(v), self.value)


def parse_where(texts: list[str]) -> list[Clause]:
    """--where values -> clauses (all must hold); anything else is a usage error naming the fields."""
    clauses = []
    for text in texts:
        for part in text.split(","):
            m = CLAUSE.fullmatch(part)
            if m is None or m.group(1) not in NUMERIC:
                raise UsageError(f"--where {part.strip()!r}: give FIELD OP NUMBER, OP one of < <= > >= = !=, "
                                 f"FIELD one of {', '.join(NUMERIC)}")
            value = float(m.group(3))
            if not math.isfinite(value):
                raise UsageError(f"--where {part.strip()!r}: the number must be finite")
            clauses.append(Clause(m.group(1), m.group(2), value))
    return clauses


def matches(info: dict, clauses: list[Clause]) -> bool:
    return all(c.holds(info) for c in clauses)


def inspect_files(inputs: list, limits=None, where=(), tokenizer: str | None = None,
                  plot: str | None = None, sort: str = "name", as_json: bool = False, as_csv: bool = False,
                  quiet: bool = False, chunks: bool | None = None) -> int:
    """`adaptok inspect`: every container of inputs (files, shards' clips, folders, globs) that matches
    where, checked against tokenizer's fingerprint, plotted, and reported in sort order -> exit code.
    limits: the resource budget (container.Limits; None: the default)."""
    from adaptok_cli.running.batch import expand_inputs
    from adaptok_cli.cli.printing import for_each, say, write_plot
    from adaptok_cli.running.options import check_common, limits_for
    from adaptok_cli.measure.report import inspect
    from adaptok_cli.format.shards import each_container, is_shard, want_container
    check_common(None, "auto", as_json, as_csv)
    limits = limits or limits_for(None)
    clauses = parse_where(list(where))
    found = expand_inputs(inputs, want_container)
    files, rel_of = [f for f, _ in found], dict(found)
    plot_dir = plot is not None and plot_folder(plot, files, rel_of)
    infos, sources, plotted = [], {}, {}

    def one(name, item):                              # a file, or one clip of a shard
        f, source = item
        info = inspect(source, limits).to_dict()
        info["file"] = name
        if not matches(info, clauses):
            return
        if plot is not None:
            png = plot_png(plot, rel_of[f], name.rpartition(":")[2] if is_shard(f) else None) if plot_dir \
                else Path(plot)
            if png in plotted:
                raise UsageError(f"{plotted[png]} and {name} would both be plotted to {png}: give a folder")
            plotted[png] = name
        if tokenizer is not None:
            from adaptok_cli.format.container import AtokReader
            from adaptok_cli.models.matching import check_named_tokenizer
            with AtokReader(source, limits=limits) as r:
                check_named_tokenizer(r.header, name, tokenizer)
        infos.append(info)
        sources[name] = source
        if plot is not None:
            write_plot(source, png, quiet, name)
    code = for_each(files, one, parts=lambda f: ((name, (f, source), error)
                                                 for name, source, error in each_container(f, limits)))
    infos.sort(key=lambda i: (i[SORT_KEYS[sort]], i["file"]))
    report_inspect(infos, sources, as_json, as_csv, quiet, chunks)
    if not (infos or quiet) and clauses and not code:
        say(f"no clip matches --where {' and '.join(where)}")
    return code


def report_inspect(infos: list, sources: dict, as_json: bool, as_csv: bool, quiet: bool, chunks: bool | None):
    """inspect's output: CSV rows, JSON lines, or the tables (one clip: its chunks and heatmap)."""
    import csv
    import json
    import sys

    from adaptok_cli.cli.printing import print_inspect, print_inspect_many
    if as_csv:
        rows = csv.writer(sys.stdout, lineterminator="\n")
        rows.writerows([CSV_COLUMNS] + [csv_row(i) for i in infos])
    for info in infos if as_json else []:
        print(json.dumps(info), flush=True)
    if not (as_json or as_csv or quiet) and infos:
        if len(infos) == 1:
            print_inspect(infos[0], chunks is not False, sources[infos[0]["file"]])
        else:
            print_inspect_many(infos, bool(chunks))


def plot_png(folder: str, rel: Path, key: str | None = None) -> Path:
    """inspect --plot FOLDER/: where a container's PNG goes, its path under what was named mirrored
    (a shard member: FOLDER/SHARD/KEY.png)."""
    return Path(folder) / rel.parent / (f"{rel.stem}/{key}.png" if key is not None else rel.name + ".png")


def plot_folder(plot: str, files: list, rel_of: dict) -> bool:
    """inspect --plot: one .png for one container, or a folder (one PNG each, the input tree mirrored, as
    compress does; two inputs on one PNG are refused) -> whether it is a folder."""
    from adaptok_cli.running.batch import check_file_output
    from adaptok_cli.running.outputs import plan
    from adaptok_cli.format.shards import is_shard
    folder = plot.endswith(("/", os.sep)) or Path(plot).is_dir() or len(files) > 1 and not Path(plot).suffix
    if not folder and (len(files) > 1 or Path(plot).suffix.lower() != ".png"):
        raise UsageError(f"--plot {plot}: give a .png file for one container, or a folder (ending in /) "
                         f"for one PNG each (standard output carries inspect's report)")
    if not folder:
        check_file_output(plot, (".png",), "--plot writes a PNG")
    else:
        plan([(f, plot_png(plot, rel_of[f])) for f in files if not is_shard(f)])
    return folder
