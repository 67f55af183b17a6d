"""Cleaned trips -> silver rows, written by the worker that cleaned them; dropped points -> quarantine rows.

    sink = SilverSink(PartSink(table_path(settings, "silver"), {"city": c, "date": d}, schema), city=c, key=key)
    cleaned = clean_trips_spark(points, city, buckets=..., sink=sink)   # jobs/clean_points.py: the rules
    # trip rows come back slim (no arrays): part_path/part_row say where silver_rows wrote each one;
    # one `part` row per task names its file (feature_store/arrow_parts.commit_parts publishes them)
    rejects = point_rejects(cleaned.where("kind = 'drop'"))

Silver rows are made in the Arrow worker (silver_rows, pyarrow and hashlib) and written there as Parquet:
a trip's three arrays used to cross into the JVM, sit in Spark's cache and go through Spark's Parquet
writer, which was most of the ingestion's JVM time at 10 M points (issue #18).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transfertraj.feature_store.arrow_parts import PartSink
from transfertraj.jobs.schemas import DETAIL, POINT_IDX, REASON, ROW_ID, SOURCE_FILE

PART = "part"  # the kind of a cleaned frame's row that names a silver file a task wrote (trips_to_parts)


@dataclass(frozen=True)
class SilverSink:
    """What a cleaning worker needs to write silver: where (the partition's PartSink), the city (in each
    trip id) and the vehicle key (jobs/vehicle_key.py)."""

    parts: PartSink
    city: str
    key: str


def trip_ids(city: str, stream_ids: pa.Array, starts: np.ndarray) -> pa.Array:
    """A trip's stable id: the first 24 hex characters of sha256('city|stream id|first fix epoch s'). The
    stream id is the line's hash (Porto) or the vehicle's stream: a rerun gives the same ids."""
    return pa.array(
        [
            hashlib.sha256(f"{city}|{s}|{int(t)}".encode()).hexdigest()[:24]
            for s, t in zip(stream_ids.to_pylist(), starts.tolist(), strict=True)
        ],
        pa.string(),
    )


def silver_rows(trips: pa.Table, *, city: str, key: str) -> pa.Table:
    """CLEANED_DDL `trip` rows (one per stream, seg, chunk; fixes as arrays in time order) -> silver rows
    (jobs/schemas.SILVER_SCHEMA without the partition columns), with a stable trip id and a keyed vehicle
    hash. `source_file` is the file of the trajectory's first fix."""
    from transfertraj.jobs.vehicle_key import vehicle_keys

    fix_ts = trips.column("fix_ts").combine_chunks()
    n = pc.list_value_length(fix_ts).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(fix_ts).to_numpy(zero_copy_only=False)
    offsets = fix_ts.offsets.to_numpy()[:-1] - fix_ts.offsets[0].as_py()
    start = flat[offsets] if len(flat) else np.zeros(0, np.int64)
    end = flat[offsets + n - 1] if len(flat) else np.zeros(0, np.int64)
    seconds = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "trip_id": trip_ids(city, trips.column("stream_id").combine_chunks(), start),
            "vehicle_key": vehicle_keys(trips.column("vehicle_id").combine_chunks(), key),
            "start_ts": pa.array(start * 1_000_000, pa.int64()).cast(seconds),
            "end_ts": pa.array(end * 1_000_000, pa.int64()).cast(seconds),
            "n_points": trips.column("n_points"),
            "duration_s": pa.array(end - start, pa.int64()),
            "length_m": trips.column("length_m"),
            "ts": fix_ts,
            "lon": trips.column("fix_lon"),
            "lat": trips.column("fix_lat"),
            SOURCE_FILE: trips.column(SOURCE_FILE),
        }
    )


def trips_to_parts(batches, sink: SilverSink, schema: pa.Schema):
    """Arrow worker: cleaned batches (`schema`: CLEANED_DDL's columns, part_* included) with every `trip`
    row written to this task's silver file (silver_rows) and passed on slim: its kind, row id and point
    count, and its place in the file in part_path and part_row (so that the driver can take a trip out
    again: a row that a rule over other rows rejects later). Ends with one `part` row naming the file
    (PART_DDL's values)."""
    from transfertraj.jobs.clean_points import TRIP

    slim_columns = ("kind", ROW_ID, "n_points")  # what the driver counts and takes out by; the rest is in the file
    with sink.parts.writer() as w:
        for batch in batches:
            if not batch.num_rows:
                continue
            is_trip = pc.fill_null(pc.equal(batch.column("kind"), TRIP), False)
            other = batch.filter(pc.invert(is_trip))
            if other.num_rows:
                yield other
            trips = pa.Table.from_batches([batch.filter(is_trip)])
            if not trips.num_rows:
                continue
            first = w.write(silver_rows(trips, city=sink.city, key=sink.key))
            n = trips.num_rows
            slim = {name: trips.column(name) for name in slim_columns}
            slim |= {
                "part_path": pa.array([w.path] * n, pa.string()),
                "part_row": pa.array(np.arange(first, first + n)),
            }
            yield from _conformed(slim, n, schema).to_batches()
        summary = w.summary()
    if summary.num_rows:
        columns = {n: summary.column(n) for n in summary.schema.names}
        yield from _conformed({**columns, "kind": pa.array([PART], pa.string())}, 1, schema).to_batches()


def _conformed(columns: dict, n: int, schema: pa.Schema) -> pa.Table:
    """A table of `schema` from the columns given (absent columns null)."""
    return pa.table(
        {f.name: (columns[f.name] if f.name in columns else pa.nulls(n, f.type)).cast(f.type) for f in schema},
        schema=schema,
    )


def point_rejects(dropped: DataFrame) -> DataFrame:
    """Dropped points as quarantine rows: where they came from, why, and the fix itself."""
    detail = F.format_string("ts=%d lon=%.6f lat=%.6f", F.col("ts"), F.col("lon"), F.col("lat"))
    return dropped.select(
        SOURCE_FILE, ROW_ID, F.col(POINT_IDX).cast("int").alias(POINT_IDX), REASON, detail.alias(DETAIL)
    )
