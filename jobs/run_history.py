"""What ingestion did, from the Delta tables: the runs log and the quarantine.

transfertraj runs --city porto                 # one line per run, newest first
transfertraj rejects --city porto --date 2013-07-01 [--reason bad_polyline] [--limit 20]
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.tables import table_path


def runs_lines(spark: SparkSession, settings: Settings, city: str, limit: int = 20) -> list[str]:
    runs, _ = read_table(spark, table_path(settings, "runs"), where={"city": city})
    # A run logs a `running` row at its start and its outcome at its end: one line per run, and a run
    # with no outcome (killed) shows as interrupted.
    outcomes = runs.where(F.col("status") != "running")
    interrupted = (
        runs.where(F.col("status") == "running")
        .join(outcomes.select("run_id"), "run_id", "left_anti")
        .withColumn("status", F.lit("interrupted"))
    )
    runs = outcomes.unionByName(interrupted)
    rows = runs.orderBy(F.col("finished_at").desc()).limit(limit).collect()
    out = [
        f"{'finished (UTC)':19s}  {'date':10s}  {'status':20s} {'rows read':>10s} {'rejected':>9s} "
        f"{'points':>10s} {'kept':>10s} {'trips':>7s}  silver"
    ]
    for r in rows:
        out.append(
            f"{r.finished_at:%Y-%m-%d %H:%M:%S}  {r.date:10s}  {r.status:20s} {r.rows_read:>10,} {r.rows_rejected:>9,} "
            f"{r.points_read:>10,} {r.points_kept:>10,} {r.trajectories_out:>7,}  v{r.silver_version}"
        )
    return out


def rejects_lines(
    spark: SparkSession, settings: Settings, city: str, date: str, reason: str | None = None, limit: int = 10
) -> list[str]:
    rejects, version = read_table(spark, table_path(settings, "rejects"), where={"city": city, "date": date})
    if reason:
        rejects = rejects.where(F.col("reason") == reason)
    out = [f"rejects of {city} {date} (table version {version})"]
    for r in (
        rejects.groupBy("reason", F.col("point_idx").isNull().alias("row")).count().orderBy(F.desc("count")).collect()
    ):
        out.append(f"  {'row  ' if r.row else 'point'} {r.reason:22s} {r['count']:>10,}")
    out.append("examples:")
    for r in rejects.orderBy("source_file", "row_id", "point_idx").limit(limit).collect():
        where = f"{r.source_file} row {r.row_id}" + ("" if r.point_idx is None else f" point {r.point_idx}")
        out.append(f"  {r.reason:22s} {where}: {(r.detail or '')[:100]}")
    return out
