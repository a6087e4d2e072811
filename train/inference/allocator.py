"""glibc's malloc told to keep freed memory for the next file instead of returning it.

predict allocates and frees the same large arrays over and over: each model window's
activations (2.6 MB per tensor for the small preset's per-bin mel stream), each file's
audio and features. Above its mmap threshold glibc serves such a block with a fresh mapping
whose pages the kernel zeroes and faults in on first touch, and it trims the heap's top
back to the kernel on free: on the 2-core reference VM that was 25 ms of system time per
five-second line, 2.5 s of 100 lines (0.45 s with these settings; BENCHMARKS.md). The cost
is a process that keeps its peak memory until it exits, which suits a batch command.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024
TOP_PAD = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Blocks up to 32 MB from the heap, the heap never trimmed below 1 GB, grown 64 MB at a
    time. False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    log.debug("malloc keeps freed memory: %s", ok)
    return ok
