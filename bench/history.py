"""The dated history of a benchmark: bench/results/<name>.csv, one row per measurement, appended by every run.

    from bench.history import append_rows
    append_rows(RESULTS / "context-history.csv", rows)     # rows: list of dicts

A later run may measure more columns than an earlier one: the file is rewritten with the union of the
columns (earlier rows keep theirs, blank where they did not measure), so a regression shows as one table.
"""

from __future__ import annotations

import csv
from pathlib import Path


def append_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = list(csv.DictReader(path.open())) if path.exists() else []
    fields = list(dict.fromkeys([k for r in old for k in r] + [k for r in rows for k in r]))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows([*old, *rows])
    return path
