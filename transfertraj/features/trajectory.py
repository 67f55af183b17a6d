"""A trajectory's feature row: per-point values -> one row per trajectory with equal-length arrays.

    table = point_features(points, crs=city.crs, timezone=city.timezone, context=ctx, ...)   # per point
    rows = trajectory_rows(table)                                         # per trajectory (features layout)
    columns = trajectory_features(silver_rows, crs=city.crs, timezone=city.timezone, context=ctx, ...)

The layout is the features table's (docs/features_contract.md): ts, lon, lat, mx, my, x, y, weekday,
hour, minute, minutes_since_start, poi, poi_missing, road, road_missing, arrays ordered by point index.
`add_relative` computes the columns that need the trajectory's first point (x, y metres from it, minutes
since it). Serving starts from points (trajectory_rows); the Spark job starts from silver's trajectory
rows and calls trajectory_features on each Arrow batch of them (jobs/featurize.py): the lists are
flattened, point_features runs on the flat points and the lists are rebuilt with the same offsets, so
no point ever becomes a row of its own.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transfertraj.features.context import (
    CONTEXT_COLUMNS,
    CityContext,
    context_arrays,
    context_vectors,
    missing_context_vectors,
)
from transfertraj.features.metric_coordinates import metric_xy
from transfertraj.features.taxonomy import covered_mask
from transfertraj.features.temporal import temporal_fields

# per-point columns of a trajectory row, in the features table's order (x, y, minutes_since_start added)
POINT_FIELDS = ("ts", "lon", "lat", "mx", "my", "weekday", "hour", "minute", *CONTEXT_COLUMNS)
RELATIVE_FIELDS = ("x", "y", "minutes_since_start")
TRAJECTORY_FIELDS = (
    "ts",
    "lon",
    "lat",
    "mx",
    "my",
    "x",
    "y",
    "weekday",
    "hour",
    "minute",
    "minutes_since_start",
    *CONTEXT_COLUMNS,
)


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one Array: its only chunk as is (combine_chunks copies even one chunk)."""
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def _first_repeated(col: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, first value of each row repeated per value, offsets) of a list column."""
    col = _array(col)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(col), 0), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = col.flatten().to_numpy(zero_copy_only=False)
    first = np.repeat(values[offsets[:-1][lengths > 0]], lengths[lengths > 0])
    return values, first, offsets


def relative_arrays(batch: pa.RecordBatch | pa.Table) -> list[pa.Array]:
    """x, y (float32 metres from the first point) and minutes_since_start (float32) of list rows ts, mx, my."""
    out = []
    mx, mx0, offsets = _first_repeated(batch.column("mx"))
    my, my0, _ = _first_repeated(batch.column("my"))
    ts, ts0, _ = _first_repeated(batch.column("ts"))
    values = ((mx - mx0).astype(np.float32), (my - my0).astype(np.float32), ((ts - ts0) / 60.0).astype(np.float32))
    for v in values:
        out.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(v, pa.float32())))
    return out


def add_relative(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with RELATIVE_FIELDS appended (see relative_arrays)."""
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *relative_arrays(batch)], names=[*batch.schema.names, *RELATIVE_FIELDS]
    )


def _flat(col: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(offsets from 0, int32; the values the rows reference) of a list column, sliced or not."""
    col = _array(col)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(col), 0), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.array(offsets, pa.int32()), pc.list_flatten(col)


def trajectory_features(
    rows: pa.RecordBatch | pa.Table,
    *,
    crs: str,
    timezone: str,
    context: CityContext | None,
    tree=None,
    phi_m: float,
    categories_covered: list[str] | None = None,
) -> pa.RecordBatch:
    """Trajectory rows with list columns ts, lon, lat (silver's layout) -> TRAJECTORY_FIELDS as list
    columns of the same lengths, one row per input row, in its order (point_features on the flattened
    points, then add_relative). The lists must have equal lengths per row; arguments as point_features."""
    (offsets, ts), (lon_offsets, lon), (lat_offsets, lat) = (_flat(rows.column(c)) for c in ("ts", "lon", "lat"))
    if not (offsets.equals(lon_offsets) and offsets.equals(lat_offsets)):
        raise ValueError("ts, lon and lat must have the same number of values in every row")
    flat = pa.table({"ts": ts, "lon": lon, "lat": lat})
    per_point = point_features(
        flat,
        crs=crs,
        timezone=timezone,
        context=context,
        tree=tree,
        phi_m=phi_m,
        categories_covered=categories_covered,
    )
    lists = [pa.ListArray.from_arrays(offsets, _array(per_point.column(name))) for name in POINT_FIELDS]
    per_trip = add_relative(pa.RecordBatch.from_arrays(lists, names=list(POINT_FIELDS)))
    return per_trip.select(list(TRAJECTORY_FIELDS))


def point_features(
    points: pa.Table,
    *,
    crs: str,
    timezone: str,
    context: CityContext | None,
    tree=None,
    phi_m: float,
    categories_covered: list[str] | None = None,
) -> pa.Table:
    """Points (trip_id, idx, ts, lon, lat) -> the same rows with mx, my, weekday, hour, minute and context.

    `context` None: a city without OSM (missing context everywhere). `tree`: poi_tree(context), built
    once by the caller."""
    lon = points.column("lon").to_numpy()
    lat = points.column("lat").to_numpy()
    mx, my = metric_xy(lon, lat, crs)
    weekday, hour, minute = temporal_fields(points.column("ts").to_numpy(), timezone)
    if context is None:
        vectors = missing_context_vectors(len(mx))
    else:
        vectors = context_vectors(
            np.column_stack([mx, my]),
            context.lattice,
            tree,
            context.poi_category,
            phi_m=phi_m,
            category_missing=covered_mask(categories_covered),
        )
    cols = {
        "mx": pa.array(mx),
        "my": pa.array(my),
        "weekday": pa.array(weekday),
        "hour": pa.array(hour),
        "minute": pa.array(minute),
        **dict(zip(CONTEXT_COLUMNS, context_arrays(*vectors), strict=True)),
    }
    for name, values in cols.items():
        points = points.append_column(name, values)
    return points


def trajectory_rows(points: pa.Table) -> pa.Table:
    """Per-point rows (trip_id, idx and POINT_FIELDS) -> one row per trajectory: trip_id, n_points and
    TRAJECTORY_FIELDS, trips in order of trip_id, points in order of idx."""
    order = pc.sort_indices(points, sort_keys=[("trip_id", "ascending"), ("idx", "ascending")])
    points = points.take(order)
    trip = _array(points.column("trip_id"))
    starts = np.flatnonzero(np.r_[True, pc.not_equal(trip[1:], trip[:-1]).to_numpy(zero_copy_only=False)])
    offsets = pa.array(np.r_[starts, len(trip)].astype(np.int32), pa.int32())
    lists = {name: pa.ListArray.from_arrays(offsets, _array(points.column(name))) for name in POINT_FIELDS}
    per_trip = pa.RecordBatch.from_arrays(list(lists.values()), names=list(lists))
    per_trip = add_relative(per_trip)
    return pa.table(
        {
            "trip_id": trip.take(pa.array(starts)),
            "n_points": pa.array(np.diff(np.r_[starts, len(trip)]).astype(np.int32)),
            **{name: per_trip.column(name) for name in TRAJECTORY_FIELDS},
        }
    )
