"""Giving freed memory back to the system, so a long run's peak stays that of its first minutes.

glibc keeps freed blocks in the process: large ones once its mmap threshold has risen, small ones as
free heap between live blocks. Over a long video either makes the resident size creep up (measured:
+51 MB over 3000 frames of 854x480 before these two calls). Both are glibc-only and do nothing
elsewhere; importing this module costs nothing.

torch's CPU kernels (oneDNN) also keep a compiled kernel per input shape, about 1 MB each, up to
1024 of them: a run over many frame sizes would hold a gigabyte of them. The command line caps them.
"""
from __future__ import annotations

import ctypes
import os

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:          # not glibc
    _LIBC = None

M_MMAP_THRESHOLD = -3


MMAP_THRESHOLD = 32 << 20   # glibc's own ceiling for its moving threshold (64-bit)


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD):
    """Blocks over `threshold` bytes always get their own mapping, returned when freed; smaller ones
    come from the heap, which trim() gives back. For the command line only: a library does not retune
    its host's allocator. A 1 MiB threshold (what this was) mapped and zeroed every frame-sized
    block afresh: on 400 frames of 854x480, compress 13.4 s and decompress 17.8 s of system time
    against 5.2 and 5.8 s at 32 MiB, for peaks 1.09x and 1.19x as high (506 and 540 MB against
    463 and 453), still flat in the video's length (40 frames: 481 and 507 MB)."""
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(M_MMAP_THRESHOLD, threshold)


KERNEL_CACHE = 128     # compiled kernels kept; one file's decode uses about 40


def bound_kernel_cache(kernels: int = KERNEL_CACHE):
    """Keep at most `kernels` compiled oneDNN kernels (least recently used go first). Read when torch
    first runs one, so it must be set before; for the command line only, as fix_mmap_threshold."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(kernels))


def trim():
    """Return the free heap to the system (a few milliseconds; called once per chunk)."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
