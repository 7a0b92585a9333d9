"""Shards as inputs of decompress: every clip of a shard, or one clip, named `shard.tar:key`.

A clip is copied out of its shard by shards.py's reader (nothing is extracted by its name) into a
private staging folder and decoded from there; reports and errors name it `shard.tar:key`. Its output
is named as if the shard were a folder of its clips: `SH/shard-000000.tar` holding the clip
compressed from `sub/clip.mp4` (key `sub/clip_mp4`) gives `shard-000000/sub/clip.decoded.mp4`, under
-o's folder or beside the shard. Key parts are checked before they become paths: no empty, `.`, `..`
or hidden parts, no backslash or NUL.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from adaptok_cli.errors import AdaptokError, ContainerError, InputError
from adaptok_cli.format.shards import is_shard, members
from adaptok_cli.running.video import VIDEO_EXTENSIONS

MAX_KEY = 1024          # characters of a key we make paths from


@dataclass
class Clip:
    """One container to decode: a plain .atok, or a clip of a shard staged as one."""
    name: str               # what reports call it: the file, or shard.tar:key
    source: Path            # where it would be as a file (a shard as a folder): default outputs go beside it
    rel: Path               # the same under what the user named: -o FOLDER/ mirrors it
    staged: Path | None = None      # the readable file; None when the clip failed
    error: AdaptokError | None = None


def split_member(item) -> tuple[Path, str] | None:
    """'SHARD.tar:KEY' -> (SHARD.tar, KEY) when SHARD.tar is a file; anything else is an ordinary path."""
    shard, sep, key = str(item).partition(".tar:")
    return (Path(shard + ".tar"), key) if sep and key and Path(shard + ".tar").is_file() else None


def clip_path(key: str) -> Path:
    """A key as a relative path: its folders, then the clip's own name (`sub/clip_mp4` ->
    `sub/clip.mp4.atok`: compress made the key from the path with its dots as _); refused if a part
    could name anything outside."""
    parts = key.split("/")
    if len(key) > MAX_KEY or any(p in ("", ".", "..") or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        raise ContainerError(f"member key {key[:80]!r} is not a relative path adaptok writes under")
    stem, _, ext = parts[-1].rpartition("_")
    name = f"{stem}.{ext}" if stem and f".{ext.lower()}" in VIDEO_EXTENSIONS else parts[-1]
    return Path(*parts[:-1], name + ".atok")


def _copy_out(shard: Path, want: str | None, staging: Path) -> Iterator[tuple[str, Path | None, AdaptokError | None]]:
    """(key, staged file or None, error) of the clips of a shard (only `want`, if given), copied out
    one by one by shards.members."""
    for m in members(shard):
        if want is not None and m.key != want:
            continue
        if m.error is not None:             # the shard's reader named what is wrong with this clip
            yield m.key, None, m.error
        else:
            dst = Path(tempfile.mkdtemp(dir=staging)) / "clip.atok"
            m.atok.copy_to(dst)                     # a block at a time: never the member whole
            yield m.key, dst, None
        if want is not None:
            return


@contextmanager
def staged_clips(pairs) -> Iterator[list[Clip]]:
    """expand_inputs' pairs (files, shards, shard.tar:key) -> the clips to decode, shards' clips staged
    in a temporary folder that is removed when the block ends."""
    staging = Path(tempfile.mkdtemp(prefix="adaptok-shard-"))
    try:
        clips: list[Clip] = []
        for src, rel in pairs:
            member = split_member(src)
            if member is None and not is_shard(src):
                clips.append(Clip(str(src), Path(src), Path(rel), staged=Path(src)))
                continue
            shard, want = member or (Path(src), None)
            folder = shard.parent / shard.stem                  # the shard seen as a folder of its clips
            base = Path(rel).parent / Path(rel).stem if member is None else None
            try:
                found = 0
                for key, staged, error in _copy_out(shard, want, staging):
                    found += 1
                    name = f"{shard}:{key}"
                    try:
                        sub = clip_path(key)
                    except ContainerError as e:
                        clips.append(Clip(name, folder / "-", Path("-"), error=ContainerError(f"{name}: {e}")))
                        continue
                    clips.append(Clip(name, folder / sub, base / sub if base is not None else Path(sub.name),
                                      staged=staged, error=error))
                if want is not None and not found:
                    raise InputError(f"{shard}: no member {want!r}")
            except AdaptokError as e:
                clips.append(Clip(str(src), Path(src), Path(rel), error=e))
        yield clips
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def renamed(start, clips: list[Clip]):
    """batch.run's start(progress, on_done) over the staged clips -> the same, with outcomes (and their
    errors) naming the clips as the user knows them, and the clips that could not be staged reported
    as failed first (either callback may be None)."""
    from adaptok_cli.running.options import Outcome
    name_of = {str(c.staged): c.name for c in clips if c.staged is not None}

    def fix(o):
        staged = str(o.src)
        o.src = name_of.get(staged, o.src)
        if o.error is not None and staged != o.src:
            o.error.args = (str(o.error).replace(staged, str(o.src)),)
        if o.result is not None:
            o.result.input = str(o.src)
        return o

    def run(progress, on_done):
        failed = []
        for c in clips:
            if c.error is not None:
                failed.append(Outcome(c.name, c.source, error=c.error))
                if on_done:
                    on_done(failed[-1])
                if progress:
                    progress("files", 1, name=c.name)

        def tick(kind, n=1, total=None, name=None):
            progress(kind, n, total, name=None if name is None else name_of.get(str(name), name))
        return failed + [fix(o) for o in start(tick if progress else None,
                                                       (lambda o: on_done(fix(o))) if on_done else None)]
    return run
