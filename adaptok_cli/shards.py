"""WebDataset-style tar shards of containers: few large files for training loaders.

    OUT/shard-000000.tar    KEY.atok + KEY.json for each clip (KEY: its path under the input, dots as _)
    OUT/shard-000000.json   {"keys": [...], "failed": {key: error}}: written after its tar, so a shard
                            with its index is finished, and a rerun skips it

Members are plain tar entries in input order with fixed owners and times, so the same clips give the
same bytes. A shard is read member by member: a member is never extracted by its name, only copied
into our own temporary file, and its size is held to MAX_MEMBER.
"""
from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ContainerError, InputError
from .outputs import atomic_path

MAX_MEMBER = 1 << 31            # bytes of one member (an .atok); a tar may not make us read more
SHARD = "shard-{:06d}"


def key_of(rel: Path) -> str:
    """A stable key for a clip: its path under what the user named, without dots (WebDataset splits a
    member name at the first dot of its last part)."""
    return str(rel).replace(".", "_")


def shard_plan(keys: list[str], shard_size: int) -> list[list[str]]:
    return [keys[i:i + shard_size] for i in range(0, len(keys), shard_size)]


def is_finished(out: Path, i: int, keys: list[str]) -> bool:
    """Shard i holds exactly these keys, all made (its index exists and lists no failure)."""
    idx = out / (SHARD.format(i) + ".json")
    if not idx.is_file() or not (out / (SHARD.format(i) + ".tar")).is_file():
        return False
    try:
        index = json.loads(idx.read_text())
    except ValueError:
        return False
    return index.get("keys") == keys and not index.get("failed")


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0o644, 0, 0, 0, "", ""
    return info


def write_shard(out: Path, i: int, members: list[tuple[str, Path, dict]], failed: dict[str, str]):
    """Shard i from (key, .atok path, metadata) in order, then its index; both written atomically."""
    with atomic_path(out / (SHARD.format(i) + ".tar")) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, atok, meta in members:
                with open(atok, "rb") as f:
                    tar.addfile(_info(f"{key}.atok", atok.stat().st_size), f)
                raw = json.dumps(meta, sort_keys=True).encode()
                tar.addfile(_info(f"{key}.json", len(raw)), io.BytesIO(raw))
    with atomic_path(out / (SHARD.format(i) + ".json")) as tmp:
        tmp.write_text(json.dumps({"keys": [k for k, _, _ in members], "failed": failed}, indent=1))


def is_shard(path) -> bool:
    return Path(path).suffix == ".tar"


def members(path) -> Iterator[tuple[str, bytes, dict]]:
    """(key, .atok bytes, metadata) of each clip in a shard, streamed in order."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    pending: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                if m.size > MAX_MEMBER:
                    raise ContainerError(f"{path}: member {m.name} is {m.size} bytes, over {MAX_MEMBER}")
                key, _, ext = m.name.partition(".")
                data = tar.extractfile(m).read()
                item = pending.setdefault(key, {})
                item[ext] = data
                if "atok" in item and "json" in item:
                    del pending[key]
                    yield key, item["atok"], json.loads(item["json"])
    except (tarfile.TarError, OSError, ValueError) as e:
        raise ContainerError(f"{path}: not a readable shard ({e})") from None
    for key, item in pending.items():
        if "atok" in item:
            yield key, item["atok"], {}


class MemberFile:
    """A shard member as a temporary .atok file, removed on close: what the readers take."""

    def __init__(self, data: bytes, name: str):
        self._dir = tempfile.TemporaryDirectory(prefix="adaptok-member-")
        self.path = Path(self._dir.name) / (Path(name).name + ".atok")
        self.path.write_bytes(data)

    def close(self):
        self._dir.cleanup()

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        self.close()


def find_member(path, key: str) -> bytes:
    for k, data, _ in members(path):
        if k == key:
            return data
    raise InputError(f"{path}: no member {key!r}")


def compress_to_shards(pairs: list[tuple[Path, Path]], out: Path, shard_size: int, run_batch) -> int:
    """compress INPUT... -o OUT --shard-size N: shards of N clips each, in input order.

    Finished shards are skipped. The clips of the others are compressed by run_batch([(src, dst)])
    (the local batch: its skipping, reports and exit code) into a staging folder inside OUT, then
    packed; a clip that failed is left out of its shard and named in its index, so a rerun retries it.
    -> run_batch's exit code (0 when every shard was already finished)."""
    import os
    import secrets
    import shutil
    if shard_size < 1:
        from .errors import UsageError
        raise UsageError("--shard-size must be at least 1")
    keys = [key_of(rel) for _, rel in pairs]
    if len(set(keys)) != len(keys):
        from .errors import UsageError
        raise UsageError("two inputs would get the same shard key: name them from one folder")
    plan = shard_plan(keys, shard_size)
    todo = [i for i, ks in enumerate(plan) if not is_finished(out, i, ks)]
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".staging.adaptok-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    src_of = dict(zip(keys, (src for src, _ in pairs)))
    staged = {k: staging / f"{k}.atok" for i in todo for k in plan[i]}
    try:
        code = run_batch([(src_of[k], dst) for k, dst in staged.items()]) if staged else 0
        for i in todo:
            made = [k for k in plan[i] if staged[k].is_file()]
            write_shard(out, i, [(k, staged[k], _metadata(staged[k], src_of[k])) for k in made],
                        {k: "not compressed (see the run's report)" for k in plan[i] if k not in made})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return code


def _metadata(atok: Path, src: Path) -> dict:
    from .report import inspect
    info = inspect(atok).to_dict()
    keep = ("width", "height", "fps", "frames", "token_rate", "tokens_kept", "tokens_total", "bytes", "threshold",
            "keep_ratio", "unit", "tokenizer", "lit")
    return {"source": src.name, **{k: info[k] for k in keep if k in info}}


def each_container(path) -> Iterator[tuple[str, Path]]:
    """(name, readable path) of the containers a file holds: an .atok itself, or each member of a shard
    (as a temporary copy, valid until the next one)."""
    if not is_shard(path):
        yield str(path), Path(path)
        return
    for key, data, _ in members(path):
        with MemberFile(data, key) as tmp:
            yield f"{path}:{key}", tmp


def want_container(f: Path) -> bool:
    return f.suffix in (".atok", ".tar")
