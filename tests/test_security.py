"""A container must never run code, exhaust memory or cost a user a file (issue 15's five classes).

Containers here are real ones (the built-in tokeniser on tiny generated clips) with header fields,
index or payload forged and every checksum made valid again, so only the checks under test stand
in the way.
"""
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

import adaptok_cli as atk
from adaptok_cli import errors
from adaptok_cli.running import outputs
from adaptok_cli.format.container import PRELUDE, RECORD, TRAILER, AtokReader, chunk_raw_size

from conftest import noise_frames, static_frames, write_video
from test_cli import child_env, one_line_error, run
from test_reliability import fuzz_container
from waiting import HANG_GUARD, Pause, wait_gone

from adaptok_cli.running.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A real container of the built-in tokeniser (and LIT): 24x16, 9 frames, two chunks."""
    d = tmp_path_factory.mktemp("clip")
    src = write_video(d / "c.mkv", static_frames(9, 16, 24))
    atk.compress(src, d / "c.atok", threshold=0.2, chunk=2, device="cpu")
    return d / "c.atok"


def forge(src: Path, dst: Path, tokenizer=None, **fields) -> Path:
    """A copy of src with header fields replaced (tokenizer: fields of the tokeniser map), all else valid."""
    data = src.read_bytes()
    _, _, _, hlen, _ = PRELUDE.unpack_from(data)
    h = msgpack.unpackb(data[PRELUDE.size:PRELUDE.size + hlen], raw=False)
    h.update(fields)
    h["tokenizer"].update(tokenizer or {})
    dst.write_bytes(fuzz_container.with_header(data, h))
    return dst


def peak_run(*args):
    """(process, top-level modules it imported, peak RSS in MB) of one adaptok command."""
    p = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "tests" / "peak_rss.py"), *map(str, args)],
                       capture_output=True, text=True, env=child_env(), timeout=HANG_GUARD)
    lines = p.stderr.strip().splitlines()
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    *lines, peak = [line for line in lines if not line.startswith("import time:")]
    p.stderr = "\n".join(lines) + "\n"
    return p, imported, int(peak) / 1024


# --- 1. nothing in a container is a path -------------------------------------------------------------

@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if anything loads TorchScript or safetensors."""
    def refuse(*a, **k):
        raise AssertionError(f"a model file was loaded: {a}")
    import adaptok_cli.models.tokenizer
    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(adaptok_cli.models.tokenizer, "load_file", refuse)   # TinyTok, LIT, calibrations


