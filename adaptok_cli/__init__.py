"""adaptok: adaptive video tokenisation (temporal redundancy masking + latent inpainting).

The command line (`adaptok`) is a thin layer over these functions. They are imported on first use,
so `import adaptok_cli` (and `adaptok --help`) does not pay for torch until something needs it.
"""
import importlib

__version__ = "0.1.0"

_API = {"CompressOptions": "pipeline", "DecompressOptions": "pipeline", "Result": "pipeline", "compress": "pipeline",
        "compress_many": "batch", "decompress": "pipeline", "decompress_many": "batch",
        "inspect": "report", "AtokDataset": "atokfile", "ShardDataset": "atokfile", "pad_collate": "collate", "AtokFile": "atokfile", "open": "atokfile",
        "Limits": "container"}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    if name in ("errors", "container", "pipeline", "batch", "outputs"):   # submodules, as attributes
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'adaptok_cli' has no attribute {name!r}")
