"""Cleaned points -> silver trajectories and quarantine rows (Spark).

    cleaned = clean_points_spark(points, city, buckets=...)          # jobs/clean_points.py: the rules
    trips = build_trajectories(cleaned.where("reason IS NULL"), city=..., date=..., vehicle_key=...)
    rejects = point_rejects(cleaned.where("reason IS NOT NULL"))
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.schemas import DETAIL, POINT_IDX, REASON, ROW_ID, SOURCE_FILE


def build_trajectories(kept: DataFrame, *, city: str, date: str, vehicle_key: Column) -> DataFrame:
    """One row per (stream, seg, chunk): arrays ordered by time, a stable trip id, a hashed vehicle."""
    fixes = F.array_sort(F.collect_list(F.struct("ts", "lon", "lat", "step_m")))
    trips = kept.groupBy("stream_id", "seg", "chunk").agg(
        fixes.alias("fx"), F.first("vehicle_id").alias("vehicle_id"), F.min(SOURCE_FILE).alias(SOURCE_FILE)
    )
    start = F.col("fx")[0]["ts"]
    end = F.element_at("fx", -1)["ts"]
    return trips.select(
        F.substring(F.sha2(F.concat_ws("|", F.lit(city), "stream_id", start.cast("string")), 256), 1, 24).alias("trip_id"),
        vehicle_key.alias("vehicle_key"),
        F.timestamp_seconds(start).alias("start_ts"),
        F.timestamp_seconds(end).alias("end_ts"),
        F.size("fx").cast("int").alias("n_points"),
        (end - start).alias("duration_s"),
        F.aggregate(F.col("fx.step_m"), F.lit(0.0), lambda acc, x: acc + x).alias("length_m"),
        F.col("fx.ts").alias("ts"),
        F.col("fx.lon").alias("lon"),
        F.col("fx.lat").alias("lat"),
        F.col(SOURCE_FILE),
        F.lit(city).alias("city"),
        F.lit(date).alias("date"),
    )


def point_rejects(dropped: DataFrame) -> DataFrame:
    """Dropped points as quarantine rows: where they came from, why, and the fix itself."""
    detail = F.format_string("ts=%d lon=%.6f lat=%.6f", F.col("ts"), F.col("lon"), F.col("lat"))
    return dropped.select(SOURCE_FILE, ROW_ID, F.col(POINT_IDX).cast("int").alias(POINT_IDX), REASON, detail.alias(DETAIL))
