"""Model files from strangers (tokeniser and LIT safetensors, diffusers folders): whatever their
headers and configs say, a one-line refusal (69) naming the file and the field, before anything is
built; never RecursionError, a crash (70) or minutes of building."""
import json
import re
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from adaptok_cli import errors
from adaptok_cli.errors import ModelUnavailableError
from adaptok_cli.core.lit import LIT, LITConfig, load_lit, save_lit
from adaptok_cli.models.matching import ModelRef
from adaptok_cli.models.tokenizer import load_tokenizer

from conftest import static_frames, write_video
from test_cli import one_line_error, run

DEEP = "[" * 20000 + "]" * 20000          # 40 KB: under the size bounds, far over the nesting one


def safetensors_bytes(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def resaved(src, dst, **metadata):
    """src's tensors saved again with its metadata changed."""
    from adaptok_cli.models.tokenizer import safetensors_metadata
    with open(src, "rb") as f:
        meta = safetensors_metadata(f)
    save_file(load_file(str(src)), str(dst), metadata={**meta, **metadata})
    return dst


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "c.mp4", static_frames(5, 32, 32))


@pytest.fixture(scope="module")
def lit_path(tmp_path_factory, small_tok_path):
    from adaptok_cli.models.tokenizer import spec_fingerprint
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


def test_a_deep_or_dangling_diffusers_shard_index_is_refused(tmp_path):
    """The shard index decides which weights load: nested past 32 it is refused before parsing, and one
    naming a missing shard is refused by name (69), never a RecursionError or a half-loaded model."""
    from adaptok_cli.models.diffusers_tok import WEIGHTS_INDEX, weight_files
    deep, dangling = tmp_path / "deep", tmp_path / "dangling"
    for folder, index in ((deep, '{"weight_map": ' + DEEP + "}"),
                          (dangling, '{"weight_map": {"a.weight": "part-1.safetensors"}}')):
        folder.mkdir()
        (folder / WEIGHTS_INDEX).write_text(index)
    with pytest.raises(ModelUnavailableError, match="nested more than 32 deep"):
        weight_files(deep)
    with pytest.raises(ModelUnavailableError, match="names part-1.safetensors, which is missing"):
        weight_files(dangling)


def test_safejson_counts_nesting_outside_strings_only():
    from adaptok_cli.format import safejson
    assert safejson.loads('{"a": "[[[[{{{{\\"[[[[", "b": [[1]]}', 1000, max_depth=3) == {"a": '[[[[{{{{"[[[[', "b": [[1]]}
    with pytest.raises(safejson.JSONError, match="nested more than 3 deep"):
        safejson.loads('{"b": [[[1]]]}', 1000, max_depth=3)
    with pytest.raises(safejson.JSONError, match="over the limit"):
        safejson.loads("[" + "1," * 600 + "1]", 1000)
    with pytest.raises(safejson.JSONError, match="not valid JSON"):
        safejson.loads("{'a': 1}", 1000)


# --- 5. senseless values: every field checked before anything is built -------------------------------

TINYTOK = {"latent_channels": 16, "width": 16, "shallow": 8, "enc_blocks": 1, "dec_blocks": 1, "group": 4, "patch": 8}


@pytest.mark.parametrize("change,field", [
    ({"patch": 0}, "patch"), ({"patch": 7}, "patch"), ({"width": 10 ** 6}, "width"), ({"enc_blocks": 100000}, "enc_blocks"),
    ({"latent_channels": 0}, "latent_channels"), ({"group": "4"}, "group"), ({"shallow": 9}, "shallow"),
    ({"group": True}, "group"), ({"evil": 1}, "unknown field 'evil'")])
def test_senseless_tinytok_configs_name_the_field(tmp_path, small_tok_path, change, field):
    bad = resaved(small_tok_path, tmp_path / "t.safetensors", config=json.dumps({**TINYTOK, **change}))
    with pytest.raises(ModelUnavailableError, match=f"tinytok config (field |has an )?{field}"):
        load_tokenizer(str(bad))


def test_a_small_tinytok_file_claiming_a_huge_network_is_refused_small(tmp_path, small_tok_path, clip):
    """Widths and depths within range but not the file's: the network is compared on the meta device,
    so nothing of its size is allocated (issue 29: 1.2 GB before the refusal)."""
    big = {**TINYTOK, "width": 1024, "shallow": 1024, "enc_blocks": 16, "dec_blocks": 16}   # 6.3 GB as float32
    bad = resaved(small_tok_path, tmp_path / "t.safetensors", config=json.dumps(big))
    from test_security import peak_run
    p, _, peak = peak_run("compress", clip, "-o", tmp_path / "c.atok", "--tokenizer", bad)
    assert "weights do not match their config" in one_line_error(p, errors.EXIT_UNAVAILABLE)
    assert peak < 1000, peak                        # measured: 259 MB (torch and PyAV loaded)


LIT_CONFIG = {"channels": 16, "dim": 16, "layers": 1, "heads": 2}


@pytest.mark.parametrize("change,field", [
    ({"heads": 0}, "heads"), ({"window": 0}, "window"), ({"pos_period": 0}, "pos_period"), ({"span": 0}, "span"),
    ({"heads": 5}, "heads: must divide dim"), ({"base": "evil"}, "base"), ({"layers": 100000}, "layers"),
    ({"dim": 18, "heads": 2}, "dim: must be a multiple of 4"), ({"context": -1}, "context"),
    ({"pos_period": 12}, "pos_period: must be a multiple of window"), ({"bidirectional": "yes"}, "bidirectional"),
    ({"channels": 2 ** 40}, "channels")])
