"""Keep freed memory in the process for torch's CPU work (glibc ``mallopt``).

glibc serves every allocation above its mmap threshold (128 KiB, rising to at most 32 MiB) with a
fresh ``mmap`` and returns it with ``munmap`` when freed. A CPU forward pass allocates and frees
activations of tens to hundreds of MB per batch, so every batch faults its pages in again: on the
development VM that is more system time than compute (EfficientNet-Lite0, 2 threads: 20.7 img/s
and 26 s of system time per 512 images; with this tuning 50-57 img/s and 1.5 s; BENCHMARKS.md,
'Start-up'). Raising the mmap and trim thresholds keeps those pages in the heap for the next batch.

The cost is that a process keeps its peak heap: call it in processes whose working set repeats
(embedding actors, training loops), not in memory-bounded ones (out-of-core k-means shards).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_DONE: dict[int, bool] = {}


def keep_freed_memory(threshold_mb: int = 1024) -> bool:
    """Serve allocations up to ``threshold_mb`` from the heap and keep freed pages (once per process).

    Returns whether the setting took effect (False off glibc, or with ``STRATA_MALLOC=default``).
    """
    pid = os.getpid()
    if pid in _DONE:
        return _DONE[pid]
    ok = False
    if os.environ.get("STRATA_MALLOC", "") != "default":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
            mallopt = None
        if mallopt is not None:
            value = ctypes.c_int(min(int(threshold_mb) << 20, 2**31 - 1))
            ok = bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
            mallopt(_M_TOP_PAD, ctypes.c_int(64 << 20))
    _DONE[pid] = ok
    log.debug("malloc: keep freed memory up to %d MB: %s", threshold_mb, ok)
    return ok
