"""The VAE's own latent normalisation, as trainers apply it before a model sees the latents.

    z' = (z - mean_c) * scaling_factor / std_c     latents_mean and latents_std in the config (Wan, Mochi, Cosmos)
    z' = (z - shift_factor) * scaling_factor      scaling_factor alone (CogVideoX, HunyuanVideo)

LTX-Video keeps its mean and std as weights (buffers `latents_mean`, `latents_std`), not in its
config: they are read from its safetensors. Cosmos pipelines multiply by their scheduler's sigma_data
on top; that is the trainer's, not the VAE's. The built-in tokeniser has no config: its own unit is
the per-channel spread stored with its weights (z' = z / scale_c).

Every number is checked before use: the right count (the container's channels), finite, std and
scaling factor positive. Nothing here loads or runs a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from adaptok_cli.errors import ModelUnavailableError

MAX_FACTOR = 1e6          # a scaling factor, shift, mean or std beyond this is not a VAE's


@dataclass(frozen=True)
class Normalisation:
    """z' = (z - shift) * gain per channel; shift and gain are (C,) float32."""
    shift: torch.Tensor
    gain: torch.Tensor
    source: str           # where the numbers came from (for messages and docs)

    def __call__(self, z: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
        """z with channels along channel_dim, in float32 (a new tensor)."""
        view = [1] * z.dim()
        view[channel_dim] = -1
        return (z.float() - self.shift.view(view)) * self.gain.view(view)


def _numbers(value, n: int, what: str, where, positive: bool = False) -> torch.Tensor:
    ok = isinstance(value, (list, tuple)) and len(value) == n and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_FACTOR
        and (v > 0 or not positive) for v in value)
    if not ok:
        raise ModelUnavailableError(f"{where}: {what} must be {n} finite numbers{' above 0' if positive else ''}")
    return torch.tensor([float(v) for v in value], dtype=torch.float32)


def _factor(config: dict, key: str, default: float, where, positive: bool) -> float:
    v = config.get(key)
    return default if v is None else float(_numbers([v], 1, key, where, positive)[0])


def for_spec(spec: str, channels: int) -> Normalisation:
    """The normalisation of the tokeniser a user names (a built-in name, a TinyTok .safetensors, a
    diffusers VAE folder or hf: name), for latents of `channels` channels."""
    from adaptok_cli.defaults import BUILTIN_TOKENIZERS
    from adaptok_cli.models.tokenizer import builtin_path
    if spec in BUILTIN_TOKENIZERS:
        return _tinytok(builtin_path(spec), channels)
    from adaptok_cli.models.diffusers_tok import is_diffusers_spec, read_config, resolve, weight_files
    if is_diffusers_spec(spec):
        folder = resolve(spec)
        return from_config(read_config(folder), channels, folder / "config.json", weight_files(folder))
    if Path(spec).suffix == ".safetensors" and Path(spec).is_file():
        return _tinytok(Path(spec), channels)
    raise ModelUnavailableError(f"{spec}: no normalisation known for this tokeniser (a diffusers VAE or a "
                                f"TinyTok file has one)")


def from_config(config: dict, channels: int, where, weights: list[Path] = ()) -> Normalisation:
    """A diffusers VAE's normalisation from its config (and, for LTX-Video, its weights)."""
    mean, std = config.get("latents_mean"), config.get("latents_std")
    sf = _factor(config, "scaling_factor", 1.0, where, positive=True)
    if mean is None and std is None:
        mean, std = _buffers(weights, channels)
        where = weights[0] if mean is not None else where
    if mean is not None or std is not None:
        mean = _numbers(mean, channels, "latents_mean", where)
        std = _numbers(std, channels, "latents_std", where, positive=True)
        return Normalisation(mean, sf / std, f"{Path(str(where)).name}: latents_mean, latents_std, scaling_factor")
    if config.get("scaling_factor") is None:
        raise ModelUnavailableError(f"{where}: no latents_mean/latents_std or scaling_factor: no normalisation to apply")
    shift = _factor(config, "shift_factor", 0.0, where, positive=False)
    return Normalisation(torch.full((channels,), shift), torch.full((channels,), sf),
                         f"{Path(str(where)).name}: scaling_factor" + (", shift_factor" if shift else ""))


def _buffers(weights, channels: int):
    """LTX-Video's latents_mean / latents_std weights, as lists, or (None, None) where absent."""
    from safetensors import SafetensorError, safe_open
    for f in weights:
        try:
            with safe_open(str(f), "pt") as st:
                if not {"latents_mean", "latents_std"} <= set(st.keys()):
                    continue
                if any(st.get_slice(k).get_shape() != [channels] for k in ("latents_mean", "latents_std")):
                    raise ModelUnavailableError(f"{f}: latents_mean / latents_std are not {channels} numbers")
                return st.get_tensor("latents_mean").float().tolist(), st.get_tensor("latents_std").float().tolist()
        except (OSError, ValueError, SafetensorError) as e:
            raise ModelUnavailableError(f"{f}: cannot read its weights ({e})") from None
    return None, None


def _tinytok(path: Path, channels: int) -> Normalisation:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), "pt") as st:
            if "scale" not in st.keys() or st.get_slice("scale").get_shape() != [channels]:
                raise ModelUnavailableError(f"{path}: no per-channel scale of {channels} numbers")
            scale = st.get_tensor("scale").float().tolist()
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelUnavailableError(f"{path}: not a tinytok weights file ({e})") from None
    std = _numbers(scale, channels, "scale", path, positive=True)
    return Normalisation(torch.zeros(channels), 1 / std, f"{path.name}: per-channel scale")
