"""Keep glibc from returning and re-faulting heap pages on every env step.

A batched step allocates several arrays of a few hundred kB (B × N floats).  glibc serves
allocations above its mmap threshold with fresh ``mmap`` calls and trims the heap top eagerly, so
each step paid for page faults on memory it had just given back: 20–25 % of a Foraging step at
B = 64, N = 300 (docs/benchmarks.md).  Raising the mmap and trim thresholds (what the
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables do at start-up)
keeps those pages mapped.  Applied once, when the first environment is built; set
``M3FMARL_MALLOC_TUNING=0`` to leave the allocator alone.  A no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # allocations below 32 MiB come from the heap
TRIM_THRESHOLD = 128 * 2**20  # keep up to 128 MiB of free heap before returning it

_done = False


def tune_malloc() -> bool:
    """Apply the thresholds once per process; returns whether they are in force."""
    global _done
    if _done:
        return True
    if os.environ.get("M3FMARL_MALLOC_TUNING", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        _done = True  # the user chose their own settings
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _done = ok
    if not ok:
        logger.debug("mallopt refused the thresholds; allocator left as it is")
    return ok
