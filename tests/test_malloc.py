"""pipeline.malloc: freed memory stays in the process (glibc), so batches stop faulting pages in."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, sys, time
    import numpy as np
    from pipeline.malloc import keep_freed_memory
    if sys.argv[1] == "tuned":
        assert keep_freed_memory()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        a = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB: above the largest mmap threshold glibc picks by itself
        del a
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_repeated_large_allocations_reuse_pages_once_tuned():
    default, tuned = _faults("default"), _faults("tuned")
    # default: every 64 MiB array is a new mmap whose pages fault in again; tuned: the heap keeps them
    assert default > 50 * 100
    assert tuned * 10 < default


def test_opt_out_by_environment(monkeypatch):
    from pipeline import malloc

    monkeypatch.setenv("STRATA_MALLOC", "default")
    monkeypatch.setattr(malloc, "_DONE", {})
    assert malloc.keep_freed_memory() is False
