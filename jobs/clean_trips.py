"""Cleaned trips -> silver rows, and dropped points -> quarantine rows, written by the worker that cleaned them.

    sink = SilverSink(PartSink(table_path(settings, "silver"), part, schema), city=c, key=key,
                      rejects=PartSink(table_path(settings, "rejects"), part, rejects_schema))
    cleaned = clean_trips_spark(points, city, buckets=..., sink=sink)   # jobs/clean_points.py: the rules
    # trip rows come back slim (no arrays): part_path/part_row say where silver_rows wrote each one;
    # dropped points come back counted: one `drop` row per (row, reason) run of the rejects file
    # (part_row = its first row, n_points = its rows); one `part` / `rejects_part` row per task names each
    # file (feature_store/arrow_parts.commit_parts publishes them)

Silver rows are made in the Arrow worker (silver_rows, pyarrow and hashlib) and written there as Parquet:
a trip's three arrays used to cross into the JVM, sit in Spark's cache and go through Spark's Parquet
writer, which was most of the ingestion's JVM time at 10 M points (issue #18). The dropped points' quarantine
rows likewise (drop_rejects): each used to come back as a row, be formatted by Spark's format_string and be
written by Spark, 48 s of the 21 San Francisco days' 296 s.
"""

from __future__ import annotations

import contextlib
import decimal
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transfertraj.feature_store.arrow_parts import PartSink
from transfertraj.jobs.schemas import DETAIL, POINT_IDX, REASON, ROW_ID, SOURCE_FILE

PART = "part"  # the kind of a cleaned frame's row that names a silver file a task wrote (trips_to_parts)
REJECTS_PART = "rejects_part"  # ... and of the row that names its rejects file (the dropped points)
REJECT_COLUMNS = (SOURCE_FILE, ROW_ID, POINT_IDX, REASON, DETAIL)  # a rejects file's columns


@dataclass(frozen=True)
class SilverSink:
    """What a cleaning worker needs to write silver: where (the partition's PartSink), the city (in each
    trip id) and the vehicle key (jobs/vehicle_key.py); and where the dropped points' quarantine rows go
    (`rejects`: the rejects table's partition; None: the drops come back as rows, one per point)."""

    parts: PartSink
    city: str
    key: str
    rejects: PartSink | None = None
    # the dropped points come back counted per (row, reason) run, so that the driver can take a row's
    # points out again (a Porto row); False: per reason (a point log's row is one fix: nothing to take out,
    # and a row per dropped fix through the JVM was most of the cost)
    runs_by_row: bool = True


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
    again: a row that a rule over other rows rejects later). With `sink.rejects`, every `drop` row is
    written to this task's rejects file (drop_rejects) and passed on counted (drop_runs). Ends with one
    `part` row naming the silver file and one `rejects_part` row naming the rejects file (PART_DDL's
    values)."""
    from transfertraj.jobs.clean_points import DROP, TRIP

    slim_columns = ("kind", ROW_ID, "n_points")  # what the driver counts and takes out by; the rest is in the file
    with contextlib.ExitStack() as files:
        w = files.enter_context(sink.parts.writer())
        dw = files.enter_context(sink.rejects.writer()) if sink.rejects is not None else None
        for batch in batches:
            if not batch.num_rows:
                continue
            kind = batch.column("kind")
            is_trip = pc.fill_null(pc.equal(kind, TRIP), False)
            is_drop = pc.fill_null(pc.equal(kind, DROP), False) if dw is not None else pa.repeat(False, len(kind))
            other = batch.filter(pc.invert(pc.or_(is_trip, is_drop)))
            if other.num_rows:
                yield other
            if dw is not None:
                drops = pa.Table.from_batches([batch.filter(is_drop)])
                yield from _written_drops(drops, dw, schema, by_row=sink.runs_by_row)
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
        summaries = [(PART, w.summary())] + ([(REJECTS_PART, dw.summary())] if dw is not None else [])
    for kind, summary in summaries:
        if summary.num_rows:
            columns = {n: summary.column(n) for n in summary.schema.names}
            yield from _conformed({**columns, "kind": pa.array([kind], pa.string())}, 1, schema).to_batches()


def _written_drops(drops: pa.Table, w, schema: pa.Schema, *, by_row: bool = True):
    """`drop` rows written to the rejects file of `w`, ordered by row, reason and point (by reason alone
    without `by_row`), and passed on as drop_runs' counted rows (their row id null without `by_row`)."""
    from transfertraj.jobs.clean_points import DROP

    if not drops.num_rows:
        return
    keys = [(ROW_ID, "ascending"), (REASON, "ascending"), (POINT_IDX, "ascending")]
    drops = drops.sort_by(keys if by_row else keys[1:2])
    first = w.write(drop_rejects(drops))
    rows = drops.column(ROW_ID) if by_row else pa.nulls(drops.num_rows, pa.int64())
    runs = drop_runs(rows, drops.column(REASON))
    n = len(runs["n"])
    slim = {
        "kind": pa.array([DROP] * n, pa.string()),
        ROW_ID: runs[ROW_ID],
        REASON: runs[REASON],
        "n_points": pa.array(runs["n"], pa.int32()),
        "part_path": pa.array([w.path] * n, pa.string()),
        "part_row": pa.array(first + runs["start"]),
    }
    yield from _conformed(slim, n, schema).to_batches()


