"""What a diffusers video VAE's config.json may say, one table per family (diffusers_tok.FAMILIES).

diffusers builds the network from these fields as they are: a list where a name belongs, `dim_mult:
[]`, `temperal_downsample: "xx"` or `patch_size: 7` crash inside it or in the factor probe, and large
depths or widths would build for minutes. So each field the class takes is checked here against a
sane range before anything is built (fields it does not take are ignored by diffusers, and left out),
then the rules between fields that are certain from the classes' code (list lengths that must agree,
groups that must divide widths, factors that must divide adaptok's probe clip of 1 + 24 frames of
64x64). Subtler disagreements between fields (LTX and Mochi nest their levels in several ways) are
left to diffusers_tok, which builds the network on the meta device first: whatever fails there is
refused (69) before any weight is read. Ranges cover the published models with room to spare.
"""
from __future__ import annotations

from adaptok_cli.models.modelcheck import Field, boolean, check_fields, integer, listed, number, one_of, optional

PROBE_SIDE, PROBE_STEPS = 64, 24       # the factor probe: 64 pixels square, 1 + 24 frames

LEVEL = integer(1, 4096)                              # channels of one level of the network
LEVELS = listed(LEVEL, 1, 8)
FLAGS = listed(boolean(), 1, 9)
STATS = optional(listed(number(-1e6, 1e6), 0, 1024))   # per-channel latent statistics (informative)
ACTS = one_of("silu", "swish", "mish", "gelu", "relu")
COMMON = {"in_channels": integer(1, 64), "out_channels": integer(1, 64), "latent_channels": integer(1, 1024),
          "scaling_factor": number(1e-6, 1e6), "latents_mean": STATS, "latents_std": STATS}


def _blocks(name: str) -> Field:
    return listed(one_of(name), 1, 8)


def _divides(total: int, factor) -> bool:
    return type(factor) is int and factor >= 1 and total % factor == 0


def _len(c, key, default) -> int:
    v = c.get(key, default)
    return len(v) if isinstance(v, list) else -1


WAN = {**COMMON, "base_dim": integer(1, 1024), "decoder_base_dim": optional(integer(1, 1024)),
       "z_dim": integer(1, 1024), "dim_mult": listed(integer(1, 16), 1, 7), "num_res_blocks": integer(1, 8),
       "attn_scales": listed(number(0, 1), 0, 8), "temperal_downsample": listed(boolean(), 0, 6),
       "dropout": number(0, 1), "is_residual": boolean(), "patch_size": optional(one_of(1, 2, 4)),
       "scale_factor_temporal": optional(integer(1, 64)), "scale_factor_spatial": optional(integer(1, 64))}
WAN_RULES = [
    ("temperal_downsample", lambda c: _len(c, "temperal_downsample", [0] * 3) == _len(c, "dim_mult", [0] * 4) - 1,
     "needs one entry per level of dim_mult but the last"),
    ("dim_mult", lambda c: _divides(PROBE_SIDE, (c.get("patch_size") or 1) * 2 ** (_len(c, "dim_mult", [0] * 4) - 1)),
     f"its levels and patch_size make a spatial factor that does not divide {PROBE_SIDE}"),
    ("temperal_downsample", lambda c: _divides(PROBE_STEPS, 2 ** sum(c.get("temperal_downsample", [0, 1, 1]))),
     f"makes a time factor that does not divide {PROBE_STEPS}"),
    ("in_channels", lambda c: c.get("in_channels", 3) == c.get("out_channels", 3) == 3 * (c.get("patch_size") or 1) ** 2,
     "in_channels and out_channels must be 3 times patch_size squared"),
]

COGVIDEOX = {**COMMON, "down_block_types": _blocks("CogVideoXDownBlock3D"), "up_block_types": _blocks("CogVideoXUpBlock3D"),
             "block_out_channels": LEVELS, "layers_per_block": integer(1, 16), "act_fn": ACTS,
             "norm_eps": number(1e-12, 1), "norm_num_groups": integer(1, 4096),
             "temporal_compression_ratio": one_of(1, 2, 4, 8), "sample_height": integer(1, 16384),
             "sample_width": integer(1, 16384), "shift_factor": optional(number(-1e6, 1e6)),
             "force_upcast": Field(lambda v: type(v) in (bool, int, float), "true or false"),
             "use_quant_conv": boolean(), "use_post_quant_conv": boolean(), "invert_scale_latents": boolean()}

