"""The .atok container: exact bytes back, and clean errors for every kind of damage."""
import struct
import zlib

import msgpack
import numpy as np
import pytest
import torch

from adaptok_cli import inspect
from adaptok_cli.format import container as container_module
from adaptok_cli.format.container import (MAGIC, PRELUDE, TRAILER, VERSION, AtokReader, ContainerError, delta_codes,
                                          undelta_codes, write_bytes)
from adaptok_cli.errors import InputError


def header(**kw):
    h = {"width": 24, "height": 16, "latent_width": 3, "latent_height": 2, "channels": 4, "fps_num": 25,
         "fps_den": 1, "tokenizer": {"name": "t", "fingerprint": "f", "time_factor": 4, "space_factor": 8,
                                     "channels": 4, "source": "builtin", "stateful": True},
         "lit": None, "threshold": 0.1, "keep_ratio": None, "keyframe_interval": 0, "quant": "int8", "chunk": 4}
    h.update(kw)
    return h


def chunks(seed=0, quant="int8"):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t, frames in ((4, 13), (2, 8)):     # time factor 4: the first latent frame is one frame
        mask = torch.rand(t, 2, 3, generator=g) > 0.5
        mask[0] = True
        n = int(mask.sum())
        if quant == "int8":
            codes = torch.randint(-127, 128, (4, n), generator=g, dtype=torch.int8)
            out.append((mask, codes, torch.rand(4, generator=g), frames))
        else:
            out.append((mask, torch.randn(4, n, generator=g).half(), None, frames))
    return out


def write(tmp_path, data, name="c.atok"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("quant", ["int8", "fp16"])
def test_exact_round_trip(tmp_path, quant):
    cs = chunks(quant=quant)
    p = write(tmp_path, write_bytes(header(quant=quant), cs, frames=21))
    with AtokReader(p) as r:
        assert r.frames == 21 and r.latent_frames == 6
        for i, (mask, codes, qscale, n) in enumerate(cs):
            assert r.entry(i).frames == n
            c = r.read_chunk(i)
            assert torch.equal(c.mask, mask)
            assert torch.equal(c.codes, codes)
            if qscale is not None:
                assert torch.equal(c.qscale, qscale)


def test_int8_values_are_stored_as_differences_and_read_back_exactly(tmp_path):
    """Format 5 stores each channel's int8 row as differences modulo 256: every byte, the extremes
    next to each other (-128 after 127: a wrapped difference), an empty row and one value come back."""
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(-128, 128, (4, 625), generator=g, dtype=torch.int8),      # the first frame: whole
            torch.tensor([[127, -128, 127, -128, 0, -1, 1]] * 4, dtype=torch.int8),
            torch.zeros(4, 0, dtype=torch.int8), torch.tensor([[5], [-5], [127], [-128]], dtype=torch.int8)]
    cs = []
    for i, codes in enumerate(rows):
        mask = torch.zeros(1, 25, 25, dtype=torch.bool)
        mask.view(-1)[:codes.shape[1]] = True
        cs.append((mask, codes, torch.rand(4, generator=g), 1 if i == 0 else 4))
    h = header(width=200, height=200, latent_width=25, latent_height=25, chunk=1)
    p = write(tmp_path, write_bytes(h, cs, frames=13))
    with AtokReader(p) as r:
        assert r.version == VERSION == 5
        for i, (_, codes, _, _) in enumerate(cs):
            assert torch.equal(r.read_chunk(i).codes, codes)
            stored = np.frombuffer(r.check_chunk(i)[-codes.numel():] if codes.numel() else b"", np.int8)
            assert np.array_equal(stored.reshape(codes.shape), delta_codes(codes.numpy()))


def test_undelta_is_the_running_sum_modulo_256():
    """undelta_codes (torch's uint8 cumsum) against a sum in int64 taken modulo 256 by hand, on rows
    of any length, read-only input (as np.frombuffer gives it) and a strided view."""
    rng = np.random.default_rng(3)
    for shape in [(16, 10059), (1, 1), (3, 0), (128, 7), (2, 70000)]:
        d = rng.integers(-128, 128, shape, dtype=np.int8)
        d.flags.writeable = False
        want = ((np.cumsum(d.view(np.uint8).astype(np.int64), axis=1) % 256).astype(np.uint8)).view(np.int8)
        got = undelta_codes(d)
        assert got.dtype == np.int8 and np.array_equal(got, want)
        assert np.array_equal(delta_codes(got), d)
    wide = rng.integers(-128, 128, (4, 20), dtype=np.int8)
    assert np.array_equal(undelta_codes(wide[:, ::2]), undelta_codes(wide[:, ::2].copy()))