def hostile_names(tmp_path):
    evil = tmp_path / "evil"
    evil.mkdir(exist_ok=True)
    for f in ("encoder.jit", "decoder.jit"):
        (evil / f).write_bytes(b"PK\x03\x04 not torchscript")
    (tmp_path / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return [str(evil), "evil", str(tmp_path / "w.safetensors"), "../evil", "tinytok/../evil"]


@pytest.mark.slow
def test_header_naming_a_path_is_refused_by_the_cli(tmp_path, clip):
    for i, name in enumerate(hostile_names(tmp_path)):
        bad = forge(clip, tmp_path / f"b{i}.atok", tokenizer={"name": name, "source": "builtin"})
        line = one_line_error(run("decompress", bad, "-o", tmp_path / f"o{i}.mkv", cwd=tmp_path), errors.EXIT_UNAVAILABLE)
        assert "not built in" in line and "TorchScript" not in line
        assert not (tmp_path / f"o{i}.mkv").exists()


def test_header_naming_a_path_is_refused_by_every_api_entry_point(tmp_path, clip, no_loading, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(hostile_names(tmp_path)):
        folder = tmp_path / f"ds{i}"
        folder.mkdir()
        bad = forge(clip, folder / "b.atok", tokenizer={"name": name, "source": "builtin"})
        with pytest.raises(errors.ModelUnavailableError, match="not built in"):
            atk.decompress(bad, tmp_path / f"o{i}.mkv", device="cpu")
        with atk.open(bad) as f:
            with pytest.raises(errors.ModelUnavailableError):
                next(f.iter_frames())
            with pytest.raises(errors.ModelUnavailableError):
                f.dense(fill="lit")
        with pytest.raises(errors.ModelUnavailableError):
            atk.AtokDataset(folder, fill="lit")[0]


def test_user_named_tokenizer_is_fingerprinted_before_loading(tmp_path, clip, no_loading):
    """A file the user names is hashed, not loaded, when its fingerprint is not the container's."""
    for spec in hostile_names(tmp_path)[::2]:
        with pytest.raises(errors.ModelUnavailableError, match="fingerprint"):
            atk.decompress(clip, tmp_path / "o.mkv", tokenizer=spec, device="cpu")


# --- 2. a resource budget before any allocation ---------------------------------------------------------

def crafted_index_file(path, header, entries, frames=1, record=b"\x00" * 16):
    """A container whose index claims `entries` over one small bogus record (never reached if refused)."""
    raw = msgpack.packb(header, use_bin_type=True)
    head = PRELUDE.pack(b"ATOK\r\n\x1a\n", 1, 0, len(raw), zlib.crc32(raw)) + raw
    body = head + RECORD.pack(len(record)) + record
    index = msgpack.packb({"frames": frames, "chunks": entries}, use_bin_type=True)
    path.write_bytes(body + index + TRAILER.pack(len(body), len(index), zlib.crc32(index), b"ATOKEND\n"))
    return path


def big_header(clip, **fields):
    with AtokReader(clip) as r:
        h = dict(r.header)
    h["tokenizer"] = dict(h["tokenizer"], **fields.pop("tokenizer", {}))
    h.update(fields)
    return h


def test_tiny_hostile_files_are_refused_early_and_small(tmp_path, clip):
    cases = {}
    # frames of 16384x16384: over the pixel budget
    cases["huge frame"] = forge(clip, tmp_path / "huge.atok", width=16384, height=16384, latent_width=2048,
                                latent_height=2048)
    # a 1-channel grid with a huge latent frame area, 1024 latent frames in one chunk
    h = big_header(clip, channels=1, width=4096, height=4096, latent_width=512, latent_height=512, chunk=1024,
                   tokenizer={"channels": 1})
    raw_size = chunk_raw_size(1024, 0, 512, 512, 1, "int8")
    cases["1024-frame chunk"] = crafted_index_file(tmp_path / "long.atok", h, [[PRELUDE.size + len(msgpack.packb(h)), 16,
                                                                               1024, 0, raw_size, 0]], frames=4093)
    # an index of two million empty entries (2 MB)
    cases["empty entries"] = crafted_index_file(tmp_path / "empty.atok", big_header(clip), [[]] * 2_000_000)
    for what, f in cases.items():
        assert f.stat().st_size < 3_000_000
        for cmd in (["verify", f], ["decompress", f, "-o", tmp_path / "x.y4m"], ["inspect", f]):
            p, imported, peak = peak_run(*cmd)
            one_line_error(p, errors.EXIT_BAD_CONTAINER)
            # the container is refused before torch or a model is loaded (measured: 85 MB; torch alone is 220)
            assert "torch" not in imported, (what, cmd[0])
            assert peak < 200, (what, cmd[0], peak)
    p, _, _ = peak_run("verify", cases["huge frame"])
    assert "--max-pixels" in p.stderr
    # the user may raise the budget for a file they trust: then the next check speaks
    p, _, _ = peak_run("verify", cases["huge frame"], "--max-pixels", str(16384 ** 2))
    assert "--max-pixels" not in p.stderr and p.returncode == errors.EXIT_BAD_CONTAINER


def test_mask_is_counted_without_unpacking(clip, monkeypatch):
    """verify counts mask bits on the packed bytes, as one integer: no mask is unpacked into an array."""
    sizes = []
    real = np.unpackbits
    monkeypatch.setattr(np, "unpackbits", lambda a, *k, **kw: sizes.append(a.size) or real(a, *k, **kw))
    with AtokReader(clip) as r:
        for i in range(r.num_chunks):
            r.check_chunk(i)
        assert not sizes
        r.read_mask(0)          # decoding unpacks (the monkeypatch sees it)
    assert sizes


def test_chunks_decode_group_by_group_as_one_pass(small_tok_path, monkeypatch):
    """Decoding a long chunk in small groups of latent frames (bounded memory) equals one pass."""
    from adaptok_cli.core import codec
    from adaptok_cli.models.tokenizer import load_tokenizer
    tok = load_tokenizer(str(small_tok_path))
    z = torch.randn(6, tok.channels, 3, 4)
    whole = codec.Decoder(tok).frames(z)
    monkeypatch.setattr(codec, "DECODE_PIXELS", 1)
    groups = list(codec.Decoder(tok).frame_groups(z, pixels=24 * 32))
    assert [g.stop - g.start for g, _ in groups] == [1] * 6
    assert torch.allclose(torch.cat([x for _, x in groups]), whole, atol=1e-5)


# --- 3. every header field against the tokeniser that decodes it ----------------------------------------

def with_frames(path: Path, frames: int) -> Path:
    """Rewrite the index's frame count, and the chunks' as the header's tokeniser layout implies
    (checksum and trailer fixed): a file whose every count agrees with its (lying) header."""
    from adaptok_cli.core.layout import frame_spans
    data = path.read_bytes()
    _, _, _, hlen, _ = PRELUDE.unpack_from(data)
    tok = msgpack.unpackb(data[PRELUDE.size:PRELUDE.size + hlen], raw=False)["tokenizer"]
    ioff, ilen, _, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    index = msgpack.unpackb(data[ioff:ioff + ilen], raw=False)
    spans = frame_spans([e[2] for e in index["chunks"]], tok["time_factor"], tok["stateful"], frames)
    for e, (_, n) in zip(index["chunks"], spans):
        e[-1] = n
    index["frames"] = frames
    iraw = msgpack.packb(index, use_bin_type=True)
    path.write_bytes(data[:ioff] + iraw + TRAILER.pack(ioff, len(iraw), zlib.crc32(iraw), end))
    return path


@pytest.mark.parametrize("fields,tokenizer,frames,word", [
    # lies the container itself exposes: its chunk sizes, shapes or frame count no longer add up
    ({"channels": 8, "unit": [1.0] * 8}, {"channels": 8}, None, "chunk 0 size"),
    ({}, {"time_factor": 2}, None, "frame count"),
    ({"latent_width": 2, "latent_height": 1}, {"space_factor": 16}, None, "chunk 0 shape"),
    ({}, {"stateful": False}, None, "frame count"),
    # self-consistent lies that only the tokeniser exposes
    ({}, {"time_factor": 2}, 5, "tokenizer.time_factor is 2"),
    ({"width": 9}, {}, None, "latent_width is 3"),
    ({}, {"stateful": False}, 6, "stateful"),
])
def test_header_disagreeing_with_the_tokenizer_is_refused(tmp_path, clip, fields, tokenizer, frames, word):
    bad = forge(clip, tmp_path / "b.atok", tokenizer=tokenizer, **fields)
    if frames is not None:
        with_frames(bad, frames)
    line = one_line_error(run("decompress", bad, "-o", tmp_path / "o.mkv"), errors.EXIT_BAD_CONTAINER)
    assert word in line
    assert not (tmp_path / "o.mkv").exists()


@pytest.mark.parametrize("fields", [{"fps_den": 1 << 30}, {"threshold": float("nan")}, {"threshold": float("inf")},
                                    {"threshold": -1.0}, {"threshold": None, "keep_ratio": None},
                                    {"threshold": 0.2, "keep_ratio": 0.5}, {"unit": [1.0] * 15},
                                    {"unit": [float("nan")] * 16}, {"unit": [0.0] * 16}, {"unit": [1e300] * 16},
                                    {"unit": "1.0"}, {"unit_name": "x" * 33}])
def test_senseless_header_values_fail_verify(tmp_path, clip, fields):
    bad = forge(clip, tmp_path / "b.atok", **fields)
    one_line_error(run("verify", bad), errors.EXIT_BAD_CONTAINER)


def rewrite_chunk(src: Path, dst: Path, i: int, edit, extra: bytes = b"") -> Path:
    """A copy of src whose chunk i payload is edit(payload), extra bytes after its zstd frame; sizes,
    offsets and checksums made valid."""
    import zstandard
    data = src.read_bytes()
    ioff, ilen, _, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    index = msgpack.unpackb(data[ioff:ioff + ilen], raw=False)
    off, length = index["chunks"][i][:2]
    raw = edit(bytearray(zstandard.ZstdDecompressor().decompress(data[off + 4:off + 4 + length])))
    comp = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(bytes(raw)) + extra
    delta = len(comp) - length
    index["chunks"][i][1:6] = [len(comp), *struct.unpack_from("<II", raw), len(raw), zlib.crc32(comp)]
    for e in index["chunks"][i + 1:]:
        e[0] += delta
    iraw = msgpack.packb(index, use_bin_type=True)
    body = data[:off] + RECORD.pack(len(comp)) + comp + data[off + 4 + length:ioff]
    dst.write_bytes(body + iraw + TRAILER.pack(ioff + delta, len(iraw), zlib.crc32(iraw), end))
    return dst


def test_a_record_holds_one_zstd_frame(tmp_path, clip):
    """A second zstd frame after a chunk's own (checksums valid) is refused, not ignored (FORMAT.md:
    one frame); --partial stops before that chunk."""
    import zstandard
    second = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(b"hidden" * 10)
    bad = rewrite_chunk(clip, tmp_path / "two.atok", 1, lambda raw: raw, extra=second)
    assert "unused data" in one_line_error(run("verify", bad), errors.EXIT_BAD_CONTAINER)
    assert AtokReader(clip).chunks.shape[0] == 2
    data = bad.read_bytes()
    cut = tmp_path / "cut.atok"
    cut.write_bytes(data[:-40])                                   # the index lost: salvage walks the records
    with AtokReader(cut, partial=True) as r:
        assert r.salvaged and len(r.chunks) == 1


def test_first_latent_frame_must_be_whole(tmp_path, clip):
    """A payload whose first latent frame drops a position is refused (checksums made valid)."""
    with AtokReader(clip) as r:
        t, kept = r.chunks[0, 2:4].tolist()
        c, hw = r.header["channels"], r.header["latent_width"] * r.header["latent_height"]

    def drop_first_position(raw):
        o_mask = 8 + 4 * c
        o_values = o_mask + -(-t * hw // 8)
        raw[o_mask] &= 0xFE                                    # position (0, 0) of latent frame 0
        values = np.frombuffer(bytes(raw[o_values:]), np.int8).reshape(c, kept)[:, 1:]
        return raw[:4] + struct.pack("<I", kept - 1) + raw[8:o_values] + values.tobytes()

    bad = rewrite_chunk(clip, tmp_path / "b.atok", 0, drop_first_position)
    for cmd in (["verify", bad], ["decompress", bad, "-o", tmp_path / "o.mkv"]):
        line = one_line_error(run(*cmd), errors.EXIT_BAD_CONTAINER)
        assert "kept whole" in line



@pytest.mark.parametrize("damage, word", [("padding", "mask padding"), ("count", "mask count"),
                                          ("keyframe", "latent frame 0 must be kept whole")])
def test_mask_bits_beyond_the_frames_and_miscounted_masks_are_refused(tmp_path, damage, word):
    """Chunk 0 of 3 latent frames of 7 x 100 positions: 2,100 mask bits, the last byte's top 4 padding.
    A padding bit set (and a kept position dropped, so the count still agrees), a bit cleared, or a
    keyframe position dropped (and a dropped one of frame 1 set, for the count) is refused by name."""
    from test_container import heatmap_clip
    clip, masks = heatmap_clip(tmp_path)
    o_mask, hw = 8 + 4 * 4, 700
    frame_1 = masks[0][1].reshape(-1).tolist()
    kept_in_frame_1, dropped_in_frame_1 = hw + frame_1.index(True), hw + frame_1.index(False)

    def edit(raw):
        bit = {"padding": 2103, "count": None, "keyframe": dropped_in_frame_1}[damage]    # 2,103: beyond the mask
        if bit is not None:
            raw[o_mask + bit // 8] |= 1 << bit % 8
        drop = {"padding": kept_in_frame_1, "count": kept_in_frame_1, "keyframe": 5}[damage]
        raw[o_mask + drop // 8] &= ~(1 << drop % 8) & 0xFF
        return raw

    bad = rewrite_chunk(clip, tmp_path / "bad.atok", 0, edit)
    with AtokReader(bad) as r:
        r.check_chunk(1)
        with pytest.raises(errors.ContainerError, match=f"chunk 0:? {word}"):
            r.check_chunk(0)

# --- 4. no output is ever lost -----------------------------------------------------------------------

def test_two_inputs_with_one_output_are_refused_up_front(tmp_path, small_tok_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_video(tmp_path / d / "x.mkv", noise_frames(3, 16, 16))
    for jobs in ("1", "2"):
        p = run("compress", tmp_path / "a" / "x.mkv", tmp_path / "b" / "x.mkv", "-o", tmp_path / "out/",
                "--tokenizer", small_tok_path, "-j", jobs)
        line = one_line_error(p, errors.EXIT_USAGE)
        assert "both be written" in line and not (tmp_path / "out").exists()
    p = run("compress", str(tmp_path / "*" / "x.mkv"), "-o", tmp_path / "out", "-f", "--tokenizer", small_tok_path)
    one_line_error(p, errors.EXIT_USAGE)


def test_force_never_replaces_an_input_or_a_non_regular_file(tmp_path, small_tok_path):
    src = write_video(tmp_path / "x.mkv", noise_frames(3, 16, 16))
    before = src.read_bytes()
    one_line_error(run("compress", src, "-o", src, "-f", "--tokenizer", small_tok_path), errors.EXIT_USAGE)  # not .atok
    named = tmp_path / "v.atok"                       # a video named as a container would be
    named.write_bytes(before)
    one_line_error(run("compress", named, "-o", named, "-f", "--tokenizer", small_tok_path), errors.EXIT_CANT_CREATE)
    assert src.read_bytes() == before and named.read_bytes() == before
    fifo = tmp_path / "pipe.atok"
    os.mkfifo(fifo)
    line = one_line_error(run("compress", src, "-o", fifo, "-f", "--tokenizer", small_tok_path), errors.EXIT_CANT_CREATE)
    assert "not a regular file" in line and fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.atok", "v.atok", "x.mkv"]


def test_a_second_writer_of_one_output_is_refused(tmp_path):
    """While one process writes an output (holding the lock on its temporary), another is refused;
    and without --force a target that appears meanwhile is never replaced."""
    dst = tmp_path / "o.atok"
    first = outputs.AtomicOutput(dst)
    with pytest.raises(errors.OutputExistsError, match="another adaptok process"):
        outputs.AtomicOutput(dst, force=True)
    child = subprocess.run([sys.executable, "-c", "from adaptok_cli import errors\nfrom adaptok_cli.running import outputs\n"
                            f"try: outputs.AtomicOutput({str(dst)!r}, force=True)\n"
                            "except errors.OutputExistsError as e: print(e)"], capture_output=True, text=True)
    assert "another adaptok process" in child.stdout
    first.f.write(b"mine")
    dst.write_bytes(b"theirs")        # someone else created the target meanwhile
    with pytest.raises(errors.OutputExistsError):
        first.commit()
    assert dst.read_bytes() == b"theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["o.atok"]


def test_decompress_default_name_never_shadows_the_source_video(tmp_path, clip):
    work = tmp_path / "w"
    work.mkdir()
    video = write_video(work / "clip.mp4", noise_frames(2, 16, 16))
    original = video.read_bytes()
    atok = work / "clip.mp4.atok"
    atok.write_bytes(clip.read_bytes())
    os.utime(video)                           # the source video is newer than the container
    p = run("decompress", atok)
    assert p.returncode == 0, p.stderr
    assert video.read_bytes() == original and (work / "clip.decoded.mp4").exists()
    p = run("decompress", atok)               # its own output, up to date: skipped, and said so
    assert p.returncode == 0 and "skipped (up to date)" in p.stderr
    (work / "clip.decoded.mp4").write_bytes(original)   # a video adaptok did not decode from this file
    one_line_error(run("decompress", atok), errors.EXIT_CANT_CREATE)
    assert (work / "clip.decoded.mp4").read_bytes() == original


# --- 5. crashes and signals leave nothing behind ---------------------------------------------------

def test_stale_temporaries_are_removed_and_never_taken_as_inputs(tmp_path, small_tok_path):
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "a.mkv", noise_frames(3, 16, 16))
    stale = src / ".b.mkv.adaptok-99999-0123abcd.tmp"
    stale.write_bytes((src / "a.mkv").read_bytes())      # a dead process's half-written video
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".a.mkv.atok.adaptok-99999-0123abcd.tmp"
    dead.write_bytes(b"half")
    p = run("compress", src, "-o", out, "--tokenizer", small_tok_path, "--json")
    assert p.returncode == 0, p.stderr
    assert [Path(r).name for r in (line.split('"input": "')[1].split('"')[0] for line in p.stdout.splitlines())] == ["a.mkv"]
    assert sorted(f.name for f in out.iterdir()) == ["a.mkv.atok"]


def children_of(pid):
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def adaptok_popen(*args, env=None):
    """adaptok in the background, with the default Ctrl-C a terminal user has (a shell that starts us in
    the background, `make test &`, ignores SIGINT, and Python keeps an ignored SIGINT ignored)."""
    return subprocess.Popen([sys.executable, "-m", "adaptok_cli", *map(str, args)], env={**child_env(), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_workers_die_with_their_parent(tmp_path, small_tok_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_video(src / f"v{i}.mkv", noise_frames(9, 96, 128, seed=i))
    with Pause(tmp_path / "pause", "frames", count=2) as pause:       # both workers in the middle of a file
        p = adaptok_popen("compress", src, "-o", tmp_path / "out", "-j", "2", "--chunk", "1", "--tokenizer",
                          small_tok_path, "-q", env=pause.env)
        workers = pause.wait(2, unless=[p])
        kids = children_of(p.pid)                                     # the workers and multiprocessing's helper
        assert set(workers) <= set(kids)
        p.kill()
        p.communicate(timeout=HANG_GUARD)
        wait_gone(kids)                                               # returns only once all have ended


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("stage", STAGES)
def test_signal_during_start_up_is_a_clean_130(tmp_path, small_tok_path, sig, stage):
    """At each stage of start-up (the entry point, inside the first extension's import with signals
    held, models loaded, the first frames written) a signal gives 130 and one line, never a traceback
    or a death by signal, and leaves no file. The process stops at the stage (adaptok_cli/running/stages.py)
    and is signalled there: no guessed delay."""
    work = tmp_path / "work"
    work.mkdir()
    src = write_video(work / "v.mkv", noise_frames(9, 96, 128))
    with Pause(tmp_path / "pause", stage) as pause:
        p = adaptok_popen("compress", src, "-o", work / "o.atok", "-f", "--chunk", "1", "--tokenizer", small_tok_path,
                          env=pause.env)
        assert pause.wait(unless=[p]) == [p.pid]
        p.send_signal(sig)
        pause.release()
        _, stderr = p.communicate(timeout=HANG_GUARD)
    assert p.returncode == errors.EXIT_INTERRUPTED, (p.returncode, stderr)
    assert stderr.strip() == "adaptok: interrupted", stderr
    assert sorted(f.name for f in work.iterdir()) == ["v.mkv"]


def test_no_new_file_starts_after_an_interrupt(tmp_path, small_tok_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        write_video(src / f"v{i}.mkv", noise_frames(9, 96, 128, seed=i))
    out = tmp_path / "out"
    with Pause(tmp_path / "pause", "frames", count=2) as pause:       # both workers in the middle of a file,
        p = adaptok_popen("compress", src, "-o", out, "-j", "2", "--chunk", "1", "--tokenizer", small_tok_path,
                          env=pause.env)                              # two files queued
        workers = pause.wait(2, unless=[p])
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=HANG_GUARD)
    assert p.returncode == errors.EXIT_INTERRUPTED, stderr
    wait_gone(workers)        # nothing can start a file after this
    assert list(out.iterdir()) == []


def test_weights_and_checkpoints_are_written_whole_or_not_at_all(tmp_path):
    """outputs.atomic_path (weights, checkpoints, caches): a writer that fails leaves the old file and
    no temporary; one that succeeds replaces it whole."""
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with outputs.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
    with outputs.atomic_path(target) as tmp:
        assert outputs.is_temporary(tmp) and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
