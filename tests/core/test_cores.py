import os

from transfertraj.core.cores import available_cores, cgroup_cpu_limit


def test_a_cgroup_quota_caps_the_affinity(tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSFERTRAJ_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs
    assert cgroup_cpu_limit(quota) == 1.5
    assert available_cores(quota) == 2
    quota.write_text("max 100000\n")
    assert cgroup_cpu_limit(quota) is None and available_cores(quota) == 64
    assert available_cores(tmp_path / "absent") == 64


def test_the_environment_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERTRAJ_THREADS", "1")
    assert available_cores(tmp_path / "absent") == 1


def test_idle_cores_leave_out_the_busy_ones(monkeypatch, tmp_path):
    from transfertraj.core.cores import idle_cores

    monkeypatch.delenv("TRANSFERTRAJ_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    absent = tmp_path / "absent"
    assert idle_cores(absent, load=0.3) == 2  # a quiet 2-core machine: both
    assert idle_cores(absent, load=0.8) == 1  # one core's worth of other work
    assert idle_cores(absent, load=17.0) == 1  # never fewer than one
    monkeypatch.setenv("TRANSFERTRAJ_THREADS", "2")
    assert idle_cores(absent, load=17.0) == 2  # the operator's choice wins
