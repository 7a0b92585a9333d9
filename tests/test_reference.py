"""Refactors must not change a byte: containers made today from fixed inputs, and the frames they
decode to, are stored in tests/data/reference (written by tests/make_reference_containers.py)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import adaptok_cli as atk

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
    assert dst.read_bytes() == (REF / f"{name}.atok").read_bytes()


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_containers_decode_to_the_reference_frames(name):
    assert frames_digest(REF / f"{name}.atok") == CASES[name]["frames_sha256"]
