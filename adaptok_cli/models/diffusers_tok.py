"""Video VAEs from `diffusers` (the tokenisers video models are trained on), as adaptok tokenisers.

    --tokenizer path/to/vae                 a folder with config.json + *.safetensors
    --tokenizer path/to/pipeline            a pipeline folder: its vae/ subfolder
    --tokenizer hf:ORG/REPO[/SUBFOLDER]     from the local Hugging Face cache only (never downloaded)

The class comes from config.json's `_class_name`, but only from the fixed table FAMILIES: a folder
picks among known adapters, it cannot name code. Weights are read from safetensors only, and the
fingerprint covers exactly the files diffusers reads (`model_files`: config, shard index, shards).

Layout: every family here codes the first frame of a clip alone and then `time_factor` frames per
latent frame (1 + 4k or 1 + 8k frames), so adaptok's layout rule (layout.py) holds as it is. The
factors are probed on a tiny clip, not read from the config. A family with its own causal cache (Wan)
streams: chunk after chunk equals one pass over the whole video. The others code each chunk as a
clip of its own (stateless); their chunk seams are measured in docs/TOKENIZERS.md.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from adaptok_cli.models import cache, vae_configs
from adaptok_cli.format import safejson
from adaptok_cli.format.container import LOGVAR_MAX, LOGVAR_MIN, MAX_CHANNELS
from adaptok_cli.errors import ModelUnavailableError
from adaptok_cli.models.modelcheck import mismatch
from adaptok_cli.models.tinytok import to_uint8
from adaptok_cli.models.tokenizer_base import Posterior, Tokenizer, file_fingerprint, host_frames

MAX_CONFIG_BYTES = 1 << 20
PROBE_FRAMES, PROBE_SIDE = 25, 64   # 1 + 24 frames: whole for time factors 1, 2, 3, 4, 6, 8, 12, 24
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EXTRA = "pip install 'adaptok[diffusers]'"
CHUNKS_PER_CALL_GPU = 4             # whole chunks a stateless VAE codes in one batched call on a GPU (not measured)


@dataclass(frozen=True)
class Family:
    name: str
    streams: bool = False          # has a causal cache adaptok can carry from chunk to chunk
    causal_decoder: bool = True    # False: the decoder looks ahead in time (chunks decode apart)
    posterior: bool = True         # its encoder gives a Gaussian (mean and log-variance); False: a point


FAMILIES = {
    "AutoencoderKLWan": Family("wan", streams=True),
    "AutoencoderKLCogVideoX": Family("cogvideox"),
    "AutoencoderKLHunyuanVideo": Family("hunyuanvideo"),
    "AutoencoderKLLTXVideo": Family("ltx-video", causal_decoder=False),
    "AutoencoderKLMochi": Family("mochi"),
    "AutoencoderKLCosmos": Family("cosmos", posterior=False),   # diffusers' IdentityDistribution
}


def is_diffusers_spec(spec: str) -> bool:
    p = Path(spec)
    return spec.startswith("hf:") or p.is_dir() and ((p / "config.json").is_file() or (p / "model_index.json").is_file())


def resolve(spec: str) -> Path:
    """The VAE folder a spec names; hf: specs from the local Hugging Face cache only."""
    if spec.startswith("hf:"):
        parts = spec[3:].strip("/").split("/")
        if len(parts) < 2 or not all(parts) or any(p in (".", "..") or "\\" in p for p in parts):
            raise ModelUnavailableError(f"{spec}: use hf:ORG/REPO or hf:ORG/REPO/SUBFOLDER (names only: no '.' "
                                        f"or '..', which would leave the Hugging Face cache)")
        repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
        try:
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import LocalEntryNotFoundError
        except ImportError:
            raise ModelUnavailableError(f"{spec}: diffusers tokenisers need the extra: {EXTRA}") from None
        try:
            folder = Path(snapshot_download(repo, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            want = f" --include '{sub}/*'" if sub else ""
            raise ModelUnavailableError(f"{spec}: not in the local Hugging Face cache (adaptok never downloads): "
                                        f"fetch it once with: hf download {repo}{want}") from None
        folder = folder / sub if sub else folder
    else:
        folder = Path(spec)
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"               # a pipeline folder
    if not (folder / "config.json").is_file():
        if (folder / "model_index.json").is_file():
            raise ModelUnavailableError(f"{spec}: a pipeline folder (model_index.json) without vae/config.json")
        raise ModelUnavailableError(f"{spec}: no config.json (a diffusers VAE folder, or a pipeline with vae/)")
    return folder


WEIGHTS = "diffusion_pytorch_model.safetensors"      # what diffusers loads with use_safetensors=True ...
WEIGHTS_INDEX = WEIGHTS + ".index.json"              # ... or, when this exists, the shards it names
MAX_INDEX_BYTES = 1 << 22


def weight_files(folder: Path) -> list[Path]:
    """Exactly the weight files diffusers will read from this folder (from_pretrained with
    use_safetensors=True, no variant): the shard index and the shards it names when the index exists,
    else the one weights file. Anything but safetensors is refused, since other formats can run code."""
    index = folder / WEIGHTS_INDEX
    if not index.is_file():
        if not (folder / WEIGHTS).is_file():
            raise ModelUnavailableError(f"{folder}: no {WEIGHTS} (other weight formats can run code: adaptok "
                                        f"reads safetensors only)")
        return [folder / WEIGHTS]
    try:
        weight_map = safejson.read(index, MAX_INDEX_BYTES).get("weight_map")
    except (safejson.JSONError, AttributeError, OSError) as e:
        raise ModelUnavailableError(f"{index}: not a shard index ({e})") from None
    if not (isinstance(weight_map, dict) and weight_map and all(isinstance(v, str) for v in weight_map.values())):
        raise ModelUnavailableError(f"{index}: its weight_map does not name the shard files")
    names = sorted(set(weight_map.values()))
    for name in names:
        if not name.endswith(".safetensors") or name != Path(name).name or name in (".", ".."):
            raise ModelUnavailableError(f"{index}: names {name!r}, not a .safetensors file in the folder (other "
                                        f"weight formats can run code: adaptok reads safetensors only)")
        if not (folder / name).is_file():
            raise ModelUnavailableError(f"{index}: names {name}, which is missing")
    return [index, *(folder / name for name in names)]


def model_files(folder: Path) -> list[Path]:
    """Every file diffusers reads for the model, in the order the fingerprint hashes them."""
    return [folder / "config.json", *weight_files(folder)]


def spec_files(spec: str) -> list[Path]:
    """The files a spec's fingerprint covers (model_files), its config checked first: a folder cannot
    name code."""
    folder = resolve(spec)
    read_config(folder)
    return model_files(folder)


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = safejson.read(path, MAX_CONFIG_BYTES)
    except (safejson.JSONError, OSError) as e:
        raise ModelUnavailableError(f"{path}: {e}") from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    if not isinstance(name, str) or name not in FAMILIES:
        raise ModelUnavailableError(f"{path}: class {str(name)[:80]!r} is not a supported video VAE "
                                    f"(supported: {', '.join(FAMILIES)})")
    try:
        vae_configs.check(name, config)          # every field the class takes, before anything is built
    except ValueError as e:
        raise ModelUnavailableError(f"{path}: {e}") from None
    return config


def check_buildable(cls, config: dict, folder: Path):
    """The network config.json describes, built on the meta device (no memory), must hold exactly the
    weights' tensors: a config that does not build, or a small file claiming a huge network, is refused
    before from_pretrained allocates anything."""
    from safetensors import SafetensorError, safe_open
    shapes = {}
    try:
        for f in weight_files(folder):
            if f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as st:
                    shapes.update({k: tuple(st.get_slice(k).get_shape()) for k in st.keys()})
    except (SafetensorError, OSError) as e:
        raise ModelUnavailableError(f"{folder}: unreadable weights ({e})") from None
    try:
        wrong = mismatch(lambda: cls.from_config(config), shapes, allow_extra=True)
    except (ValueError, TypeError, IndexError, KeyError, RuntimeError, ZeroDivisionError, AttributeError,
            AssertionError) as e:
        raise ModelUnavailableError(f"{folder}: its config does not build a {cls.__name__} "
                                    f"({type(e).__name__}: {str(e)[:120]})") from None
    if wrong:
        raise ModelUnavailableError(f"{folder}: weights do not match config.json ({wrong})")


def fingerprint_of(folder: Path) -> str:
    """The hash of exactly what is loaded: config, shard index (if any) and weights (model_files)."""
    return file_fingerprint(*model_files(folder))


def probe_factors(t: int, channels: int, h: int) -> tuple[int, int, int] | None:
    """The probe's latent shape (t, C, h) -> (time factor, space factor, channels); None if the
    shape is not one a VAE of the supported kind can give."""
    if t < 2 or (PROBE_FRAMES - 1) % (t - 1) or h < 1 or PROBE_SIDE % h or not 1 <= channels <= MAX_CHANNELS:
        return None
    return (PROBE_FRAMES - 1) // (t - 1), PROBE_SIDE // h, channels


def _diffusers_version() -> str:
    import diffusers
    return diffusers.__version__


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return TORCH_DTYPES[dtype]


def _posterior(mean: torch.Tensor, logvar: torch.Tensor) -> Posterior:
    """One clip's mean and log-variance (C, t, h, w) on the device -> a Posterior (t, C, h, w) float32
    on the CPU, the log-variance clamped as diffusers' DiagonalGaussianDistribution clamps it."""
    mean, logvar = (v.permute(1, 0, 2, 3).float().cpu() for v in (mean, logvar))
    return Posterior(mean, logvar.clamp_(LOGVAR_MIN, LOGVAR_MAX))


