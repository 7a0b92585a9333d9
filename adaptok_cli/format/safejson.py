"""JSON from files adaptok did not write (shard metadata, model configs, safetensors headers), bounded
in size and in nesting before it is parsed: a few kilobytes of `[[[[...` would otherwise make the
parser recurse past Python's limit (RecursionError), and a large file would be held whole.

Callers turn JSONError into their own error type: ContainerError (65) for containers and shards,
ModelUnavailableError (69) for model files.
"""
from __future__ import annotations

import json
import re

MAX_DEPTH = 32                 # nesting of arrays and objects; configs and metadata need 3 or 4
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


class JSONError(ValueError):
    """Not JSON, too large, or nested too deep: the message says which."""


def depth_over(raw: bytes, max_depth: int) -> bool:
    """Whether arrays and objects nest deeper than max_depth (strings, which may hold brackets, are
    skipped first); stops at the first bracket past the limit."""
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if m.group() in b"[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def loads(raw: bytes | str, max_bytes: int, max_depth: int = MAX_DEPTH):
    """json.loads of at most max_bytes bytes nested at most max_depth deep, else JSONError."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        raise JSONError(f"{len(raw)} bytes of JSON, over the limit of {max_bytes}")
    if depth_over(raw, max_depth):
        raise JSONError(f"JSON nested more than {max_depth} deep")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise JSONError(f"not valid JSON ({str(e)[:100]})") from None


def read(path, max_bytes: int, max_depth: int = MAX_DEPTH):
    """loads() of a file, whose size is checked before it is read."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    return loads(raw, max_bytes, max_depth)
