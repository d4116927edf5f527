"""glibc malloc tuning for training processes (tansuo.models.allocator)."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
import numpy as np
from tansuo.models.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
n = 40 * 2**20 // 8
(np.ones(n) * 2.0).sum()  # warm-up: the first buffers are faulted in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a training step's pattern: big temporaries, used, then freed
    a = np.ones(n)
    b = a * 2.0
    del a, b
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_freed_training_buffers_are_reused_not_faulted_back():
    # (counts are of pages as faulted: huge pages where numpy asks for them, so no page size
    # is assumed; glibc unmaps each 40 MB temporary and faults the next one in, every step)
    plain, tuned = _faults("plain"), _faults("tuned")
    assert tuned * 10 < plain, (plain, tuned)
