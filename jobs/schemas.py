"""Column names and explicit schemas of the ingestion tables (bronze, rejects, silver, runs).

Names are constants so a rename happens in one place; schemas are StructTypes so every write is checked.
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

CITY = "city"
DATE = "date"
SOURCE_FILE = "source_file"
ROW_ID = "row_id"  # stable id of an input row: position of the line in the landed files
LINE = "line"  # the raw input line as landed
HEADER = "header"  # the header line of the file the row came from
POINT_IDX = "point_idx"  # index of a point inside its input row (Porto POLYLINE); 0 for point logs
REASON = "reason"
DETAIL = "detail"

# One row per landed input line (header lines excluded). Raw ids stay here and nowhere after.
BRONZE_SCHEMA = StructType(
    [
        StructField(SOURCE_FILE, StringType(), False),
        StructField(ROW_ID, LongType(), False),
        StructField(LINE, StringType(), True),
        StructField(HEADER, StringType(), False),
        StructField(CITY, StringType(), False),
        StructField(DATE, StringType(), False),
    ]
)

# The quarantine: one row per rejected input row (point_idx null) or dropped point.
REJECTS_SCHEMA = StructType(
    [
        StructField(SOURCE_FILE, StringType(), True),
        StructField(ROW_ID, LongType(), True),
        StructField(POINT_IDX, IntegerType(), True),
        StructField(REASON, StringType(), False),
        StructField(DETAIL, StringType(), True),
        StructField(CITY, StringType(), False),
        StructField(DATE, StringType(), False),
    ]
)

# One row per clean trajectory; per-point values as equal-length arrays ordered by time.
SILVER_SCHEMA = StructType(
    [
        StructField("trip_id", StringType(), False),
        StructField("vehicle_key", StringType(), False),
        StructField("start_ts", TimestampType(), False),
        StructField("end_ts", TimestampType(), False),
        StructField("n_points", IntegerType(), False),
        StructField("duration_s", LongType(), False),
        StructField("length_m", DoubleType(), False),
        StructField("ts", ArrayType(LongType(), False), False),
        StructField("lon", ArrayType(DoubleType(), False), False),
        StructField("lat", ArrayType(DoubleType(), False), False),
        StructField(SOURCE_FILE, StringType(), True),
        StructField(CITY, StringType(), False),
        StructField(DATE, StringType(), False),
    ]
)

RUNS_SCHEMA = StructType(
    [
        StructField("run_id", StringType(), False),
        StructField("job", StringType(), False),
        StructField(DATE, StringType(), False),
        StructField("started_at", TimestampType(), False),
        StructField("finished_at", TimestampType(), False),
        # running (a run's first row) | published | failed_quality_gate | failed_unreadable | failed
        StructField("status", StringType(), False),
        StructField("message", StringType(), True),
        StructField("files", IntegerType(), False),
        StructField("rows_read", LongType(), False),
        StructField("rows_accepted", LongType(), False),
        StructField("rows_rejected", LongType(), False),
        StructField("rows_rejected_by_reason", MapType(StringType(), LongType()), False),
        StructField("points_read", LongType(), False),
        StructField("points_kept", LongType(), False),
        StructField("points_dropped", LongType(), False),
        StructField("points_dropped_by_reason", MapType(StringType(), LongType()), False),
        StructField("trajectories_out", LongType(), False),
        StructField("bronze_version", LongType(), True),
        StructField("rejects_version", LongType(), True),
        StructField("silver_version", LongType(), True),
        StructField(CITY, StringType(), False),
    ]
)

# File level (row_id null in rejects): a landed entry that was not read, or not ingested.
FILE_REASONS = {
    "symlink": "a symbolic link: never followed",
    "not_regular_file": "a fifo, socket or device: never opened",
    "outside_landing": "resolves outside the landing folder: never opened",
    "unknown_file_type": "a file name suffix ingestion does not read",
    "wrong_compression": "compressed data under a name that does not say so (gzip named .csv, zip)",
    "bad_file_encoding": "UTF-16 or binary data, not UTF-8 text",
    "unreadable_file": "cannot be read to the end (truncated or corrupt gzip, I/O error)",
    "bad_header": "the header line lacks required columns or does not parse",
}

# Reason codes. Row level: the whole input row is rejected. Point level: one fix is dropped.
ROW_REASONS = {
    "blank_line": "empty line",
    "repeated_header": "a header line inside the data",
    "bad_encoding": "bytes that are not valid UTF-8",
    "malformed_csv": "wrong number of fields or an unclosed quote",
    "footer": "a one-field line after the file's last data line (not a data row: the quality gate ignores it)",
    "duplicate_row": "an exact copy of an earlier row",
    "conflicting_duplicate": "its TRIP_ID comes with other content in another row: every version is quarantined",
    "missing_field": "a required field is empty",
    "nonexistent_local_time": "a local time without offset inside the hour a spring DST change skips",
    "bad_timestamp": "timestamp does not parse or is out of range",
    "bad_polyline": "POLYLINE is not a JSON list of [lon, lat] pairs",
    "empty_polyline": "POLYLINE is an empty list",
    "invalid_coordinate": "longitude/latitude missing, NaN, out of range or 0/0 (point logs: the row is the point)",
}
POINT_REASONS = {
    "invalid_coordinate": "longitude/latitude NaN, out of range or 0/0",
    "ambiguous_local_time": "a local time in the hour an autumn DST change repeats, its pass not given by fix order",
    "duplicate_fix": "same vehicle, same time, same position as an earlier fix",
    "duplicate_timestamp": "same vehicle and time as an earlier fix, another position",
    "outside_bbox": "outside the city's bounding box (the trip is split there)",
    "speed_spike": "a single fix reached and left at above the maximum speed",
    "off_trip": "vehicle not in the trip state that makes trips (e.g. vacant cab)",
    "stay": "part of a long stay (the trip is split there)",
    "resampled_out": "not the nearest fix to a tick of the city's sampling interval",
    "short_trajectory": "its trajectory has fewer points than min_points",
    "too_long": "its trajectory has more than max_points and long_trips=drop",
    "not_vehicle": "its trajectory is slower on average than min_vehicle_speed_kmh",
}


def delta_arrow_schema(schema: StructType, *, without: tuple[str, ...] = ()) -> pa.Schema:
    """`schema` as Arrow the way Delta stores a table that Spark created: every field nullable, list elements
    too (the two writers of a table, Spark and an Arrow worker or delta-rs, must agree). `without`: columns
    left out (a partition's columns live in its folder names, not in its files)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    def loose(t: pa.DataType) -> pa.DataType:
        return pa.list_(pa.field("element", loose(t.value_type))) if pa.types.is_list(t) else t

    arrow = to_arrow_schema(schema, timezone="UTC")
    return pa.schema([pa.field(f.name, loose(f.type)) for f in arrow if f.name not in without])
