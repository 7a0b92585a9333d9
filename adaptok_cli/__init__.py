"""adaptok: adaptive video tokenisation (temporal redundancy masking + latent inpainting).

The command line (`adaptok`) is a thin layer over these functions.
"""
__version__ = "0.1.0"

from .pipeline import CompressOptions, compress, decompress  # noqa: E402
from .report import inspect  # noqa: E402

__all__ = ["CompressOptions", "compress", "decompress", "inspect", "__version__"]
