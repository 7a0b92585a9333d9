"""What adaptok keeps across processes, so that a large tokeniser starts in the time of its load.

    $ADAPTOK_CACHE (default $XDG_CACHE_HOME/adaptok, else ~/.cache/adaptok)
        calibration/FINGERPRINT.safetensors   what `adaptok calibrate` measured (calibration.py)
        fingerprints/KEY.json                 the hash of a set of weights files, by the files' identity
        probes/KEY.json                       a diffusers VAE's probed factors, by its fingerprint

Hashing 500 MB of weights takes seconds and probing a published VAE on the CPU tens of seconds, in
every process; both are functions of the files' bytes alone, so they are kept. An entry is a hint,
never trusted blindly: it is read within a size bound and must be JSON of the expected form and
version, carry a checksum of its content, and repeat the very identity it was looked up by (for
files: path, device, inode, size, mtime and ctime, which no user tool can set back). Anything else
is a miss: the value is computed again and the entry rewritten, atomically. The callers check the
value's fields as they would check a computed one. Writing is best effort: a read-only cache costs
time, never an error.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

VERSION = 1
MAX_ENTRY_BYTES = 1 << 16


def root() -> Path:
    """$ADAPTOK_CACHE, else $XDG_CACHE_HOME/adaptok, else ~/.cache/adaptok."""
    path = os.environ.get("ADAPTOK_CACHE")
    if path:
        return Path(path)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptok"


def file_identity(paths) -> list:
    """What says a file is the one an entry was made for: any write, rename or chmod changes its ctime."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.abspath(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out


def _canonical(x) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def _path(kind: str, ident) -> Path:
    return root() / kind / f"{hashlib.sha256(_canonical([kind, ident]).encode()).hexdigest()[:32]}.json"


def _checksum(kind: str, ident, value) -> str:
    return hashlib.sha256(_canonical([VERSION, kind, ident, value]).encode()).hexdigest()


def get(kind: str, ident) -> dict | None:
    """The value stored for ident (any JSON), or None: missing, unreadable, malformed or not for ident."""
    ident = json.loads(_canonical(ident))         # as it reads back: tuples are lists
    try:
        with open(_path(kind, ident), "rb") as f:
            raw = f.read(MAX_ENTRY_BYTES + 1)
        entry = json.loads(raw) if len(raw) <= MAX_ENTRY_BYTES else None
    except (OSError, ValueError):
        return None
    if not (isinstance(entry, dict) and entry.get("version") == VERSION and entry.get("ident") == ident
            and isinstance(entry.get("value"), dict)
            and entry.get("checksum") == _checksum(kind, ident, entry["value"])):
        return None
    return entry["value"]


def put(kind: str, ident, value: dict):
    """Store value for ident, atomically (a reader sees the old entry or the new one, never half)."""
    from adaptok_cli.errors import AdaptokError
    from adaptok_cli.running.outputs import atomic_path
    ident = json.loads(_canonical(ident))
    entry = {"version": VERSION, "kind": kind, "ident": ident, "value": value,
             "checksum": _checksum(kind, ident, value)}
    path = _path(kind, ident)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(entry))
    except (OSError, AdaptokError):     # read-only, full, or another process writing the same entry
        pass
