"""Dense hold-fill reading (AtokFile.dense, AtokDataset items) against a position-by-position reference
made from what was written: the fast path (one read of the records, one gather on the values' bits)
must give exactly these values, in every layout and dtype, and keep every check of read_chunk."""
import pytest
import torch

import adaptok_cli as atk
from adaptok_cli.format import container
from adaptok_cli.core import masking
from adaptok_cli.format.collate import crop_frames
from adaptok_cli.format.container import AtokReader, ContainerError, write_bytes

C, H, W = 4, 3, 5
SHAPES = ((4, 13), (4, 16), (3, 12))        # (latent frames, video frames) per chunk; time factor 4


def header(quant):
    return {"width": 40, "height": 24, "latent_width": W, "latent_height": H, "channels": C, "fps_num": 25,
            "fps_den": 1, "tokenizer": {"name": "t", "fingerprint": "f", "time_factor": 4, "space_factor": 8,
                                        "channels": C, "source": "builtin", "stateful": True},
            "lit": None, "threshold": 0.1, "keep_ratio": None, "keyframe_interval": 0, "quant": quant, "chunk": 4}


def written(quant, seed):
    """Chunks as AtokWriter takes them: mask, codes (C, kept), scales, video frames."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (t, frames) in enumerate(SHAPES):
        mask = torch.rand(t, H, W, generator=g) > 0.6
        if i == 0:
            mask[0] = True                   # the stream's first latent frame is kept whole
        n = int(mask.sum())
        if quant == "int8":
            out.append((mask, torch.randint(-127, 128, (C, n), generator=g, dtype=torch.int8),
                        torch.rand(C, generator=g) + 0.01, frames))
        else:
            out.append((mask, torch.randn(C, n, generator=g).half(), None, frames))
    return out


def reference(chunks) -> torch.Tensor:
    """Hold fill, one latent frame and one position at a time: (T, C, h, w) float32."""
    held, frames = torch.zeros(C, H, W), []
    for mask, codes, qscale, _ in chunks:
        values = codes.float() * (qscale[:, None] if qscale is not None else 1)
        at = 0
        for frame in mask:
            for y, x in frame.nonzero().tolist():    # kept values are stored in (t, y, x) order
                held[:, y, x] = values[:, at]
                at += 1
            frames.append(held.clone())
    return torch.stack(frames)


@pytest.fixture(params=[("int8", 0), ("int8", 1), ("fp16", 2)])
def made(request, tmp_path):
    """A clip written from known chunks: (path, the chunks as written)."""
    quant, seed = request.param
    chunks = written(quant, seed)
    folder = tmp_path / "ds"
    folder.mkdir()
    path = folder / "c.atok"
    path.write_bytes(write_bytes(header(quant), chunks, sum(n for _, n in SHAPES)))
    return path, chunks


@pytest.fixture
def clip(made):
    path, chunks = made
    return path, reference(chunks)


def test_dense_hold_equals_the_reference(clip):
    path, ref = clip
    with atk.open(path) as f:
        assert torch.equal(f.dense(), ref)
        assert f.dense().dtype == torch.float32
        cthw = f.dense(layout="CTHW", dtype=torch.bfloat16)
        assert cthw.dtype == torch.bfloat16 and torch.equal(cthw, ref.transpose(0, 1).bfloat16())
        assert torch.equal(f.dense(dtype=torch.float16), ref.half())
        assert torch.equal(f.dense(dtype=torch.float64), ref.double())
        assert torch.equal(f.dense(1, 3), ref[4:])          # chunk 0 only moves the hold state
        assert torch.equal(f.dense(2, 3, layout="CTHW"), ref[8:].transpose(0, 1))
        assert torch.equal(torch.cat(list(f.iter_dense())), ref)
    item = atk.AtokDataset(path.parent)[0]
    assert torch.equal(item["latents"], ref)
    item = atk.AtokDataset(path.parent, layout="CTHW", dtype=torch.bfloat16)[0]
    assert torch.equal(item["latents"], ref.transpose(0, 1).bfloat16())


def test_records_read_one_by_one_past_the_span_limit(clip, monkeypatch):
    """Records spanning more than MAX_SPAN bytes are read one at a time: the same chunks."""
    path, ref = clip
    with AtokReader(path) as r:
        one_read = r.read_chunks(0, 3)
        monkeypatch.setattr(container, "MAX_SPAN", 0)
        for a, b, c in zip(one_read, r.read_chunks(0, 3), (r.read_chunk(i) for i in range(3))):
            assert torch.equal(a.mask, b.mask) and torch.equal(a.mask, c.mask)
            assert torch.equal(a.codes, b.codes) and torch.equal(a.codes, c.codes)
        assert r.read_chunks(1, 1) == []
        with pytest.raises(IndexError, match="out of range"):
            r.read_chunks(2, 4)
    with atk.open(path) as f:
        assert torch.equal(f.dense(), ref)


def test_read_kept_gives_read_chunks_values_as_arrays(made, monkeypatch):
    """read_kept (the dense path's numpy input) holds exactly what read_chunks' tensors hold, read in
    one read or record by record, and refuses the same ranges."""
    path, _ = made
    with AtokReader(path) as r:
        for span in (container.MAX_SPAN, 0):
            monkeypatch.setattr(container, "MAX_SPAN", span)
            for start, stop in ((0, 3), (1, 3), (2, 3)):
                for k, c in zip(r.read_kept(start, stop), r.read_chunks(start, stop), strict=True):
                    assert k.index == c.index and torch.equal(torch.from_numpy(k.mask), c.mask)
                    assert torch.equal(torch.from_numpy(k.codes.copy()), c.codes)
                    assert (k.qscale is None) == (c.qscale is None)
                    assert k.qscale is None or torch.equal(torch.from_numpy(k.qscale.copy()), c.qscale)
        assert r.read_kept(1, 1) == []
        with pytest.raises(IndexError, match="out of range"):
            r.read_kept(2, 4)


def test_sparse_tokens_are_the_written_values(made):
    """Sparse reads (chunk by chunk, and a dataset item of the whole clip) give the written values,
    dequantised, one (C,) row per kept position in mask order."""
    path, chunks = made
    rows = [(codes.float() * (qscale[:, None] if qscale is not None else 1)).T for _, codes, qscale, _ in chunks]
    with atk.open(path) as f:
        for i, (mask, *_) in enumerate(chunks):
            got_mask, tokens = f.sparse(i)
            assert torch.equal(got_mask, mask) and tokens.dtype == torch.float32
            assert torch.equal(tokens, rows[i]) and tokens.is_contiguous()
    item = atk.AtokDataset(path.parent, mode="sparse")[0]
    assert torch.equal(item["mask"], torch.cat([m for m, *_ in chunks])) and torch.equal(item["tokens"], torch.cat(rows))
    item = atk.AtokDataset(path.parent, mode="sparse", dtype=torch.bfloat16)[0]
    assert torch.equal(item["tokens"], torch.cat(rows).bfloat16())


@pytest.mark.parametrize("crop", [1, 3, 5, 11, 50])
def test_dense_crops_are_the_reference_frames(clip, crop):
    """A dense crop (only its frames gathered) is the reference's frames from the start it reports,
    drawn from torch's RNG as collate.crop_frames' caller draws it, in both layouts and in bf16; a
    sparse crop (only its chunks' tokens made) is crop_frames' cut of the whole clip's item."""
    path, ref = clip
    for layout, dtype in (("TCHW", torch.float32), ("CTHW", torch.bfloat16)):
        ds = atk.AtokDataset(path.parent, crop=crop, layout=layout, dtype=dtype)
        torch.manual_seed(7)
        starts = {int(torch.randint(0, max(1, len(ref) - crop + 1), ())) for _ in range(6)}
        torch.manual_seed(7)
        for _ in range(6):
            item = ds[0]
            start = item["latent_start"]
            want = ref[start:start + crop].to(dtype)
            assert start in starts and item["latents"].is_contiguous()
            assert torch.equal(item["latents"], want.transpose(0, 1) if layout == "CTHW" else want)
    whole = atk.AtokDataset(path.parent, mode="sparse")[0]
    ds = atk.AtokDataset(path.parent, mode="sparse", crop=crop)
    for _ in range(6):
        item = ds[0]
        want = crop_frames(whole, crop, item["latent_start"])
        assert torch.equal(item["mask"], want["mask"]) and torch.equal(item["tokens"], want["tokens"])


def test_a_damaged_record_in_the_span_is_named(clip, tmp_path):
    """Reading the records in one go keeps each record's checks: a flipped byte in chunk 1's zstd frame
    is a checksum mismatch naming chunk 1, from dense() and from the dataset."""
    path, _ = clip
    with AtokReader(path) as r:
        off = int(r.chunks[1, container.OFFSET]) + container.RECORD.size + 5
    data = bytearray(path.read_bytes())
    data[off] ^= 0xFF
    path.write_bytes(bytes(data))
    with atk.open(path) as f, pytest.raises(ContainerError, match="chunk 1 checksum mismatch"):
        f.dense()
    for mode in ("dense", "sparse"):
        with pytest.raises(ContainerError, match="chunk 1 checksum mismatch"):
            atk.AtokDataset(path.parent, mode=mode)[0]
        with pytest.raises(ContainerError, match="chunk 1 checksum mismatch"):
            atk.AtokDataset(path.parent, mode=mode, crop=1)[0]     # whatever frames the crop holds
    with atk.open(path) as f, pytest.raises(ContainerError, match="chunk 1 checksum mismatch"):
        f.sparse(1)


def test_hold_gather_torch_and_numpy_paths_agree():
    """The numpy gather (on the values' bits) and torch's (autograd) give the same latents; a table too
    narrow for its mask is refused before any unchecked gather."""
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(5, H, W, generator=g) > 0.5
    table = torch.randn(C, H * W + int(mask.sum()), generator=g)
    for layout in ("TCHW", "CTHW"):
        want = masking.hold_gather(table.clone().requires_grad_(), mask, layout).detach()
        assert torch.equal(masking.hold_gather(table, mask, layout), want)
        assert torch.equal(masking.hold_gather(table.bfloat16(), mask, layout), want.bfloat16())
    with pytest.raises(ValueError, match="too narrow"):
        masking.hold_gather(table[:, :-1], mask)
