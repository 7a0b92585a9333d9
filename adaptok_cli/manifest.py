"""A cache's manifest: inspect's per-clip rows as CSV, and `--where` filters to pick clips by their
figures (a training list: `adaptok inspect latents/ --where 'token_rate<0.3' --csv`).

A filter is `FIELD OP NUMBER` (OP one of < <= > >= = == !=), read by a regular expression and
compared as floats: nothing is evaluated. Clauses joined by commas, or given as several --where,
must all hold; a clip whose field is empty (threshold of a keep-ratio file) matches none.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from .errors import UsageError

# --json's per-clip fields, nested ones flattened (tokenizer -> tokenizer, tokenizer_fingerprint);
# the per-chunk table stays with --json and --chunks
CSV_COLUMNS = ["file", "width", "height", "frames", "fps", "duration", "token_rate", "tokens_kept", "tokens_total",
               "tokens_per_second", "bytes", "bpp", "compression_ratio", "threshold", "keep_ratio", "unit", "quant",
               "chunk", "keyframe_interval", "tokenizer", "tokenizer_fingerprint", "lit_fingerprint", "audio_codec",
               "source", "created_by"]
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
