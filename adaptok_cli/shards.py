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
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

from . import remote
from .errors import ContainerError, InputError, UsageError
from .outputs import atomic_path, temporary_name
from .remote import is_url

MAX_MEMBER = 1 << 31            # bytes of one member (an .atok); a tar may not make us read more
SHARD = "shard-{:06d}"
MAX_INDEX_BYTES = 1 << 24       # a shard's index (its keys): larger is not one of ours


def key_of(rel: Path) -> str:
    """A stable key for a clip: its path under what the user named, without dots (WebDataset splits a
    member name at the first dot of its last part)."""
    return str(rel).replace(".", "_")


def shard_plan(keys: list[str], shard_size: int) -> list[list[str]]:
    return [keys[i:i + shard_size] for i in range(0, len(keys), shard_size)]


def is_finished(out, i: int, keys: list[str]) -> bool:
    """Shard i holds exactly these keys, all made (its index exists and lists no failure). out may be a
    folder or a filesystem URL."""
    name = SHARD.format(i)
    try:
        if is_url(out):
            if not remote.exists(remote.join(out, Path(name + ".tar"))):
                return False
            raw = remote.read_bytes(remote.join(out, Path(name + ".json")), MAX_INDEX_BYTES)
        else:
            if not (Path(out) / (name + ".tar")).is_file():
                return False
            idx = Path(out) / (name + ".json")
            if idx.stat().st_size > MAX_INDEX_BYTES:
                return False
            raw = idx.read_bytes()
        index = json.loads(raw)
    except (OSError, ValueError, InputError):
        return False
    return isinstance(index, dict) and index.get("keys") == keys and not index.get("failed")


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


def compress_to_shards(pairs, out: str, shard_size: int, run, on_done=None, progress=None) -> list:
    """compress INPUT... -o OUT --shard-size N: shards of N clips each, in input order, into the
    folder or filesystem URL out.

    The clips of finished shards are reported as skipped. The others are compressed by
    run([(src, dst)], on_done) -> outcomes (the local batch or Ray: skipping, reports) into a local
    staging folder, then packed; a clip that failed is left out of its shard and named in its index,
    so a rerun retries it. A shard's tar is written (or uploaded) before its index: the index marks
    it finished. -> one batch.Outcome per clip."""
    from .batch import Outcome, _collector
    keys = [key_of(rel) for _, rel in pairs]
    if len(set(keys)) != len(keys):
        raise UsageError("two inputs would get the same shard key: name them from one folder")
    plan = shard_plan(keys, shard_size)
    src_of = dict(zip(keys, (src for src, _ in pairs)))
    member = {k: f"{out.rstrip('/')}/{SHARD.format(i)}.tar:{k}" for i, ks in enumerate(plan) for k in ks}
    outcomes = []
    done = _collector(outcomes, on_done, progress)
    todo = []
    for i, ks in enumerate(plan):
        if is_finished(out, i, ks):
            for k in ks:
                done(Outcome(src_of[k], member[k], skipped=True))       # up to date
        else:
            todo.append(i)
    if not todo:
        return outcomes
    local_out = None if is_url(out) else Path(out)
    if local_out is not None:
        local_out.mkdir(parents=True, exist_ok=True)
    staging = (local_out or Path(tempfile.gettempdir())) / temporary_name("staging")
    staging.mkdir()
    shard_dir = local_out or staging / "shards"      # a URL's shards are packed here, then uploaded
    try:
        shard_dir.mkdir(exist_ok=True)
        staged = {k: staging / f"{k}.atok" for i in todo for k in plan[i]}
        key_of_staged = {dst: k for k, dst in staged.items()}
        failed = {}

        def reported(o):                     # the staging file is gone when the run returns
            if o.error is not None:          # the shard's index keeps why, in the names the user knows
                failed[key_of_staged[o.dst]] = str(o.error).replace(str(o.dst), member[key_of_staged[o.dst]])
            o.dst = member[key_of_staged[o.dst]]
            if o.result is not None:
                o.result.output = o.dst
            if on_done:
                on_done(o)
        outcomes += run([(src_of[k], dst) for k, dst in staged.items()], reported)
        for i in todo:
            made = [k for k in plan[i] if staged[k].is_file()]
            write_shard(shard_dir, i, [(k, staged[k], _metadata(staged[k], src_of[k])) for k in made],
                        {k: failed.get(k, "not compressed") for k in plan[i] if k not in made})
            if local_out is None:
                for ext in (".tar", ".json"):        # the index last: it says the shard is finished
                    name = SHARD.format(i) + ext
                    with remote.published(remote.join(out, Path(name)), force=True) as up:
                        shutil.move(shard_dir / name, up)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outcomes


def _metadata(atok: Path, src: Path) -> dict:
    from .report import inspect
    info = inspect(atok).to_dict()
    keep = ("width", "height", "fps", "frames", "token_rate", "tokens_kept", "tokens_total", "bytes", "threshold",
            "keep_ratio", "unit", "tokenizer", "lit")
    return {"source": Path(str(src)).name, **{k: info[k] for k in keep if k in info}}


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
