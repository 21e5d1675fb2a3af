"""Process-level settings that make CPU training fast."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of handing it back to the kernel.

    A training step allocates and frees activations of hundreds of MB; by default glibc serves
    each from a fresh mmap and unmaps it on free, so every step pays page faults on all of it
    (about a third of CPU step time is system time). With mmap off and no trimming, the same
    memory is reused step after step; measured in bench/pretrain_throughput.py. No-op off glibc.
    """
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return _tuned
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _tuned