class DiffusersTokenizer(Tokenizer):
    """A diffusers video VAE: frames (T, 3, H, W) in [-1, 1] or uint8 <-> latents (t, C, h, w), the mean
    of the latent distribution (its mode), as float32 on the CPU; encode_posterior adds its log-variance."""

    measured_scale = False      # its unit of change comes from `adaptok calibrate`

    def __init__(self, spec: str, device="cpu", dtype: str = "auto"):
        folder = resolve(spec)
        config = read_config(folder)
        self.family = FAMILIES[config["_class_name"]]
        try:
            import diffusers
        except ImportError:
            raise ModelUnavailableError(f"{spec}: diffusers tokenisers need the extra: {EXTRA}") from None
        self.device = torch.device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.fingerprint = fingerprint_of(folder)       # what from_pretrained below reads, and nothing else
        diffusers.utils.logging.set_verbosity_error()     # its load-time advice is not for adaptok's users
        cls = getattr(diffusers, config["_class_name"])
        check_buildable(cls, config, folder)
        try:
            self.vae = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, variant=None,
                                           torch_dtype=self.dtype, low_cpu_mem_usage=False).eval()
        except (OSError, ValueError, RuntimeError, TypeError) as e:
            raise ModelUnavailableError(f"{folder}: cannot load ({str(e).splitlines()[0]})") from None
        self.vae.to(self.device)
        if hasattr(self.vae, "disable_tiling"):
            self.vae.disable_tiling()         # tiles would blend: adaptok bounds memory by chunks instead
        if self.device.type == "cpu" and self.dtype == torch.float32:
            onednn_conv3d(self.vae)
            summed_rms_norms(self.vae)
        self.class_name = config["_class_name"]
        self.config_hash = hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()[:16]
        self.name, self.spec = f"diffusers:{self.class_name}", spec
        self.source = "file"
        self.stateful = self.family.streams
        self.has_posterior = self.family.posterior
        if not self.stateful and self.device.type == "cuda":
            self.chunks_per_call = CHUNKS_PER_CALL_GPU
        self._probe(folder)
        self.scale = torch.ones(self.channels)

    def _probe(self, folder):
        """Factors from a tiny clip's latent shape: 25 frames of 64x64 -> 1 + 24/tf latent frames.
        A published VAE takes tens of seconds for it on a CPU, so what it found for these exact files
        (fingerprint) and this diffusers is kept in the cache (cache.py), and checked when read as
        the probe's own result is."""
        ident = {"fingerprint": self.fingerprint, "class": self.class_name, "diffusers": _diffusers_version(),
                 "probe": [PROBE_FRAMES, PROBE_SIDE]}
        found = cache.get("probes", ident) or {}
        shape = found.get("latent_shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(type(n) is int for n in shape)
                and probe_factors(*shape)):
            x = torch.zeros(PROBE_FRAMES, 3, PROBE_SIDE, PROBE_SIDE)
            try:
                shape = list(self._encode_clip(x).shape[:3])
            except (RuntimeError, ValueError, IndexError, ZeroDivisionError) as e:    # the folder's config, not ours
                raise ModelUnavailableError(f"{folder}: fails on a {PROBE_FRAMES}x{PROBE_SIDE}x{PROBE_SIDE} probe "
                                            f"clip ({type(e).__name__}: {str(e)[:120]})") from None
            if not probe_factors(*shape):
                raise ModelUnavailableError(f"{folder}: unexpected latent shape {tuple(shape)} for a "
                                            f"{PROBE_FRAMES}x{PROBE_SIDE}x{PROBE_SIDE} probe")
            cache.put("probes", ident, {"latent_shape": shape})
        self.time_factor, self.space_factor, self.channels = probe_factors(*shape)
        self.pad_multiple = self.space_factor

    def identity(self) -> dict:
        return {**super().identity(), "class": self.class_name, "config": self.config_hash}

    def _input(self, frames):
        if frames.dtype == torch.uint8:
            frames = frames.float().div_(127.5).sub_(1)
        return frames.permute(1, 0, 2, 3)[None].to(self.device, self.dtype)

    def _encode_clip(self, frames):
        return self.encode_many([frames])[0]

    @torch.no_grad()
    def encode_many(self, clips: list, posterior: bool = False) -> list:
        """Clips of one shape coded in one (batched) call -> their latents, or (posterior=True) their
        Posteriors, as encode_posterior gives them clip by clip."""
        dist = self.vae.encode(torch.cat([self._input(c) for c in clips])).latent_dist
        if not posterior:
            return [zi.permute(1, 0, 2, 3).float().cpu() for zi in dist.mode()]
        return [_posterior(m, lv) for m, lv in zip(dist.mean, dist.logvar)]

    @torch.no_grad()
    def encode(self, frames, state=None):
        if not self.stateful:
            return self._encode_clip(frames), None
        return wan_encode(self.vae, self._input(frames), state)

    @torch.no_grad()
    def encode_posterior(self, frames, state=None) -> tuple[Posterior, object]:
        """The latent distribution's mean (encode's latents) and log-variance, clamped as diffusers'
        DiagonalGaussianDistribution clamps it (-30..20)."""
        if self.stateful:
            moments, state = wan_moments(self.vae, self._input(frames), state)
            mean, logvar = moments.split(self.vae.config.z_dim, 1)
            return _posterior(mean[0], logvar[0]), state
        return self.encode_many([frames], posterior=True)[0], None

    @torch.no_grad()
    def decode(self, latents, state=None, uint8=False):
        z = latents.permute(1, 0, 2, 3)[None].to(self.device, self.dtype)
        if self.stateful:
            x, state = wan_decode(self.vae, z, state)
        else:
            x, state = self.vae.decode(z).sample, None
        x = x[0].permute(1, 0, 2, 3).float().clamp_(-1, 1)      # converted on the device: a quarter to copy
        return host_frames(to_uint8(x) if uint8 else x, uint8), state