def test_a_damaged_version_or_flags_field_is_refused(tmp_path):
    """The version decides how int8 values are read (format 5: as differences), and one flipped bit
    turns 5 into 4 or 1, both readable: since format 5 the header checksum covers the field, so every
    single-bit flip in the version and flags is refused."""
    data = write_bytes(header(), chunks(), frames=21)
    for bit in range(32):
        b = bytearray(data)
        b[8 + bit // 8] ^= 1 << bit % 8
        with pytest.raises(ContainerError):
            AtokReader(write(tmp_path, bytes(b), f"flip{bit}.atok"))


@pytest.mark.parametrize("channels", [128, 1024])
def test_wide_latents_with_a_unit_per_channel_read_back(tmp_path, channels):
    """LTX-Video's VAE has 128 latent channels, so its header carries a 128-number rule unit: the
    header's array bound follows MAX_CHANNELS (a bound of 64 once refused every LTX container)."""
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(1, 2, 3, dtype=torch.bool)
    codes = torch.randint(-127, 128, (channels, 6), generator=g, dtype=torch.int8)
    unit = [0.5 + i / channels for i in range(channels)]
    h = header(channels=channels, unit=unit, tokenizer={**header()["tokenizer"], "channels": channels})
    p = write(tmp_path, write_bytes(h, [(mask, codes, torch.rand(channels, generator=g), 1)], frames=1))
    with AtokReader(p) as r:
        assert r.header["unit"] == unit
        assert torch.equal(r.read_chunk(0).codes, codes)


def test_inspect_reads_index_only(tmp_path):
    data = bytearray(write_bytes(header(), chunks(), frames=21))
    # destroy the chunk payloads: inspect must still answer from header and index
    with AtokReader(write(tmp_path, bytes(data), "ok.atok")) as r:
        first, last = r.chunks[0][0], r.chunks[-1][0] + 4 + r.chunks[-1][1]
    for i in range(first + 4, last):
        data[i] = 0
    info = inspect(write(tmp_path, bytes(data)))
    assert info["frames"] == 21
    assert info["tokens_total"] == 6 * 6
    assert [c["tokens_kept"] for c in info["chunks"]] == [int(c[0].sum()) for c in chunks()]


def test_every_flipped_byte_is_detected(tmp_path):
    """A bit flip anywhere gives ContainerError; inside a chunk record the error names the chunk."""
    data = write_bytes(header(), chunks(), frames=21)
    with AtokReader(write(tmp_path, data, "ok.atok")) as r:
        spans = [(c[0], c[0] + 4 + c[1]) for c in r.chunks]
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        p = write(tmp_path, bytes(bad))
        with pytest.raises(ContainerError) as e:
            with AtokReader(p) as r:
                for i in range(len(r.chunks)):
                    r.read_chunk(i)
        for i, (a, b) in enumerate(spans):
            if a + 4 <= pos < b:
                assert f"chunk {i}" in str(e.value), (pos, str(e.value))


def test_every_truncation_is_refused(tmp_path):
    data = write_bytes(header(), chunks(), frames=21)
    for cut in range(len(data)):
        with pytest.raises(ContainerError):
            AtokReader(write(tmp_path, data[:cut])).close()


def test_wrong_magic_and_version(tmp_path):
    data = write_bytes(header(), chunks(), frames=21)
    with pytest.raises(ContainerError, match="not an .atok file"):
        AtokReader(write(tmp_path, b"GIF89a" + data[6:]))
    bad = bytearray(data)
    bad[8:10] = struct.pack("<H", 7)
    with pytest.raises(ContainerError, match="version 7"):
        AtokReader(write(tmp_path, bytes(bad)))


def forge(h, index, body=b""):
    """A container with an arbitrary (valid-checksum) header and index: what a hostile file looks like."""
    raw = msgpack.packb(h)
    idx = msgpack.packb(index)
    pre = PRELUDE.pack(MAGIC, 1, 0, len(raw), zlib.crc32(raw)) + raw
    return pre + body + idx + TRAILER.pack(len(pre) + len(body), len(idx), zlib.crc32(idx), b"ATOKEND\n")


@pytest.mark.parametrize("h,index", [
    (header(width=100000, height=100000, latent_width=12500, latent_height=12500), {"frames": 1, "chunks": []}),
    (header(), {"frames": 10 ** 12, "chunks": [[0, 1, 1, 0, 10, 0]]}),
    (header(channels=10 ** 9), {"frames": 1, "chunks": []}),
    (header(), {"frames": 1, "chunks": [[0, 10 ** 15, 1, 0, 10, 0]]}),
    (header(), {"frames": 1, "chunks": [[0, 5, 4, 10 ** 9, 10, 0]]}),
    (header(), {"frames": 1, "chunks": "x" * 100}),
    ("not a map", {"frames": 1, "chunks": []}),
    (header(quant="int4"), {"frames": 1, "chunks": []}),
    (header(latent_width=1), {"frames": 1, "chunks": []}),
])
def test_absurd_headers_refused_before_allocating(tmp_path, h, index):
    with pytest.raises(ContainerError):
        AtokReader(write(tmp_path, forge(h, index)))


def test_huge_header_length_refused(tmp_path):
    data = bytearray(write_bytes(header(), chunks(), frames=21))
    data[12:16] = struct.pack("<I", 0xFFFFFFF0)
    with pytest.raises(ContainerError, match="header length"):
        AtokReader(write(tmp_path, bytes(data)))


def test_zstd_bomb_refused(tmp_path):
    """A chunk whose zstd frame expands past what the index promises is refused without expanding it."""
    import zstandard
    h = header()
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (50 << 20))
    rec = struct.pack("<I", len(bomb)) + bomb
    raw = msgpack.packb(h)
    off = PRELUDE.size + len(raw)
    data = forge(h, {"frames": 1, "chunks": [[off, len(bomb), 1, 0, 8 + 16 + 1, zlib.crc32(bomb)]]}, rec)
    with AtokReader(write(tmp_path, data)) as r:
        with pytest.raises(ContainerError, match="chunk 0"):
            r.read_chunk(0)


