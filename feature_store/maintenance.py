"""Delta maintenance of the lake: OPTIMIZE (compact small files) then VACUUM, never losing a version a model records.

    from transfertraj.feature_store.maintenance import optimize_and_vacuum
    done = optimize_and_vacuum(spark, settings, protected={"features": 3}, tables=["features"])
    # -> [{"table": "features", "protected_version": 3, "retention_hours": 502.0, "optimized": [], "vacuumed": 0}]

A registered model records the Delta versions of the tables it was trained on and reads its city's
context tables at those versions when it serves, so VACUUM must keep every file of those versions:
the retention is at least `min_retention_hours` (Delta's 7-day default) and is stretched per table
back past the commit of its protected version (`vacuum_retention_hours`). Which versions are protected
is the registry's answer (`transfertraj.registry.protected_versions`), passed in by the caller.

Both steps run only where they can do something (issue #18: on a lake of a few MB, maintenance took
5 minutes, 166 s of it OPTIMIZE rewriting San Francisco's 150 MB context_grid partition of 4 files that
needed no compaction, and 20-54 s per table of VACUUM that had nothing to delete). The decision is
read from the Delta log with delta-rs, without Spark: OPTIMIZE runs when a partition holds at least
`min_small_files` files under `small_file_bytes` (`partitions_to_compact`), VACUUM when a dry run at
the same retention finds files to delete. Each skip is logged with its reason. The protected version's
commit time comes from the same log, so Spark is started only when a table has work to do (`spark` may
be a function that starts it): a lake with nothing to compact or delete is checked in a few seconds
with no JVM at all.

delta-spark is imported when the maintenance runs, so `transfertraj.feature_store` imports without
pyspark (the delta-rs reader and the DAG files need only the table names).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from transfertraj.core.settings import Settings
from transfertraj.feature_store.tables import TABLES, table_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

MIN_RETENTION_HOURS = 168.0  # Delta's own safety default; a shorter retention can break concurrent readers
SMALL_FILE_BYTES = 64 * 1024**2  # a file under this is worth merging (Delta's OPTIMIZE aims at 1 GB files)
MIN_SMALL_FILES = 8  # fewer small files per partition cost less to read than a rewrite of the partition


def partitions_to_compact(
    files: Sequence[tuple[str, int]],
    *,
    small_file_bytes: int = SMALL_FILE_BYTES,
    min_small_files: int = MIN_SMALL_FILES,
) -> list[str]:
    """Partitions (sorted) holding at least `min_small_files` files smaller than `small_file_bytes`.

    `files` is (partition, size in bytes) per live file. OPTIMIZE rewrites every small file of a
    partition it touches; a few files already cost little to read, so rewriting them only spends
    time (a city's context grid: 4 files of 40 MB, 166 s to merge into one)."""
    small: dict[str, int] = {}
    for partition, size in files:
        if size < small_file_bytes:
            small[partition] = small.get(partition, 0) + 1
    return sorted(p for p, n in small.items() if n >= min_small_files)


def live_files(path: str) -> list[tuple[str, int]]:
    """(partition, size in bytes) of every file of the table's latest version, read from its log by delta-rs."""
    import pyarrow as pa
    from deltalake import DeltaTable as RsTable

    adds = pa.table(RsTable(path).get_add_actions(flatten=True))
    keys = [c for c in adds.column_names if c.startswith("partition.")]
    cols = {c: adds.column(c).to_pylist() for c in keys}
    sizes = adds.column("size_bytes").to_pylist()
    return [("/".join(f"{c[len('partition.') :]}={cols[c][i]}" for c in keys), sizes[i]) for i in range(len(sizes))]


def vacuumable_files(path: str, retention_hours: float) -> int | None:
    """How many files a VACUUM at `retention_hours` would delete (delta-rs dry run); None if it cannot tell."""
    from deltalake import DeltaTable as RsTable

    try:
        return len(
            RsTable(path).vacuum(
                retention_hours=math.ceil(retention_hours), dry_run=True, enforce_retention_duration=False
            )
        )
    except Exception as exc:  # a protocol feature delta-rs lacks: let Spark's VACUUM decide
        log.warning("%s: delta-rs cannot dry-run VACUUM (%s); vacuuming with Spark", path, exc)
        return None


def vacuum_retention_hours(min_hours: float, protected_commit_ms: float | None, now_ms: float) -> float:
    """Hours of history VACUUM must keep: at least `min_hours`, and back past the protected version's commit.

    A file of version v is removed by a later commit (timestamp >= v's); VACUUM deletes removed files
    older than the retention, so a retention reaching before v's commit keeps every file of v."""
    if protected_commit_ms is None:
        return float(min_hours)
    age_h = (now_ms - protected_commit_ms) / 3_600_000
    return float(max(min_hours, math.ceil(age_h) + 1))


def commit_ms(path: str, version: int) -> float | None:
    """Commit time (ms since the epoch) of `version` of the table at `path` (delta-rs, from its log); None if
    its history lost it."""
    from deltalake import DeltaTable as RsTable

    for entry in RsTable(path).history():
        if entry.get("version") == int(version):
            return float(entry["timestamp"])
    return None


def optimize_and_vacuum(
    spark: SparkSession | Callable[[], SparkSession],
    settings: Settings,
    *,
    protected: Mapping[str, int],
    min_retention_hours: float = MIN_RETENTION_HOURS,
    tables: Sequence[str] | None = None,
) -> list[dict]:
    """OPTIMIZE then VACUUM each of `tables` (default: every lake table) that exists; one dict per table done.

    `protected` maps a table to the oldest version a registered model records; its files are kept.
    OPTIMIZE runs only on partitions `partitions_to_compact` picks, VACUUM only where a dry run finds
    files to delete; the dict says which ran ("optimized": partitions compacted, "vacuumed": files).
    `spark` is a session, or a function returning one, called only when a table has work to do."""
    from deltalake import DeltaTable as RsTable

    session: list = []

    def delta_table(path: str):
        from delta.tables import DeltaTable

        if not session:
            session.append(spark() if callable(spark) else spark)
        return DeltaTable.forPath(session[0], path)

    unknown = sorted(set(tables or ()) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown tables {unknown}; the lake has {list(TABLES)}")
    # VACUUM compares file removal times with the real clock, so the protection is computed against it
    # too (a backfilled run's data interval would understate how old the protected version is).
    now_ms = time.time() * 1000
    out = []
    for name in tables or TABLES:
        path = table_path(settings, name)
        if not RsTable.is_deltatable(str(path)):
            continue
        compact = partitions_to_compact(live_files(path))
        if compact:
            dt = delta_table(path)
            for partition in compact:
                where = " AND ".join(
                    f"`{k}` = '{v}'" for k, v in (kv.split("=", 1) for kv in partition.split("/") if kv)
                )
                (dt.optimize().where(where) if where else dt.optimize()).executeCompaction()
            log.info("%s: optimized %s", name, compact)
        else:
            log.info(
                "%s: OPTIMIZE skipped, no partition has %d files under %d MB",
                name,
                MIN_SMALL_FILES,
                SMALL_FILE_BYTES // 1024**2,
            )
        keep = protected.get(name)
        retention = vacuum_retention_hours(
            min_retention_hours, commit_ms(path, keep) if keep is not None else None, now_ms
        )
        doomed = vacuumable_files(path, retention)
        if doomed == 0:
            log.info("%s: VACUUM skipped, no file is removed and older than %.0f h", name, retention)
        else:
            delta_table(path).vacuum(retention)
            log.info("%s: vacuumed with %.0f h retention (protects version %s)", name, retention, keep)
        out.append(
            {
                "table": name,
                "protected_version": keep,
                "retention_hours": retention,
                "optimized": compact,
                "vacuumed": doomed,
            }
        )
    return out
