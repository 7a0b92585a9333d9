"""adaptok: adaptive video tokenisation (temporal redundancy masking + latent inpainting).

The command line (`adaptok`) is a thin layer over these functions.
"""
__version__ = "0.1.0"

from .pipeline import CompressOptions, Result, compress, decompress  # noqa: E402
from .report import inspect  # noqa: E402
from .atokfile import AtokDataset, AtokFile, open  # noqa: E402,A004

__all__ = ["AtokDataset", "AtokFile", "CompressOptions", "Result", "compress", "decompress", "inspect", "open",
           "__version__"]
