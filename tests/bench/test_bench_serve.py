"""bench/serve.py's own logic: the before/after answer check and the table it reports (no model run)."""

from __future__ import annotations

from bench.serve import report, same_answers


def _inproc(p50: float, cpu: float) -> dict:
    return {
        "load_s": 2.5,
        "first_request_s": 0.2,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "cpu_p50_ms": cpu,
        "cpu_p50_network_ms": 40.0,
        "cpu_p50_rest_ms": cpu - 40.0,
        "p50_1thread_ms": p50,
        "cpu_p50_1thread_ms": cpu,
        "threads": 1,
        "peak_rss_mb": 900.0,
        "repeats": 30,
        "spark_imported": False,
        "serving_code": "/repo",
        "model_code": "/repo/model",
        "model": "d=64",
    }


def test_same_answers_tells_a_moved_point_from_float_noise():
    a = [[-8.61, 41.15, 1.0], [-8.60, 41.16, 2.0]]
    assert same_answers(a, [[-8.61 + 1e-9, 41.15, 1.0], [-8.60, 41.16, 2.0 + 1e-6]]) == "yes"
    assert same_answers(a, [[-8.61 + 1e-5, 41.15, 1.0], [-8.60, 41.16, 2.0]]).startswith("NO")  # ~1 m
    assert same_answers(a, a[:1]).startswith("NO (shapes")


def test_the_table_puts_before_beside_after_with_verdicts():
    server = {
        "ready_s": 20.0,
        "server_first_s": 0.1,
        "clients": 20,
        "seconds": 60.0,
        "trips_per_request": 1,
        "rps": 30.0,
        "p50_ms": 500.0,
        "p99_ms": 900.0,
        "requests": 1800,
        "errors": 0,
        "first_error": "",
    }
    run = {"label": "small", "server": server, "inproc": {"before": _inproc(74.0, 73.0), "after": _inproc(45.0, 44.0)}}
    table = report([run], (3.0, 2.0), "var/serve-before")
    rows = [line for line in table.splitlines() if line.startswith("| small |")]
    assert len(rows) == 3  # before, after, and the server's row
    assert "| before |" in rows[0] and "74.0 ms NOT met" in rows[0]
    assert "| after |" in rows[1] and "45.0 ms met" in rows[1] and "40.0 / 4.0 ms" in rows[1]
    assert "before = var/serve-before (network code: /repo/model)" in table and "1800 / 0" in rows[2]
