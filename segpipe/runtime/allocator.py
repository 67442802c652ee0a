"""Keep freed memory in the process instead of handing it back to the system (glibc only).

glibc serves every allocation above 32 MiB with a fresh `mmap` and returns it on free,
so each large activation of a 3D network is zero-filled page by page by the kernel
again; on CPU that cost more time than the convolutions themselves. With `mmap` off for
malloc and trimming off, freed blocks are reused. Peak resident memory is then the high
water mark of live data plus fragmentation, which the inference benchmark measures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Switch glibc malloc to reuse freed blocks; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
