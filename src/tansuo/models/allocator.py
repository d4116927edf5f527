"""Keep glibc malloc from handing PyTorch's large training buffers back to the kernel.

PyTorch allocates each activation and gradient of a CPU training step afresh (tens of MB at a
time for the sequence model). glibc serves such blocks with ``mmap`` and unmaps them when they
are freed, so the next step page-faults the same amount of zeroed memory back in. Raising
glibc's mmap and trim thresholds (``mallopt``) makes it keep and reuse that memory instead —
what PyTorch's CPU tuning guide gets by preloading jemalloc or tcmalloc, without preloading
anything. Measured on MovieLens (2 SASRec epochs, 2 threads, a shared machine): minor page
faults 10.5 M → 0.33 M, system time 29.8 s → 2.2 s, total CPU −14%.

Only the training commands call it (``tansuo train``, ``tansuo evaluate``): the process then
keeps its peak memory until it exits, which is right for a batch job and wrong for a
long-running service, so the library never does it on import.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# above the largest buffers (the logits of a batch reach ~100 MB); glibc versions that cap the
# threshold lower refuse it, and then get their documented maximum for 64-bit (32 MB)
_MMAP_THRESHOLDS = (1 << 30, 32 * 1024 * 1024)


def keep_freed_memory() -> bool:
    """Tune glibc malloc for a training process; False (and nothing done) elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: leave it alone
        return False
    ok = any(mallopt(_M_MMAP_THRESHOLD, value) == 1 for value in _MMAP_THRESHOLDS)
    return mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
