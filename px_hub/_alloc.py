"""The CLI's allocator setting: keep freed activation buffers in the process instead of returning them to the OS.

PX allocates and frees activation-sized buffers many times per round. glibc's malloc serves buffers above its mmap
threshold with fresh mmap'd pages and trims freed heap memory, so every round touches new pages again: measured
~25,000 minor page faults per PX round on the ResNet-20 fixture, under 500 with the setting below, and a 1-thread
round 0.42-0.47 s -> 0.28-0.29 s, same mask (benchmarks/bench_vs_official.py times both). The cost is that freed
memory stays in the process (its peak RSS is kept). Applied by the ``px-hub`` command to its own process; the
library never changes a caller's allocator.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted mmap threshold on 64-bit (4 * 1 MiB * sizeof(long))
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds for this process; True when applied (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
