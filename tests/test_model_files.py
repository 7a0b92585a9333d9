"""Model files from strangers (tokeniser and LIT safetensors, diffusers folders): whatever their
headers and configs say, a one-line refusal (69) naming the file and the field, before anything is
built; never RecursionError, a crash (70) or minutes of building."""
import re
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from adaptok_cli import errors
from adaptok_cli.errors import ModelUnavailableError
from adaptok_cli.lit import LIT, LITConfig, load_lit, save_lit
from adaptok_cli.models import ModelRef
from adaptok_cli.tokenizer import load_tokenizer

from conftest import static_frames, write_video
from test_cli import one_line_error, run

DEEP = "[" * 20000 + "]" * 20000          # 40 KB: under the size bounds, far over the nesting one


def safetensors_bytes(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def resaved(src, dst, **metadata):
    """src's tensors saved again with its metadata changed."""
    from adaptok_cli.tokenizer import safetensors_metadata
    with open(src, "rb") as f:
        meta = safetensors_metadata(f)
    save_file(load_file(str(src)), str(dst), metadata={**meta, **metadata})
    return dst


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "c.mp4", static_frames(5, 32, 32))


@pytest.fixture(scope="module")
def lit_path(tmp_path_factory, small_tok_path):
    from adaptok_cli.tokenizer import spec_fingerprint
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lit") / "lit.safetensors"
    save_lit(LIT(LITConfig(dim=16, layers=1, heads=2)), path, spec_fingerprint(str(small_tok_path)))
    return path


# --- 4. deeply nested JSON ------------------------------------------------------------------------

DEEP_WORDS = "nested more than 32 deep|recursion limit exceeded"     # ours, or safetensors' own parser's


def said(e) -> str:
    """An error's message after the file name it starts with."""
    return str(e.value if hasattr(e, "value") else e).split(": ", 1)[1]


def test_deep_json_in_model_files_is_refused(tmp_path, small_tok_path, lit_path, clip):
    """Nesting in a safetensors header, in the config its metadata holds, and in a diffusers config.json:
    69, never RecursionError (issue 29: exit 70)."""
    deep_header = tmp_path / "deep-header.safetensors"
    deep_header.write_bytes(safetensors_bytes(b'{"__metadata__": {"config": "{}"}, "t": ' + DEEP.encode() + b"}"))
    deep_config = resaved(small_tok_path, tmp_path / "deep-config.safetensors", config=DEEP)
    deep_lit = resaved(lit_path, tmp_path / "deep-lit.safetensors", config=DEEP)
    for path in (deep_header, deep_config):
        with pytest.raises(ModelUnavailableError) as e:
            load_tokenizer(str(path))
        assert re.search(DEEP_WORDS, said(e))
    with pytest.raises(ModelUnavailableError) as e:
        load_lit(deep_lit)
    assert "nested more than 32 deep" in said(e)
    with pytest.raises(ValueError, match="nested more than 32 deep"):
        ModelRef(deep_header).metadata
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "AutoencoderKLWan", "x": ' + DEEP + "}")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(safetensors_bytes(b"{}"))
    for tok, more in ((deep_config, []), (folder, []), (small_tok_path, ["--lit", deep_header])):
        line = one_line_error(run("compress", clip, "-o", tmp_path / "c.atok", "--tokenizer", tok, *more),
                              errors.EXIT_UNAVAILABLE)
        assert "nested more than 32 deep" in line.split(": ", 2)[2] and not (tmp_path / "c.atok").exists()


def test_safejson_counts_nesting_outside_strings_only():
    from adaptok_cli import safejson
    assert safejson.loads('{"a": "[[[[{{{{\\"[[[[", "b": [[1]]}', 1000, max_depth=3) == {"a": '[[[[{{{{"[[[[', "b": [[1]]}
    with pytest.raises(safejson.JSONError, match="nested more than 3 deep"):
        safejson.loads('{"b": [[[1]]]}', 1000, max_depth=3)
    with pytest.raises(safejson.JSONError, match="over the limit"):
        safejson.loads("[" + "1," * 600 + "1]", 1000)
    with pytest.raises(safejson.JSONError, match="not valid JSON"):
        safejson.loads("{'a': 1}", 1000)