def test_not_a_file(tmp_path):
    with pytest.raises(ContainerError):
        AtokReader(tmp_path)
    with pytest.raises(InputError, match="No such file"):  # a missing input is exit 66, like any input
        AtokReader(tmp_path / "missing.atok")


# --- the checks and the heatmap in plain Python (inspect and verify import no numpy) ------------------

def test_half_finiteness_is_numpys_for_every_bit_pattern():
    from adaptok_cli.format.container import halves_finite
    every = np.arange(1 << 16, dtype="<u2")
    finite = np.isfinite(every.view("<f2"))
    assert [halves_finite(struct.pack("<H", b)) for b in every.tolist()] == finite.tolist()
    assert halves_finite(every[finite].tobytes()) and halves_finite(b"")
    for bad in every[~finite][::97].tolist():
        assert not halves_finite(every[finite][:1000].tobytes() + struct.pack("<H", bad) + b"\0\0")


def heatmap_clip(tmp_path, quant="int8", bad=None):
    """A container of latent frames 7 x 100 (heatmap blocks cut short at both edges), random masks;
    bad: a value (fp16) or scale (int8) written into the second chunk."""
    g = torch.Generator().manual_seed(3)
    out = []
    for t, p, frames in ((3, 0.2, 9), (4, 0.7, 16), (1, 0.5, 4)):
        mask = torch.rand(t, 7, 100, generator=g) < p
        mask[0] |= not out                                      # the first latent frame is kept whole
        codes = torch.randint(-127, 128, (4, int(mask.sum())), generator=g, dtype=torch.int8)
        codes, scales = (codes, torch.rand(4, generator=g)) if quant == "int8" else (codes.half(), None)
        if bad is not None and len(out) == 1:
            (scales if quant == "int8" else codes)[1] = bad
        out.append((mask, codes, scales, frames))
    h = header(width=800, height=56, latent_width=100, latent_height=7, quant=quant)
    return write(tmp_path, write_bytes(h, out, 29)), [m for m, *_ in out]