def _onednn_conv(conv, x, weight, bias):
    return torch.mkldnn_convolution(x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)


def onednn_conv3d(vae):
    """Route the VAE's 3-D convolutions to oneDNN on the CPU. For one clip (batch 1) with few channels or
    few frames per call, PyTorch picks its reference kernel instead (a size rule written for 2-D
    convolutions): for the tiny Wan of the tests, one layer ran 12x slower, its encode 3.6x and its decode
    3x (every VAE's first, 3-channel layer is such a case). The two agree to float rounding (1e-6 relative)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")):
        return
    for m in vae.modules():
        if isinstance(m, torch.nn.Conv3d) and m.padding_mode == "zeros" and isinstance(m.padding, tuple):
            m._conv_forward = partial(_onednn_conv, m)


def _summed_rms_norm(norm, x):
    """WanRMS_norm's forward with the channel norm as a sum of squares: x / max(|x|, 1e-12), as
    F.normalize computes it, and `scale * gamma + bias` after."""
    dim = 1 if norm.channel_first else -1
    length = x.square().sum(dim, keepdim=True).sqrt_().clamp_min_(1e-12)
    return x / length * norm.scale * norm.gamma + norm.bias


def summed_rms_norms(vae):
    """Wan's RMS norms on the CPU in float32. F.normalize over the channel axis of a (B, C, T, H, W)
    tensor runs torch's strided vector-norm kernel, 5 to 8 times slower than summing the squares
    (1 thread, tiny Wan's shapes: 112 -> 16 ms at 8x5x256x456): it was 60% of `adaptok calibrate`'s
    time for the tests' tiny Wan. The two agree to float rounding (1.2e-7)."""
    for m in vae.modules():
        if type(m).__name__ == "WanRMS_norm" and all(hasattr(m, a) for a in ("channel_first", "scale", "gamma", "bias")):
            m.forward = partial(_summed_rms_norm, m)


# --- Wan: its own causal cache, carried between calls ---------------------------------------------
# AutoencoderKLWan codes frame 0 alone, then 4 frames per latent frame, each call reading and updating
# a per-convolution cache of the frames before (its _encode / _decode loops). Carrying that cache
# from one call to the next makes chunk-wise coding equal one pass (tests/test_diffusers.py).

def _wan_patch(vae, x, inverse=False):
    p = vae.config.get("patch_size")
    if not p:
        return x
    from diffusers.models.autoencoders.autoencoder_kl_wan import patchify, unpatchify
    return unpatchify(x, patch_size=p) if inverse else patchify(x, patch_size=p)


def _conv_count(vae, part: str) -> int:
    """How many cached convolutions Wan's encoder or decoder has (its cache holds one entry each)."""
    counts = getattr(vae, "_cached_conv_counts", None)
    if counts:
        return counts[part]
    return sum(type(m).__name__ == "WanCausalConv3d" for m in getattr(vae, part).modules())


def wan_encode(vae, x, state):
    """x: (1, 3, T, H, W); T = 1 + 4k at the start of a stream (state None), 4k after -> (latents, state)."""
    moments, state = wan_moments(vae, x, state)
    return moments[:, :vae.config.z_dim][0].permute(1, 0, 2, 3).float().cpu(), state


def wan_moments(vae, x, state):
    """x as for wan_encode -> (the posterior's mean and log-variance stacked on channels (1, 2C, t, h, w),
    as the device has them, state).

    k may be 0: at 480p and above the codec starts a stream with a call of its first frame alone, and
    splitting the empty rest gives one empty group, which the encoder's convolutions cannot take."""
    if state is None:
        state = [None] * _conv_count(vae, "encoder")
        groups = [x[:, :, :1], *x[:, :, 1:].split(4, 2)]
    else:
        groups = list(x.split(4, 2))
    groups = [_wan_patch(vae, g) for g in groups if g.shape[2]]
    out = torch.cat([vae.encoder(g, feat_cache=state, feat_idx=[0]) for g in groups], 2)
    return vae.quant_conv(out), state


def wan_decode(vae, z, state):
    """z: (1, C, t, h, w) -> ((1, 3, T, H, W), state); the first latent frame of a stream gives one frame."""
    start = state is None
    if start:
        state = [None] * _conv_count(vae, "decoder")
    x = vae.post_quant_conv(z)
    outs = [vae.decoder(x[:, :, i:i + 1], feat_cache=state, feat_idx=[0], first_chunk=start and i == 0)
            for i in range(x.shape[2])]
    return _wan_patch(vae, torch.cat(outs, 2), inverse=True).clamp_(-1, 1), state
