"""Process memory allocator settings for the CPU path.

A forward and backward pass of a MACE model allocates tens of MB per tensor (per-edge weights,
per-receiver products) and frees them again at every step. glibc's ``malloc`` serves blocks of
more than 32 MiB (by default, or less) with fresh ``mmap`` pages and unmaps them when freed, so
that every step pays the kernel to fault in and zero those pages again, which on a small
machine can be most of an MD step. :func:`retain_freed_memory` raises the ``mmap`` and trim
thresholds so that freed blocks stay in the heap and the next step reuses them. The price is a
higher peak RSS, since the kept heap fragments. The README's performance section and
``benchmarks/large_structures.py --retain on,off`` measure both.

This is a setting of the whole process (``mallopt``), taken only on Linux with glibc, and only
when asked: :class:`~ase_equi.calculator.EquivariantCalculator` asks on CPU unless built with
``retain_memory=False``. The same effect without code: ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in the environment (glibc's ``mallopt(3)``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 2**31 - 1  # the largest value mallopt's int argument takes
NEVER_TRIM = -1  # glibc reads the trim threshold as size_t: -1 is SIZE_MAX, "never trim"


def retain_freed_memory() -> bool:
    """Keep freed blocks in the heap for reuse; True if glibc took the setting.

    Blocks of up to 2 GiB come from the heap rather than fresh ``mmap`` pages, and the heap is
    never trimmed (a large step frees gigabytes at once: trimming them would make the next
    step fault them in again).

    Idempotent. Does nothing (returns False) on other platforms or C libraries.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        log.debug("no mallopt in this C library: allocator settings unchanged")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1 and ok
    return ok