def drop_runs(row_ids, reasons) -> dict:
    """Runs of equal (row id, reason) in rows sorted by them: each run's row id, reason, first position
    (`start`) and length (`n`). A Porto row's dropped points are a few runs; a point log's (a row per
    fix), one run each: it is what the driver counts by reason and takes out by row."""
    row_ids, reasons = (c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in (row_ids, reasons))
    rid = np.asarray(pc.fill_null(row_ids, -1).to_numpy(zero_copy_only=False))
    code = np.asarray(pc.dictionary_encode(pc.fill_null(reasons, "")).indices.to_numpy(zero_copy_only=False))
    change = np.ones(len(rid), bool)
    change[1:] = (rid[1:] != rid[:-1]) | (code[1:] != code[:-1])
    start = np.flatnonzero(change)
    n = np.diff(np.append(start, len(rid)))
    return {
        ROW_ID: row_ids.take(pa.array(start)),
        REASON: reasons.take(pa.array(start)),
        "start": start.astype(np.int64),
        "n": n,
    }


def _fixed6(values: list) -> list[str]:
    """Each double as Java's %.6f prints it (NaN, Infinity, -Infinity and null as Java names them). Java
    rounds half up the shortest decimal that reads back as the double; Python's %.6f rounds the double's
    exact binary value. They differ only where that shortest decimal has exactly 7 decimals, the last a 5
    (a tie for Java, not in binary): those few are rounded as Java does (decimal, half up)."""
    x = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.abs(x) * 1e7
        near = np.abs(scaled - np.rint(scaled)) <= np.maximum(1e-6, scaled * 1e-15)
        tie = np.isfinite(scaled) & near & (np.rint(scaled) % 10 == 5)
    out = []
    for v, maybe in zip(values, tie.tolist(), strict=True):
        if v is None:
            out.append("null")
        elif v != v:
            out.append("NaN")
        elif v in (math.inf, -math.inf):
            out.append("Infinity" if v > 0 else "-Infinity")
        elif maybe and "e" not in (shortest := repr(v)) and len(shortest.partition(".")[2]) == 7:
            out.append(str(decimal.Decimal(shortest).quantize(_MICRO, rounding=decimal.ROUND_HALF_UP)))
        else:
            out.append(f"{v:.6f}")
    return out


_MICRO = decimal.Decimal("0.000001")


def drop_rejects(drops: pa.Table) -> pa.Table:
    """CLEANED_DDL `drop` rows -> quarantine rows (REJECT_COLUMNS): where each point came from, why it was
    dropped, and the fix itself in `detail` ('ts=<epoch s> lon=<%.6f> lat=<%.6f>', as Spark's
    format_string wrote it before issue #18)."""
    ts = ["null" if t is None else t for t in drops.column("ts").to_pylist()]
    lon, lat = _fixed6(drops.column("lon").to_pylist()), _fixed6(drops.column("lat").to_pylist())
    detail = [f"ts={t} lon={x} lat={y}" for t, x, y in zip(ts, lon, lat, strict=True)]
    return pa.table(
        {
            SOURCE_FILE: drops.column(SOURCE_FILE),
            ROW_ID: drops.column(ROW_ID),
            POINT_IDX: drops.column(POINT_IDX).cast(pa.int32()),
            REASON: drops.column(REASON),
            DETAIL: pa.array(detail, pa.string()),
        }
    )


def _conformed(columns: dict, n: int, schema: pa.Schema) -> pa.Table:
    """A table of `schema` from the columns given (absent columns null)."""
    return pa.table(
        {f.name: (columns[f.name] if f.name in columns else pa.nulls(n, f.type)).cast(f.type) for f in schema},
        schema=schema,
    )