def test_senseless_lit_configs_name_the_field(tmp_path, lit_path, change, field):
    bad = resaved(lit_path, tmp_path / "l.safetensors", config=json.dumps({**LIT_CONFIG, **change}))
    with pytest.raises(ModelUnavailableError, match=f"LIT config field {field}"):
        load_lit(bad)


def test_a_senseless_lit_is_refused_by_decompress(tmp_path, small_tok_path, lit_path, clip):
    bad = resaved(lit_path, tmp_path / "l.safetensors", config=json.dumps({**LIT_CONFIG, "layers": 100000}))
    assert run("compress", clip, "-o", tmp_path / "c.atok", "--tokenizer", small_tok_path, "--lit", bad,
               "-q").returncode == 0
    line = one_line_error(run("decompress", tmp_path / "c.atok", "-o", tmp_path / "c.y4m", "--tokenizer",
                              small_tok_path, "--lit", bad), errors.EXIT_UNAVAILABLE)
    assert "LIT config field layers is 100000" in line and not (tmp_path / "c.y4m").exists()


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    """Tiny saved VAEs of five families (test_diffusers' configs): their weights, then any config."""
    pytest.importorskip("diffusers")
    from test_diffusers import save_vae
    root = tmp_path_factory.mktemp("vaes")
    for name in ("wan", "cogvideox", "ltx", "mochi", "cosmos"):
        save_vae(name, root / name)
    return root


@pytest.mark.parametrize("family,change,field", [
    ("wan", {"_class_name": ["AutoencoderKLWan"]}, "class"), ("wan", {"dim_mult": []}, "field dim_mult"),
    ("wan", {"temperal_downsample": "xx"}, "field temperal_downsample"), ("wan", {"patch_size": 7}, "field patch_size"),
    ("wan", {"base_dim": 10 ** 9}, "field base_dim"), ("wan", {"num_res_blocks": 0}, "field num_res_blocks"),
    ("wan", {"temperal_downsample": [True]}, "field temperal_downsample: needs one entry per level"),
    ("wan", {"dim_mult": [1] * 7, "temperal_downsample": [False] * 6, "patch_size": 2, "in_channels": 12,
             "out_channels": 12}, "field dim_mult: its levels and patch_size"),
    ("wan", {"base_dim": 1024}, "weights do not match config.json"),
    ("wan", {"_diffusers_version": [1]}, "field '_diffusers_version'"),
    ("cogvideox", {"norm_num_groups": 3}, "field norm_num_groups: must divide"),
    ("cogvideox", {"block_out_channels": "8888"}, "field block_out_channels"),
    ("cogvideox", {"down_block_types": ["os.system"] * 4}, "field down_block_types"),
    ("ltx", {"patch_size": 3}, "field patch_size"), ("ltx", {"layers_per_block": [1]}, "field layers_per_block"),
    ("ltx", {"block_out_channels": [8, 8, 8, 8, 8, 8]}, "config does not build|do not match"),
    ("mochi", {"act_fn": "os.system"}, "field act_fn"), ("mochi", {"latent_channels": 1.5}, "field latent_channels"),
    ("cosmos", {"patch_type": "evil"}, "field patch_type"), ("cosmos", {"num_layers": 10 ** 6}, "field num_layers")])
def test_senseless_diffusers_configs_name_the_field(tmp_path, vaes, family, change, field):
    """Issue 29's configs (`_class_name` as a list, `dim_mult: []`, `temperal_downsample: "xx"`,
    `patch_size: 7`) and more: 69 naming the field, before anything is built (was 70, or minutes)."""
    folder = tmp_path / family
    folder.mkdir()
    for f in (vaes / family).iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "config.json").unlink()
    config = json.loads((vaes / family / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelUnavailableError) as e:
        load_tokenizer(str(folder))
    assert re.search(field, said(e)), said(e)


# --- 6. hf: specs stay inside the Hugging Face cache ------------------------------------------------

@pytest.mark.parametrize("spec", ["hf:org/repo/../../..", "hf:org/repo/./vae", "hf:../x", "hf:org/..", "hf:org/repo/a\\..\\b"])
def test_hf_specs_with_dots_are_refused_before_the_cache_is_read(spec, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)      # the cache is never consulted
    with pytest.raises(ModelUnavailableError, match="names only: no '.' or '..'"):
        load_tokenizer(spec)


def test_fuzz_models_short_run():
    """The CI slice of tests/fuzz_models.py (docs/RELIABILITY.md has the long run): mutated TinyTok, LIT
    and diffusers configs are refused with 69 or load and run; nothing else."""
    import fuzz_models
    stats = fuzz_models.fuzz_models(300, seed=0)
    assert stats["crashes"] == [] and stats["hangs"] == 0, stats["crashes"][:3]
    assert stats["outcomes"]["refused"] > 160 and stats["outcomes"].get("loaded and ran", 0) > 10
    families = {"tinytok", "lit", "cosmos", "wan", "wan2.2", "mochi", "hunyuanvideo", "ltx", "cogvideox"}
    assert set(stats["kinds"]) == families and families <= set(stats["refused_by_kind"])
