"""Inputs and outputs named by filesystem URL (s3://, gs://, hdfs://, file://, ...), through fsspec.

The codec works on local files: a remote input is fetched to a temporary local copy, and a remote
output is written locally, then uploaded under a temporary name and moved into place, so a reader of
the bucket never sees half an output. Which protocols work is what fsspec and its plug-ins installed
here support (s3fs, gcsfs, adlfs, ...), less those that are not stores (`check_url`: zip://, caches,
chains, and memory:// from the command line); credentials come from their usual environment and config.
"""
from __future__ import annotations

import posixpath
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from adaptok_cli.errors import InputError, OutputExistsError, UsageError, WriteError
from adaptok_cli.running.outputs import temporary_name

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*://")    # chains (a::b://) too: refused


def is_url(name) -> bool:
    return isinstance(name, str) and bool(_URL.match(name))


# fsspec filesystems that do not keep what is written (memory), hold files inside another file (zip,
# tar), or are views of other stores (caches, dir://, reference://, generic://): never a place for
# adaptok's inputs or outputs. Outputs also cannot go to read-only stores.
NOT_STORES = {"AbstractArchiveFileSystem", "ChainedFileSystem", "ReferenceFileSystem", "GenericFileSystem",
              "DataFileSystem", "DaskWorkerFileSystem"}
IN_PROCESS = {"MemoryFileSystem"}      # lives as long as the process: a store from Python, never from the CLI
READ_ONLY = {"HTTPFileSystem", "GithubFileSystem"}


def check_url(url: str, output: bool = False, in_process: bool = True):
    """Refuse up front (UsageError, exit 2) a URL adaptok cannot use: a chain (a::b), a protocol fsspec
    does not know or whose plug-in is not installed, a store that does not keep files (zip://, tar://,
    caches), memory:// unless in_process (the CLI passes False: what it wrote would vanish when it
    exits), or, for an output, a read-only store (http://). An output's store is also opened, so that
    one that cannot be reached is refused before any work (OutputExistsError, exit 73)."""
    import fsspec
    protocol = url.split("://", 1)[0].lower()
    if "::" in url:
        raise UsageError(f"{url}: chained URLs (a::b) are not supported: name the store itself")
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise UsageError(f"{url}: unknown protocol {protocol}://") from None
    except ImportError as e:
        raise UsageError(f"{url}: {protocol}:// needs a plug-in that is not installed ({e})") from None
    kinds = {c.__name__ for c in cls.__mro__}
    if kinds & IN_PROCESS and not in_process:
        raise UsageError(f"{url}: {protocol}:// lives inside one process: what adaptok wrote there would be "
                         f"gone when it exits (it is a store only from Python)")
    if kinds & NOT_STORES:
        raise UsageError(f"{url}: {protocol}:// does not keep files (memory, archives, caches and views of other "
                         f"stores are not places adaptok reads or writes)")
    if output and kinds & READ_ONLY:
        raise UsageError(f"{url}: {protocol}:// is read-only: it cannot take outputs")
    if output:
        _fs(url, output=True)


def _fs(url: str, output: bool = False):
    """(filesystem, path inside it) for a URL; an unknown protocol, or a store that cannot be reached, is
    the user's error (an input's: InputError; an output's: OutputExistsError)."""
    import fsspec
    error = OutputExistsError if output else InputError
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise error(f"{url}: cannot open this URL ({e})") from None
    except OSError as e:
        raise error(f"{url}: cannot reach it ({e})") from None


def join(base: str, rel: Path) -> str:
    return base.rstrip("/") + "/" + rel.as_posix()


