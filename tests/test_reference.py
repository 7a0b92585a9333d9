"""Refactors must not change a byte: containers made from fixed inputs, and the frames they decode to,
are stored in tests/data/reference (written by tests/make_reference_containers.py with format 1 and 2).

Format 3 added each chunk's frame count to the index; everything else (header, chunk and audio
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


@pytest.mark.parametrize("name", sorted(CASES))
def test_compress_writes_the_reference_bytes(tmp_path, name):
    case = CASES[name]
    dst = tmp_path / f"{name}.atok"
    atk.compress(ROOT / case["input"], dst, **case["options"])
    new, old = dst.read_bytes(), (REF / f"{name}.atok").read_bytes()
    with AtokReader(dst) as a, AtokReader(REF / f"{name}.atok") as b:
        assert (a.version, b.version) == (3, 2 if name == "sound" else 1)
        records_end = int(a.chunks[-1, 0] + 4 + a.chunks[-1, 1]) if not len(a.audio) else int(a.audio[-1, 0] + 4 + a.audio[-1, 1])
        assert new[10:records_end] == old[10:records_end]           # header and every record, byte for byte
        np.testing.assert_array_equal(a.chunks, b.chunks)            # the stored frame counts are the derived ones
        np.testing.assert_array_equal(a.audio, b.audio)
        assert a.frames == b.frames and new[:8] == old[:8] and new[PRELUDE.size - 12:] != old[PRELUDE.size - 12:]


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_containers_decode_to_the_reference_frames(name):
    assert frames_digest(REF / f"{name}.atok") == CASES[name]["frames_sha256"]
