"""model/heap.py: inside reused_heap freed memory stays with the process; on leaving it is handed back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from transfertraj.model.heap import _glibc

needs_glibc = pytest.mark.skipif(_glibc() is None, reason="reused_heap changes glibc's malloc only (Linux with glibc)")

# In a fresh interpreter, so that no other test's heap is in the way: RSS in MB after allocating and freeing
# a 200 MB block inside the context, then after leaving it. With glibc's defaults a block that size is an
# mmap that free() unmaps at once.
PROBE = """
import numpy as np, psutil
from transfertraj.model.heap import reused_heap
rss = lambda: psutil.Process().memory_info().rss / 2**20
def churn():
    a = np.ones(200 * 2**20 // 8)   # malloc'd by numpy, every page touched
    del a
base = rss()
churn()
default = rss() - base
with reused_heap() as kept:
    start = rss()
    churn()
    inside = rss() - start
    churn()                          # the same block again: no new pages
    again = rss() - start
after = rss() - start
print(kept, default, inside, again, after)
"""


@needs_glibc
def test_freed_memory_is_kept_inside_and_handed_back_after():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    kept, (default, inside, again, after) = out[0] == "True", map(float, out[1:])
    assert kept
    assert default < 50  # glibc's default: the 200 MB block unmapped on free
    assert inside > 150  # kept: freed, still resident, for the next step
    assert again < inside + 50  # reused, not taken a second time
    assert after < 50  # handed back on leaving (malloc_trim)


def test_elsewhere_nothing_changes(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    from transfertraj.model import heap

    assert heap._glibc() is None
    with heap.reused_heap() as kept:
        assert kept is False
