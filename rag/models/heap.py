"""Keep the memory of a CPU pass's freed activations in this process, so the next pass does not fault it in again.

glibc hands large freed blocks back to the kernel: activations above its mmap threshold (128 KB, raised
dynamically as blocks are freed) are unmapped, and free space at the top of a heap is trimmed. Every pass then
page-faults its activations back in, and the kernel zeroes each page first. A 28-chunk embedding pass took
67,000-134,000 minor faults; on a CPU whose matmuls run at ~3 TFLOP/s (AMX) that cost 3-11% of a pass, and a
matmul writing a fresh 14 MB output ran at 1.7 TFLOP/s against 3.1 into reused memory (docs/benchmarks.md).
`keep_freed_memory` tells glibc to serve blocks up to 32 MB from its heap and not to trim it, with one arena for
all threads (the app's rerank and upload threads reuse what the last pass freed, instead of each thread's arena
keeping its own). The peak does not grow (with a new thread per pass it measured 80-140 MB lower); the resident
size stays near the peak between passes instead of falling back.
"""
from __future__ import annotations

import ctypes
import logging
import platform
import threading

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
# Above the largest activation of a pass: 3,072 wide at 4,096 tokens in bf16 (or 2,048 in fp32) is 25 MB. Older
# glibc versions refuse more than 32 MB (HEAP_MAX_SIZE / 2); 2.36 here accepts more.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30  # free space at the top of the heap kept up to this much (more than any pass frees)

_lock = threading.Lock()
_kept: bool | None = None  # None: not asked yet; then whether glibc took the settings


def keep_freed_memory() -> bool:
    """Apply the settings above, once per process; True when they are in force (glibc took them), False where
    the C library is not glibc (musl, macOS, Windows keep their own allocator's behaviour)."""
    global _kept
    with _lock:
        if _kept is None:
            _kept = _apply()
        return _kept


def keep_freed_memory_for(device: str) -> bool:
    """`keep_freed_memory` for a model running on `device`: only CPU passes allocate their activations from the
    C heap (a GPU's come from torch's own caching allocator)."""
    return keep_freed_memory() if str(device) == "cpu" else False


def kept() -> bool:
    """Whether `keep_freed_memory` has put the settings in force in this process."""
    return bool(_kept)


def _apply() -> bool:
    if platform.libc_ver()[0] != "glibc":
        log.info("the C library is not glibc: freed activations go back to the system as it decides")
        return False
    libc = ctypes.CDLL(None)
    took = all(libc.mallopt(option, value) == 1 for option, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1)))
    if not took:
        log.warning("glibc refused a mallopt setting: CPU passes keep page-faulting their activations in")
    return took
