"""Where a run computes: the torch device (CUDA when present, else CPU, unless the caller names one) and
how many CPU threads torch may use there."""

from __future__ import annotations

import torch

from transfertraj.core.cores import idle_cores


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def limit_threads() -> int:
    """Cap torch's intra-op threads at the idle cores this process may use (affinity, cgroup quota, less
    the cores other work keeps busy; TRANSFERTRAJ_THREADS wins); never raise a lower count someone set.
    Returns the count in force.

    torch sizes its pool from the host's cores; in a 2-CPU container on a big host, or beside Spark or
    other training on a small one, that oversubscribes the CPUs and every operation waits for the thread
    that was descheduled (core.cores.idle_cores gives the figures)."""
    cap = idle_cores()
    if torch.get_num_threads() > cap:
        torch.set_num_threads(cap)
    return torch.get_num_threads()
