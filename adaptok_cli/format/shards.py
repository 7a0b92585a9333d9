"""WebDataset-style tar shards of containers: few large files for training loaders.

    OUT/shard-000000.tar    KEY.atok + KEY.json for each clip (KEY: its path under the input, dots as _)
    OUT/shard-000000.json   {"keys": [...], "failed": {key: error}}: written after its tar, so a shard
                            with its index is finished, and a rerun skips it

Members are plain tar entries in input order with fixed owners and times, so the same clips give the
same bytes. A shard is read member by member (`members`): a member is never extracted by its name, and
a container is read in place (container.Section), so reading a shard costs neither memory nor disk in
proportion to what its members declare.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from adaptok_cli.running import remote
from adaptok_cli.format import safejson
from adaptok_cli.format.container import DEFAULT_LIMITS, Limits, Section
from adaptok_cli.errors import ContainerError, InputError, UsageError
from adaptok_cli.running.outputs import atomic_path, temporary_name
from adaptok_cli.running.remote import is_url

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
        index = safejson.loads(raw, MAX_INDEX_BYTES)
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


# --- reading: member by member, each container read in place, nothing held but one clip's metadata ---

MAX_META = 1 << 16              # bytes of a clip's .json metadata
MAX_TAR_HEADER = 1 << 20        # bytes tarfile may read for one member's headers (pax, GNU long names, sparse maps)
MAX_MEMBERS = 1 << 18           # members of one shard; the names met are kept as 8-byte hashes to find duplicates


@dataclass
class Member:
    """One clip of a shard: its container (read in place, never copied), its metadata, or what is wrong."""
    key: str
    name: str                       # shard.tar:key, what messages call it
    atok: Section | None = None
    meta: dict = field(default_factory=dict)
    error: ContainerError | None = None

    def fail(self, what: str):
        if self.error is None:
            self.error = ContainerError(f"{self.name}: {what}")


class _Budgeted:
    """The shard as tarfile reads it, at most `left` bytes until the budget is set again: tarfile reads
    a member's headers whole, so this bounds what any header, however large it says it is, can make
    it hold."""

    def __init__(self, f, path):
        self.f, self.path, self.left = f, path, MAX_TAR_HEADER

    def read(self, n=-1):
        if n is None or n < 0 or n > self.left:
            raise ContainerError(f"{self.path}: a tar header near byte {self.f.tell()} needs more than "
                                 f"{MAX_TAR_HEADER} bytes (not a shard adaptok can read)")
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def seek(self, pos, whence=0):
        return self.f.seek(pos, whence)

    def tell(self):
        return self.f.tell()


def _split(name: str) -> tuple[str, str]:
    """(key, extension): WebDataset splits a member name at the first dot of its last part."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def _digest(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def members(path, limits: Limits = DEFAULT_LIMITS) -> Iterator[Member]:
    """The clips of a shard in order, each as soon as its members are read: KEY.atok (read in place)
    and KEY.json (metadata), adjacent as WebDataset has them; other members are skipped.

    Each member is checked before anything is read from it: a regular file, not sparse, within the
    shard, at most limits.max_file_bytes (.atok) or MAX_META (.json); its name met once. A clip that
    fails comes with its error and the rest still follow; a shard that stops being a tar raises
    ContainerError after the clips before. Memory: one clip's metadata and the names' hashes."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    size = path.stat().st_size
    names, keys = set(), set()
    clip = None
    with open(path, "rb") as raw:
        f = _Budgeted(raw, path)
        tar = _tar_call(lambda: tarfile.open(fileobj=f, mode="r:"), path)
        for count in itertools.count(1):
            f.left = MAX_TAR_HEADER
            try:
                m = _tar_call(tar.next, path)
                tar.members.clear()         # tarfile keeps every header it met: hold none
                if m is not None and count > MAX_MEMBERS:
                    raise ContainerError(f"{path}: more than {MAX_MEMBERS} members (not a shard adaptok can read)")
                if m is None:
                    _check_end(raw, tar.offset, path)
            except ContainerError:
                yield from _done(clip)      # the clips before are still reported
                raise
            if m is None:
                break
            key, ext = _split(m.name)
            if ext not in ("atok", "json") or m.isdir():
                continue
            if clip is None or key != clip.key or _digest(m.name) in names:
                yield from _done(clip)
                clip = Member(key, f"{path}:{key}")
                if _digest(m.name) in names:
                    clip.fail(f"member {m.name} appears twice in the shard (a reader would keep one of them)")
                elif _digest(key) in keys:
                    clip.fail(f"member {m.name} is apart from the clip's other members")
            names.add(_digest(m.name))
            keys.add(_digest(key))
            _take(tar, f, m, ext, clip, path, size, limits)
            if m.isfile() and not m.issparse() and m.offset_data + m.size > size:
                break                       # refused in _take; no member can follow it
        yield from _done(clip)


def _done(clip: Member | None) -> list[Member]:
    """A finished clip, if it is one: it has a container or an error (metadata alone is skipped)."""
    return [clip] if clip is not None and (clip.atok is not None or clip.error is not None) else []


def _tar_call(fn, path):
    """fn() of tarfile, its errors as ContainerError (a hostile pax or sparse record makes tarfile raise
    ValueError or IndexError, not only TarError)."""
    try:
        return fn()
    except (tarfile.TarError, OSError, EOFError, ValueError, IndexError, KeyError, OverflowError) as e:
        raise ContainerError(f"{path}: not a readable shard ({str(e)[:120]})") from None


def _take(tar, f: _Budgeted, m, ext: str, clip: Member, path: Path, size: int, limits: Limits):
    """Member m into clip, checked before anything is read from it."""
    bound = limits.max_file_bytes if ext == "atok" else MAX_META
    if not m.isfile():
        return clip.fail(f"member {m.name} is not a regular file")
    if m.issparse():
        return clip.fail(f"member {m.name} is a sparse file (its size is declared, not stored): refused")
    if m.size > bound:
        return clip.fail(f"member {m.name} declares {m.size} bytes, over the budget of {bound}")
    if m.offset_data + m.size > size:
        return clip.fail(f"member {m.name} declares {m.size} bytes, past the end of the shard")
    if ext == "atok":
        if clip.atok is not None:
            return clip.fail(f"member {m.name} appears twice in the shard")
        clip.atok = Section(path, m.offset_data, m.size, clip.name)
        return
    f.left = m.size + tarfile.BLOCKSIZE
    try:
        meta = safejson.loads(_tar_call(lambda: tar.extractfile(m).read(), path), MAX_META)
    except safejson.JSONError as e:
        return clip.fail(f"metadata {m.name}: {e}")
    if not isinstance(meta, dict):
        return clip.fail(f"metadata {m.name} is not a JSON object")
    clip.meta = meta


def _check_end(raw, offset: int, path):
    """tarfile stops quietly at a header it cannot read: anything but zeros where it stopped means the
    members after it were never seen."""
    raw.seek(offset)
    block = raw.read(tarfile.BLOCKSIZE)
    if block.strip(b"\0"):
        raise ContainerError(f"{path}: corrupt tar header at byte {offset}: the members after it were not read")


def find_member(path, key: str, limits: Limits = DEFAULT_LIMITS) -> Section:
    """The container of clip `key` in a shard, read in place."""
    for m in members(path, limits):
        if m.key == key:
            if m.error is not None:
                raise m.error
            if m.atok is not None:
                return m.atok
    raise InputError(f"{path}: no member {key!r}")


def each_container(path, limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[str, Path | Section | None, ContainerError | None]]:
    """(name, readable source, error) of each container a file holds: an .atok itself, or each clip of a
    shard (a Section, or None with the error that member has)."""
    if not is_shard(path):
        yield str(path), Path(path), None
        return
    for m in members(path, limits):
        yield m.name, m.atok, m.error


def compress_to_shards(pairs, out: str, shard_size: int, run, skipped, on_done=None) -> list:
    """compress INPUT... -o OUT --shard-size N: shards of N clips each, in input order, into the
    folder or filesystem URL out.

    The clips of finished shards are reported as skipped(src, member). The others are compressed by
    run([(src, dst)], on_done) -> outcomes (the local batch or Ray: skipping, reports) into a local
    staging folder, then packed; a clip that failed is left out of its shard and named in its index,
    so a rerun retries it. A shard's tar is written (or uploaded) before its index: the index marks
    it finished. -> run's outcomes, their outputs named as shard members (batch.py makes the
    Outcomes: this module knows nothing of how a batch runs)."""
    keys = [key_of(rel) for _, rel in pairs]
    if len(set(keys)) != len(keys):
        raise UsageError("two inputs would get the same shard key: name them from one folder")
    plan = shard_plan(keys, shard_size)
    src_of = dict(zip(keys, (src for src, _ in pairs)))
    member = {k: f"{out.rstrip('/')}/{SHARD.format(i)}.tar:{k}" for i, ks in enumerate(plan) for k in ks}
    outcomes, todo = [], []
    for i, ks in enumerate(plan):
        if is_finished(out, i, ks):
            for k in ks:
                skipped(src_of[k], member[k])       # up to date
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
    from adaptok_cli.measure.report import inspect
    info = inspect(atok).to_dict()
    keep = ("width", "height", "fps", "frames", "token_rate", "tokens_kept", "tokens_total", "bytes", "threshold",
            "keep_ratio", "unit", "tokenizer", "lit")
    return {"source": Path(str(src)).name, **{k: info[k] for k in keep if k in info}}


def want_container(f: Path) -> bool:
    return f.suffix in (".atok", ".tar")
