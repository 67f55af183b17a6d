"""Delta maintenance of the lake: OPTIMIZE (compact small files) then VACUUM, never losing a version a model records.

    from transfertraj.feature_store.maintenance import optimize_and_vacuum
    done = optimize_and_vacuum(spark, settings, protected={"features": 3}, tables=["features"])
    # -> [{"table": "features", "protected_version": 3, "retention_hours": 502.0}]

A registered model records the Delta versions of the tables it was trained on and reads its city's
context tables at those versions when it serves, so VACUUM must keep every file of those versions:
the retention is at least `min_retention_hours` (Delta's 7-day default) and is stretched per table
back past the commit of its protected version (`vacuum_retention_hours`). Which versions are protected
is the registry's answer (`transfertraj.registry.protected_versions`), passed in by the caller.

delta-spark is imported when the maintenance runs, so `transfertraj.feature_store` imports without
pyspark (the delta-rs reader and the DAG files need only the table names).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence

from transfertraj.core.settings import Settings
from transfertraj.feature_store.tables import TABLES, table_path

log = logging.getLogger(__name__)

MIN_RETENTION_HOURS = 168.0  # Delta's own safety default; a shorter retention can break concurrent readers


def vacuum_retention_hours(min_hours: float, protected_commit_ms: float | None, now_ms: float) -> float:
    """Hours of history VACUUM must keep: at least `min_hours`, and back past the protected version's commit.

    A file of version v is removed by a later commit (timestamp >= v's); VACUUM deletes removed files
    older than the retention, so a retention reaching before v's commit keeps every file of v."""
    if protected_commit_ms is None:
        return float(min_hours)
    age_h = (now_ms - protected_commit_ms) / 3_600_000
    return float(max(min_hours, math.ceil(age_h) + 1))


def commit_ms(delta_table, version: int) -> float | None:
    """Commit time (ms since the epoch) of `version` of a delta-spark DeltaTable; None if its history lost it."""
    row = delta_table.history().where(f"version = {int(version)}").select("timestamp").first()
    return row[0].timestamp() * 1000 if row is not None else None


def optimize_and_vacuum(
    spark,
    settings: Settings,
    *,
    protected: Mapping[str, int],
    min_retention_hours: float = MIN_RETENTION_HOURS,
    tables: Sequence[str] | None = None,
) -> list[dict]:
    """OPTIMIZE then VACUUM each of `tables` (default: every lake table) that exists; one dict per table done.

    `protected` maps a table to the oldest version a registered model records; its files are kept."""
    from delta.tables import DeltaTable

    from transfertraj.feature_store.delta_io import table_exists

    unknown = sorted(set(tables or ()) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown tables {unknown}; the lake has {list(TABLES)}")
    # VACUUM compares file removal times with the real clock, so the protection is computed against it
    # too (a backfilled run's data interval would understate how old the protected version is).
    now_ms = time.time() * 1000
    out = []
    for name in tables or TABLES:
        path = table_path(settings, name)
        if not table_exists(spark, path):
            continue
        dt = DeltaTable.forPath(spark, path)
        dt.optimize().executeCompaction()
        keep = protected.get(name)
        retention = vacuum_retention_hours(
            min_retention_hours, commit_ms(dt, keep) if keep is not None else None, now_ms
        )
        dt.vacuum(retention)
        out.append({"table": name, "protected_version": keep, "retention_hours": retention})
        log.info("%s: optimized; vacuumed with %.0f h retention (protects version %s)", name, retention, keep)
    return out
