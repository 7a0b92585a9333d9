"""Refactors must not change a byte: containers made from fixed inputs, and the frames they decode to,
are stored in tests/data/reference (written by tests/make_reference_containers.py with format 1 and 2).

Format 3 added each chunk's frame count to the index, format 4 the rule's unit to the header. With the
unit formats 1 to 3 used (--unit spread), everything else (the other header fields, chunk and audio
records) must stay byte for byte what format 1 and 2 wrote, and old files must still decode."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import adaptok_cli as atk
from adaptok_cli.container import PRELUDE, AtokReader

ROOT = Path(__file__).resolve().parents[1]
REF = Path(__file__).resolve().parent / "data" / "reference"
CASES = json.loads((REF / "digests.json").read_text())


def frames_digest(path) -> str:
    h = hashlib.sha256()
    with atk.open(path, fill="lit") as f:
        for frame in f.iter_frames():
            h.update(np.ascontiguousarray(frame).tobytes())
    return h.hexdigest()


def records_span(r: AtokReader, data: bytes) -> tuple[int, int]:
    """Where the chunk and audio records lie: from the end of the header to the end of the last record."""
    last = r.audio[-1] if len(r.audio) else r.chunks[-1]
    return PRELUDE.size + PRELUDE.unpack_from(data)[3], int(last[0] + 4 + last[1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_compress_writes_the_reference_bytes(tmp_path, name):
    case = CASES[name]
    dst = tmp_path / f"{name}.atok"
    atk.compress(ROOT / case["input"], dst, unit="spread", **case["options"])
    new, old = dst.read_bytes(), (REF / f"{name}.atok").read_bytes()
    with AtokReader(dst) as a, AtokReader(REF / f"{name}.atok") as b:
        assert (a.version, b.version) == (4, 2 if name == "sound" else 1)
        assert a.header.pop("unit_name") == "spread" and "unit" not in b.header
        np.testing.assert_array_equal(a.header.pop("unit"), a_scale())   # the spread is the tokeniser's scale
        assert a.header == b.header
        (s0, e0), (s1, e1) = records_span(a, new), records_span(b, old)
        assert new[s0:e0] == old[s1:e1]                              # every record, byte for byte
        shift = s0 - s1                                              # the header grew by the unit
        np.testing.assert_array_equal(a.chunks[:, 1:], b.chunks[:, 1:])   # the stored frame counts are the derived ones
        np.testing.assert_array_equal(a.chunks[:, 0], b.chunks[:, 0] + shift)
        if len(b.audio):
            np.testing.assert_array_equal(a.audio[:, 1:], b.audio[:, 1:])
            np.testing.assert_array_equal(a.audio[:, 0], b.audio[:, 0] + shift)
        assert a.frames == b.frames and new[:8] == old[:8]


def a_scale():
    from adaptok_cli.tokenizer import load_tokenizer
    return load_tokenizer("tinytok").scale.numpy().astype(np.float64)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_containers_decode_to_the_reference_frames(name):
    assert frames_digest(REF / f"{name}.atok") == CASES[name]["frames_sha256"]
