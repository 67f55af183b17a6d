"""glibc's heap during training: a step's freed memory kept for the next step, not handed back to the kernel.

    from transfertraj.model.heap import reused_heap
    with reused_heap() as kept:     # kept: True where glibc took the settings (Linux with glibc)
        ...training steps...        # on leaving: glibc's usual limits again, the free heap handed back

Why: a training step allocates its activations and gradients and frees them all before the next one. By
default glibc serves every block above its mmap threshold (at most 32 MB: the (N*M, 3d) projections of the
modality mixer are 47 MB at 64 x 120) with a fresh mmap, and trims the top of the heap when a few hundred
kB are free there; both hand the memory back, and the next step faults the same pages in again, zeroed by
the kernel: about 95,000 page faults and 0.19-0.23 s of system CPU time per step at 64 x 120, 15 % of the
step (issue #18, bench/README.md). With no mmap (M_MMAP_MAX = 0) and a trim threshold of 1 GB every block
comes from the heap and stays there: the next step reuses the same addresses (one fault a step, 0.001 s of
system time) and, because every step frees what it took, the heap does not grow past the first steps: peak
RSS at 64 x 120 measured 1,408 MB against 1,460-1,483 MB with glibc's defaults (where the mmapped blocks and
the heap's holes were both resident at times).

The settings are process-wide, so they hold only inside the `with`: on leaving, mmap is allowed again, the
trim threshold goes back to glibc's default (128 kB, now fixed: glibc has no call that restores its dynamic
thresholds) and malloc_trim hands the free heap back, so a long-lived process (an Airflow worker) does not
keep a training step's peak. Elsewhere (no glibc) nothing changes.

It suits steps of steady shape, as a training's are. Steps whose transient blocks vary a lot keep the
largest of them: bench/train.py's dense variant (multi-GB attention maps) peaked at 6.9 GB under it
against 2.9-3.3 GB with glibc's defaults; batches of 40-120 points grew to about 2.2 GB over 70 steps with
either setting.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (malloc.h)
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults (mallopt(3))
KEEP_UP_TO = 1 << 30  # free heap kept at its top during training: more than a step's peak at 64 x 120


def _glibc():
    """The process's C library when it is glibc (it has gnu_get_libc_version and mallopt), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version, libc.mallopt, libc.malloc_trim  # noqa: B018 - AttributeError: not glibc
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def reused_heap(keep_up_to: int = KEEP_UP_TO):
    """Inside: every allocation from the heap, none handed back below keep_up_to bytes free (module
    docstring). Yields whether the settings took effect."""
    libc = _glibc()
    kept = bool(libc and libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, keep_up_to))
    try:
        yield kept
    finally:
        if libc:
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)


__all__ = ["reused_heap"]
