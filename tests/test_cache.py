"""What adaptok keeps across processes (cache.py): a large file's fingerprint is hashed once, and an
entry is a hint checked when read; anything wrong with it is a miss, never an error or a wrong hash."""
import hashlib
import json
import os

import pytest

import adaptok_cli.models.tokenizer_base as tk   # where file_fingerprint lives
from adaptok_cli.models import cache


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A weights file, an empty cache and a fresh process's memory; every size is kept here (the
    real bound, KEEP_FROM_BYTES, spares the cache the many small files a batch hashes)."""
    monkeypatch.setenv("ADAPTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tk, "KEEP_FROM_BYTES", 0)
    new_process(monkeypatch)
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 5000)
    return f


def new_process(monkeypatch):
    monkeypatch.setattr(tk, "_FINGERPRINTS", {})


def count_reads(monkeypatch) -> list:
    reads = []
    monkeypatch.setattr(tk, "open", lambda *a, **k: reads.append(a[0]) or open(*a, **k), raising=False)
    return reads


def entries(tmp_path) -> list:
    return sorted((tmp_path / "cache" / "fingerprints").glob("*.json"))


def test_a_fingerprint_is_kept_across_processes(weights, tmp_path, monkeypatch):
    first = tk.file_fingerprint(weights)
    assert first == hashlib.sha256(b"a" * 5000).hexdigest()[:16] and len(entries(tmp_path)) == 1
    new_process(monkeypatch)
    reads = count_reads(monkeypatch)
    assert tk.file_fingerprint(weights) == first and reads == []


@pytest.mark.parametrize("change", ["mtime", "size"])
def test_a_changed_file_is_hashed_again(weights, monkeypatch, change):
    first = tk.file_fingerprint(weights)
    st = weights.stat()
    if change == "size":
        weights.write_bytes(b"a" * 5001)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new_process(monkeypatch)
    reads = count_reads(monkeypatch)
    fp = tk.file_fingerprint(weights)
    assert reads == [weights]
    assert fp == hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert (fp == first) == (change == "mtime")


def test_same_mtime_after_a_rewrite_is_still_a_miss(weights, monkeypatch):
    """A tool that restores the mtime after writing cannot set the ctime back."""
    tk.file_fingerprint(weights)
    st = weights.stat()
    weights.write_bytes(b"b" * 5000)                      # same size
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    new_process(monkeypatch)
    assert tk.file_fingerprint(weights) == hashlib.sha256(b"b" * 5000).hexdigest()[:16]


def _edit(path, f):
    entry = json.loads(path.read_text())
    f(entry)
    path.write_text(json.dumps(entry))


DAMAGE = {
    "garbage": lambda p, other: p.write_bytes(b"\x93\x00 not json \xff" * 20),
    "truncated": lambda p, other: p.write_bytes(p.read_bytes()[:40]),
    "empty": lambda p, other: p.write_bytes(b""),
    "not an object": lambda p, other: p.write_text("[1, 2]"),
    "hash edited": lambda p, other: _edit(p, lambda e: e["value"].update(sha256="0123456789abcdef")),
    "not a hash": lambda p, other: (_edit(p, lambda e: e["value"].update(sha256="../../etc")),
                                    _edit(p, lambda e: e.update(checksum=cache._checksum("fingerprints", e["ident"], e["value"])))),
    "old version": lambda p, other: _edit(p, lambda e: e.update(version=0)),
    "another file's": lambda p, other: p.write_bytes(other.read_bytes()),
    "oversized": lambda p, other: p.write_text(p.read_text()[:-1] + " " * cache.MAX_ENTRY_BYTES + "}"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_a_miss_and_is_rewritten(weights, tmp_path, monkeypatch, damage):
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"c" * 100)
    tk.file_fingerprint(other)
    first = tk.file_fingerprint(weights)
    mine = next(p for p in entries(tmp_path) if json.loads(p.read_text())["ident"][0][0] == str(weights))
    theirs = next(p for p in entries(tmp_path) if p != mine)
    DAMAGE[damage](mine, theirs)
    new_process(monkeypatch)
    reads = count_reads(monkeypatch)
    assert tk.file_fingerprint(weights) == first and reads == [weights]
    assert json.loads(mine.read_text())["value"] == {"sha256": first}          # repaired
    new_process(monkeypatch)
    assert tk.file_fingerprint(weights) == first and reads == [weights]        # and trusted again


def test_an_unwritable_cache_costs_time_not_an_error(weights, tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("x")
    monkeypatch.setenv("ADAPTOK_CACHE", str(tmp_path / "not-a-folder"))
    assert tk.file_fingerprint(weights) == hashlib.sha256(b"a" * 5000).hexdigest()[:16]


def test_small_files_are_not_kept(weights, tmp_path, monkeypatch):
    """Containers and small weights hash in milliseconds: a batch of them leaves no entries."""
    monkeypatch.setattr(tk, "KEEP_FROM_BYTES", 1 << 26)
    tk.file_fingerprint(weights)
    assert entries(tmp_path) == []