def expand(url: str, want: Callable[[Path], bool]) -> list[tuple[str, Path]]:
    """A URL of a file, a folder (recursive) or a glob -> [(file URL, path relative to what was named)]."""
    fs, path = _fs(url)
    try:
        if any(c in path for c in "*?["):
            found = [(p, Path(Path(p).name)) for p, info in sorted(fs.glob(path, detail=True).items())
                     if info.get("type") == "file"]
            if not found:
                raise InputError(f"{url}: no files match")
        elif fs.isdir(path):
            root = path.rstrip("/")
            found = [(p, Path(p[len(root) + 1:])) for p in sorted(fs.find(path))]
        elif fs.isfile(path):
            found = [(path, Path(Path(path).name))]
        else:
            raise InputError(f"{url}: no such file or folder")
    except OSError as e:
        raise InputError(f"{url}: cannot list ({e})") from None
    return [(fs.unstrip_protocol(p), rel) for p, rel in found if want(rel)]


def _ask(url: str, question: Callable, output: bool = False) -> bool:
    """question(fs, path) for a URL; a store that cannot answer (permissions, network) is the user's error."""
    fs, path = _fs(url, output)
    try:
        return question(fs, path)
    except OSError as e:
        raise (OutputExistsError if output else InputError)(f"{url}: cannot check ({e})") from None


def exists(name) -> bool:
    """A local path or a URL (an output, or a shard of one) exists."""
    return _ask(name, lambda fs, path: fs.exists(path), output=True) if is_url(name) else Path(name).exists()


def is_dir(url: str) -> bool:
    """Whether an output URL is a folder."""
    return _ask(url, lambda fs, path: fs.isdir(path), output=True)


def newer(dst: str, src) -> bool:
    """dst was modified after src (either may be a URL); False where a time is unknown."""
    def mtime(name) -> float | None:
        if not is_url(name):
            return Path(name).stat().st_mtime
        fs, path = _fs(name)
        try:
            return fs.modified(path).timestamp()
        except (NotImplementedError, AttributeError):
            return None
    try:
        a, b = mtime(dst), mtime(src)
    except OSError:
        return False
    return a is not None and b is not None and a >= b


def read_bytes(url: str, limit: int) -> bytes:
    """A small remote file (an index), refused when larger than limit bytes."""
    fs, path = _fs(url)
    try:
        if fs.size(path) > limit:
            raise InputError(f"{url}: larger than {limit} bytes")
        return fs.cat_file(path)
    except OSError as e:
        raise InputError(f"{url}: cannot read ({e})") from None


@contextmanager
def opened(name) -> Iterator:
    """A local path as it is, or a URL as a seekable file object that reads only what is asked for
    (a video's header, to see whether it has sound)."""
    if not is_url(name):
        yield Path(name)
        return
    fs, path = _fs(name)
    try:
        f = fs.open(path, "rb")
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e})") from None
    with f:
        yield f


@contextmanager
def local_copy(name) -> Iterator[Path]:
    """A local path holding the file `name`: a URL is fetched into a temporary folder under its own
    file name (the container records the source's name), removed afterwards."""
    if not is_url(name):
        yield Path(name)
        return
    fs, path = _fs(name)
    with tempfile.TemporaryDirectory(prefix="adaptok-in-") as tmpdir:
        local = Path(tmpdir) / posixpath.basename(path)
        try:
            fs.get_file(path, str(local))
        except OSError as e:
            raise InputError(f"{name}: cannot fetch ({e})") from None
        yield local


@contextmanager
def published(name, force: bool) -> Iterator[Path]:
    """A local path to write the output `name` into. For a URL: a file in a temporary folder, uploaded
    under a temporary name (folder scans skip it) and moved to `name` when the block ends without
    error, so no reader sees half a file; an existing `name` is refused unless force."""
    if not is_url(name):
        yield Path(name)
        return
    fs, path = _fs(name, output=True)
    if exists(name) and not force:
        raise OutputExistsError(f"{name}: already exists (use -f to overwrite)")
    staged = posixpath.join(posixpath.dirname(path), temporary_name(posixpath.basename(path)))
    with tempfile.TemporaryDirectory(prefix="adaptok-out-") as tmpdir:
        local = Path(tmpdir) / posixpath.basename(path)
        yield local
        try:
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
            fs.put_file(str(local), staged)
            fs.mv(staged, path)
        except OSError as e:
            try:
                fs.rm(staged)
            except OSError:
                pass
            raise WriteError(f"{name}: cannot upload ({e})") from None
