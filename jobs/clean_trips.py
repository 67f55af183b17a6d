"""Cleaned points -> silver trajectories and quarantine rows (Spark).

cleaned = clean_trips_spark(points, city, buckets=...)            # jobs/clean_points.py: the rules
trips = build_trajectories(cleaned.where("kind = 'trip'"), city=..., date=..., vehicle_key=...)
rejects = point_rejects(cleaned.where("kind = 'drop'"))
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from transfertraj.jobs.schemas import DETAIL, POINT_IDX, REASON, ROW_ID, SOURCE_FILE


def build_trajectories(trips: DataFrame, *, city: str, date: str, vehicle_key: Column) -> DataFrame:
    """`trip` rows of clean_trips_spark (one per stream, seg, chunk; fixes as arrays in time order) -> silver
    rows with a stable trip id and a hashed vehicle. `source_file` is the file of the trajectory's first fix."""
    start = F.col("fix_ts")[0]
    end = F.element_at("fix_ts", -1)
    return trips.select(
        F.substring(F.sha2(F.concat_ws("|", F.lit(city), "stream_id", start.cast("string")), 256), 1, 24).alias(
            "trip_id"
        ),
        vehicle_key.alias("vehicle_key"),
        F.timestamp_seconds(start).alias("start_ts"),
        F.timestamp_seconds(end).alias("end_ts"),
        "n_points",
        (end - start).alias("duration_s"),
        "length_m",
        F.col("fix_ts").alias("ts"),
        F.col("fix_lon").alias("lon"),
        F.col("fix_lat").alias("lat"),
        F.col(SOURCE_FILE),
        F.lit(city).alias("city"),
        F.lit(date).alias("date"),
    )


def point_rejects(dropped: DataFrame) -> DataFrame:
    """Dropped points as quarantine rows: where they came from, why, and the fix itself."""
    detail = F.format_string("ts=%d lon=%.6f lat=%.6f", F.col("ts"), F.col("lon"), F.col("lat"))
    return dropped.select(
        SOURCE_FILE, ROW_ID, F.col(POINT_IDX).cast("int").alias(POINT_IDX), REASON, detail.alias(DETAIL)
    )
