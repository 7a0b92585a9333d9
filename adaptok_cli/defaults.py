"""Default settings and fixed names, in a module that imports nothing heavy.

The CLI reads these for its help text, so `adaptok --help`, `inspect` and `verify` start without torch.
"""
DEFAULT_THRESHOLD = 0.15    # τ, in units of the tokeniser's per-channel scale (docs/BENCHMARKS.md chose it)
MAX_THRESHOLD = 100.0       # far past "drop everything" (about 5), so larger values are typos
DEFAULT_CHUNK = 8           # latent frames per chunk record
DEFAULT_TOKENIZER = "tinytok"
UNITS = ("decoder", "spread")   # the rule's unit of change per channel (calibration.py); the first is the default
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")   # --dtype: precisions of a diffusers tokeniser (diffusers_tok.py)
MAX_SIDE = 16384            # frame sides past this are refused (a container header, a decoded video), never allocated
VIDEO_CODECS = ("x264", "ffv1", "y4m", "png")   # what decompress writes (video.py: --codec and extensions)
# inspect --sort KEY: the figure (an inspect --json field) each key orders files by
SORT_KEYS = {"name": "file", "rate": "token_rate", "bpp": "bpp", "bytes": "bytes", "frames": "frames"}
BUILTIN_TOKENIZERS = ("tinytok",)   # names a container may ask for without the user naming a file
# What --tokenizer accepts (tokenizer.spec_files tells the kinds apart): said once, for the CLI's help
# and for the errors that name them.
TOKENIZER_KINDS = (f"a built-in name ({', '.join(BUILTIN_TOKENIZERS)}), a TinyTok .safetensors file, a diffusers "
                   "video VAE folder (config.json + .safetensors) or pipeline folder (with vae/), hf:ORG/REPO[/vae] "
                   "from the local Hugging Face cache, or a Cosmos-Tokenizer TorchScript folder (encoder.jit + "
                   "decoder.jit)")
# Inputs compress takes from a folder (video.py reads them; here so that listing files needs no PyAV)
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".264", ".h264",
                    ".265", ".hevc", ".y4m", ".ts", ".flv", ".ogv", ".gif"}
# Audio codecs whose packets an .atok may carry and decompress may write back (copied, never re-encoded).
# A fixed list, so a container's header can only pick among these FFmpeg code paths.
AUDIO_CODECS = ("aac", "mp3", "mp2", "opus", "vorbis", "flac", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le",
                "pcm_f32le")


def is_device_name(device: str) -> bool:
    """auto, cpu, cuda or cuda:N: checked without importing torch (the CLI does it before any work)."""
    return device in ("auto", "cpu", "cuda") or device.startswith("cuda:") and device[5:].isdigit()
