"""predict's malloc settings: large blocks come from the heap and stay with the process."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

_SCRIPT = """
import ctypes, sys
from blendsync.train.inference.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
addr = libc.malloc(8 * 1024 * 1024)
for line in open("/proc/self/maps"):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    if lo <= addr < hi:
        print("heap" if line.rstrip().endswith("[heap]") else "mapping")
"""


def test_an_8_mb_block_comes_from_the_heap_once_set():
    def where(mode: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", _SCRIPT, mode], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert where("default") == "mapping"  # glibc's default: a fresh mapping per large block
    assert where("keep") == "heap"