def test_keep_counts_are_the_masks_summed(tmp_path):
    from adaptok_cli.measure.pictures import keep_counts
    path, masks = heatmap_clip(tmp_path)
    with AtokReader(path) as r:
        planes, n = keep_counts(r)
    counts = [sum(((plane >> p) & 1) << k for k, plane in enumerate(planes)) for p in range(700)]
    assert n == 8 and counts == torch.cat(masks).sum(0).reshape(-1).tolist()


@pytest.mark.parametrize("width", [48, 10, 3])
def test_terminal_heatmap_shows_numpys_block_means(tmp_path, width):
    """Counted on packed bits in plain Python, the heatmap is what numpy's block means of the unpacked
    masks give (keep_statistics, as --plot draws them)."""
    from adaptok_cli.measure.pictures import SHADES, keep_statistics, terminal_heatmap
    path, _ = heatmap_clip(tmp_path)
    with AtokReader(path) as r:
        _, heat = keep_statistics(r)
        rows = terminal_heatmap(r, width)
    step = max(1, -(-100 // width))
    expect = ["".join(SHADES[int(np.clip(np.round(heat[y:y + 2 * step, x:x + step].mean() * 4), 0, 4))]
                      for x in range(0, 100, step)) for y in range(0, 7, 2 * step)]
    assert rows == expect and len(rows[0]) <= width


@pytest.mark.parametrize("quant, bad, what", [("fp16", float("nan"), "values"), ("fp16", float("-inf"), "values"),
                                             ("int8", float("inf"), "scales"), ("int8", float("nan"), "scales")])
def test_values_and_scales_that_are_not_finite_are_refused(tmp_path, monkeypatch, quant, bad, what):
    """A file from a writer without adaptok's check_finite (forged, or an older adaptok)."""
    monkeypatch.setattr(container_module, "check_finite", lambda *a: None)
    path, _ = heatmap_clip(tmp_path, quant, bad)
    with AtokReader(path) as r:
        r.check_chunk(0)
        r.check_chunk(2)
        with pytest.raises(ContainerError, match=f"chunk 1 {what}"):
            r.check_chunk(1)


def test_a_log_variance_unlike_the_values_is_not_written(tmp_path):
    """The version-6 block is (C, kept) as the values are: a log-variance of another shape would make
    a payload whose size readers refuse, so the writer says so instead of writing it."""
    cs = chunks()
    good = [(*c, torch.zeros(c[1].shape)) for c in cs]
    with AtokReader(write(tmp_path, write_bytes(header(logvar="uint8"), good, frames=21))) as r:
        assert r.version == 6 and torch.equal(r.read_chunk(1).logvar, good[1][4])
    for shape in ((4, cs[0][1].shape[1] + 1), (3, cs[0][1].shape[1]), (cs[0][1].shape[1], 4)):
        bad = [(*cs[0], torch.zeros(shape)), *good[1:]]
        with pytest.raises(ValueError, match=r"\(C, kept\)"):
            write_bytes(header(logvar="uint8"), bad, frames=21)


@pytest.mark.parametrize("quant", ["int8", "fp16"])
def test_non_finite_latents_are_not_written(tmp_path, quant):
    """A tokeniser that gives NaN or inf (a broken model, fp16 overflow) would make a container its
    reader refuses (scales, values, the log-variance's range): the writer refuses it instead, with the
    model's exit code, so no unreadable file is ever written."""
    from adaptok_cli.errors import EXIT_UNAVAILABLE, ModelUnavailableError
    cs = chunks()
    mask, codes, qscale, n = cs[0]
    if quant == "int8":
        bad = [(mask, codes, qscale.clone().index_fill_(0, torch.tensor([1]), float("nan")), n)]
    else:
        values = torch.randn(codes.shape).half()
        values[2, 0] = float("inf")
        bad = [(mask, values, None, n)]
    with pytest.raises(ModelUnavailableError, match="non-finite latents") as e:
        write_bytes(header(quant=quant), bad, frames=n)
    assert e.value.exit_code == EXIT_UNAVAILABLE
    lv = torch.zeros(codes.shape)
    lv[0, 0] = float("nan")
    with pytest.raises(ModelUnavailableError, match="non-finite latents"):
        write_bytes(header(logvar="uint8"), [(*cs[0], lv)], frames=n)
