"""How many CPU cores this process may really use: the affinity mask, capped by a cgroup CPU quota.

    from transfertraj.core.cores import available_cores, idle_cores
    spark_master = f"local[{available_cores()}]"   # Spark's tasks share cores without waiting on each other
    torch.set_num_threads(idle_cores())           # torch's threads wait on each other at every operation

`os.cpu_count()` counts the machine's cores, not the process's: in a container limited to 2 CPUs on a
64-core host, torch and Spark would start 64 threads each and spend their time switching. One pretraining
epoch of the tiny model took 334 s with torch's default thread count on a busy 2-core machine and 31 s
with one thread, so every thread pool of the project is sized from this number.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs allowed by the cgroup v2 quota (quota / period), or None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def available_cores(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: len(affinity), lowered to the cgroup quota rounded up; at least 1.

    TRANSFERTRAJ_THREADS, when set, wins (for a machine shared with other heavy work)."""
    if os.environ.get("TRANSFERTRAJ_THREADS"):
        return max(1, int(os.environ["TRANSFERTRAJ_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cgroup_cpu_max)
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def idle_cores(cgroup_cpu_max: Path = CGROUP_CPU_MAX, load: float | None = None) -> int:
    """available_cores() less the cores other work keeps busy now (the 1-minute load average, rounded);
    at least 1. TRANSFERTRAJ_THREADS, when set, wins.

    For thread pools whose threads meet at a barrier after every operation (torch, OpenMP): on a busy
    machine one descheduled thread stalls the others, so fewer threads than cores finish sooner (issue
    #18: one tiny pretraining epoch, 334 s with 2 threads on a busy 2-core machine, 31 s with 1). Read
    once, when the pool is sized: a run started on a busy machine keeps its smaller pool."""
    if os.environ.get("TRANSFERTRAJ_THREADS"):
        return max(1, int(os.environ["TRANSFERTRAJ_THREADS"]))
    cores = available_cores(cgroup_cpu_max)
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, cores - round(load)))