HUNYUAN = {**COMMON, "down_block_types": _blocks("HunyuanVideoDownBlock3D"),
           "up_block_types": _blocks("HunyuanVideoUpBlock3D"), "block_out_channels": LEVELS,
           "layers_per_block": integer(1, 16), "act_fn": ACTS, "norm_num_groups": integer(1, 4096),
           "spatial_compression_ratio": one_of(1, 2, 4, 8, 16, 32, 64), "temporal_compression_ratio": one_of(1, 2, 4, 8),
           "mid_block_add_attention": boolean()}


def _unet_rules(default_levels: int, default_groups: int) -> list:
    """CogVideoX and HunyuanVideo: as many block types as levels, groups dividing every width, and at
    most 64 pixels a latent side."""
    levels = [0] * default_levels
    return [
        ("down_block_types", lambda c: _len(c, "down_block_types", levels) == _len(c, "block_out_channels", levels),
         "needs one block type per entry of block_out_channels"),
        ("up_block_types", lambda c: _len(c, "up_block_types", levels) == _len(c, "block_out_channels", levels),
         "needs one block type per entry of block_out_channels"),
        ("norm_num_groups", lambda c: all(w % c.get("norm_num_groups", default_groups) == 0
                                          for w in c.get("block_out_channels", [default_groups])),
         "must divide every entry of block_out_channels"),
        ("block_out_channels", lambda c: _divides(PROBE_SIDE, 2 ** (_len(c, "block_out_channels", levels) - 1)),
         f"its levels make a spatial factor that does not divide {PROBE_SIDE}"),
    ]


LTX = {**COMMON, "block_out_channels": LEVELS, "decoder_block_out_channels": LEVELS,
       "down_block_types": listed(one_of("LTXVideoDownBlock3D", "LTXVideo095DownBlock3D"), 1, 8),
       "layers_per_block": listed(integer(0, 16), 2, 9), "decoder_layers_per_block": listed(integer(0, 16), 2, 9),
       "spatio_temporal_scaling": FLAGS, "decoder_spatio_temporal_scaling": FLAGS, "decoder_inject_noise": FLAGS,
       "downsample_type": listed(one_of("conv", "spatial", "temporal", "spatiotemporal"), 1, 8),
       "upsample_residual": FLAGS, "upsample_factor": listed(integer(1, 8), 1, 8), "timestep_conditioning": boolean(),
       "patch_size": one_of(1, 2, 4, 8), "patch_size_t": one_of(1, 2, 4), "resnet_norm_eps": number(1e-12, 1),
       "encoder_causal": boolean(), "decoder_causal": boolean(),
       "spatial_compression_ratio": optional(one_of(1, 2, 4, 8, 16, 32, 64)),
       "temporal_compression_ratio": optional(one_of(1, 2, 4, 8))}

MOCHI = {**COMMON, "encoder_block_out_channels": LEVELS, "decoder_block_out_channels": LEVELS,
         "layers_per_block": listed(integer(0, 16), 2, 9), "act_fn": ACTS,
         "temporal_expansions": listed(one_of(1, 2, 3), 0, 7), "spatial_expansions": listed(one_of(1, 2), 0, 7),
         "add_attention_block": FLAGS}

COSMOS = {**COMMON, "encoder_block_out_channels": LEVELS, "decode_block_out_channels": LEVELS,
          "attention_resolutions": listed(integer(1, 16384), 0, 8), "resolution": integer(1, 16384),
          "num_layers": integer(1, 16), "patch_size": one_of(1, 2, 4, 8), "patch_type": one_of("haar", "rearrange"),
          "spatial_compression_ratio": one_of(4, 8, 16, 32, 64), "temporal_compression_ratio": one_of(1, 2, 4, 8)}
CONFIGS = {
    "AutoencoderKLWan": (WAN, WAN_RULES),
    "AutoencoderKLCogVideoX": (COGVIDEOX, _unet_rules(4, 32)),
    "AutoencoderKLHunyuanVideo": (HUNYUAN, _unet_rules(4, 32)),
    "AutoencoderKLLTXVideo": (LTX, []),
    "AutoencoderKLMochi": (MOCHI, []),
    "AutoencoderKLCosmos": (COSMOS, []),
}


def check(class_name: str, config: dict) -> dict:
    """config.json's fields for this family checked (ValueError naming the field) -> the config with
    only the fields the class takes and the private ones diffusers reads (`_class_name`, ...)."""
    fields, rules = CONFIGS[class_name]
    known = check_fields(config, fields, class_name, rules, strict=False)
    return {**{k: v for k, v in config.items() if str(k).startswith("_")}, **known}
