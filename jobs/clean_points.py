"""GPS points -> a verdict per point (kept or the reason it was dropped) and its trajectory piece.

    verdicts = clean_sorted(sorted_points, CleaningRules.for_city(city))       # pure numpy, one process
    cleaned = clean_points_spark(points_df, city)                              # the same, spread by Spark
    fused = check_rows(bronze, city, headers, *porto_cleaning(city))          # Porto: a row is a stream

The rules run in this order; rules that look at neighbours only see the points still kept:
  1. invalid_coordinate   NaN/null, out of range, or (0, 0)
  2. duplicate_fix        the same second and position as the previous fix of the stream
     duplicate_timestamp  the same second, another position
  3. outside_bbox         outside the city box; the next kept fix starts a new trip
  4. off_trip             (only with a trip-state column, e.g. SF `occupied`) the other state; a state
                          change starts a new trip (two fares back to back are two trips)
  5. speed_spike          one fix reached and left faster than max speed while its neighbours agree
  6. stay                 a run of fixes each reached slower than stay_max_speed_kmh, lasting
                          stay_split_s or more within stay_radius_m: dropped, the trip splits after it;
                          a time gap over gap_split_s or a jump faster than max speed also splits (segments)
  7. resampled_out        per tick of the city's interval from a segment's first fix, the nearest real
                          fix (then the earliest); never interpolated. A tick without a fix splits.
  8. too_long             (long_trips: drop) pieces over max_points; otherwise cut into windows
     short_trajectory     windows under min_points
     not_vehicle          windows slower on average than min_vehicle_speed_kmh (walks, stays)

Why numpy inside Spark rather than Spark window functions: every rule is "compare with the previous
kept fix of the stream". With windows that is one sort per rule over a persisted frame; here the points
of whole streams reach one Python worker together (`mapInArrow`; Porto rows are whole streams already,
point logs take one shuffle by stream), are sorted once, and each rule is a shifted-array comparison.
On 10 M generated Porto points this took the ingestion from window-bound (~15 k points/s) to the
figures in bench/README.md. A Porto row is a whole stream already, its fixes in time order: its points
are parsed from the POLYLINE and cleaned in the same worker that checks the rows (jobs/parse_points.py,
checked_and_cleaned_porto), so no Spark row per point is ever made and the points cross from Python to
the JVM once, as the trajectories' arrays.

Shapes: every array is (n,), n = points of the batch, sorted by (stream, ts, row_id, point_idx).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transfertraj.core.city_config import CityConfig
from transfertraj.core.geo import haversine_m

KEPT = 0
REASONS = (
    "",
    "invalid_coordinate",
    "duplicate_fix",
    "duplicate_timestamp",
    "outside_bbox",
    "off_trip",
    "speed_spike",
    "stay",
    "resampled_out",
    "too_long",
    "short_trajectory",
    "not_vehicle",
    "ambiguous_local_time",
)
CODE = {r: i for i, r in enumerate(REASONS)}
INPUT_COLUMNS = ("source_file", "row_id", "point_idx", "stream_id", "vehicle_id", "ts", "lon", "lat", "trip_state")
# The output: the input columns, then the verdict and, for kept points, the piece they belong to.
OUTPUT_DDL = (
    "source_file string, row_id long, point_idx int, stream_id string, vehicle_id string, ts long, "
    "lon double, lat double, trip_state string, reason string, seg long, chunk int, step_m double"
)


@dataclass(frozen=True)
class CleaningRules:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float
    trip_state_value: str | None
    max_speed_kmh: float
    gap_split_s: float
    stay_split_s: float
    stay_radius_m: float
    stay_max_speed_kmh: float
    interval_s: float
    min_points: int
    max_points: int
    long_trips: str
    min_vehicle_speed_kmh: float

    @classmethod
    def for_city(cls, city: CityConfig) -> CleaningRules:
        c, b = city.cleaning, city.bbox
        return cls(
            min_lon=b.min_lon,
            min_lat=b.min_lat,
            max_lon=b.max_lon,
            max_lat=b.max_lat,
            trip_state_value=city.raw.trip_state_value,
            max_speed_kmh=c.max_speed_kmh,
            gap_split_s=c.gap_split_s,
            stay_split_s=c.stay_split_s,
            stay_radius_m=c.stay_radius_m,
            stay_max_speed_kmh=c.stay_max_speed_kmh,
            interval_s=city.sampling_interval_s,
            min_points=city.min_points,
            max_points=city.max_points,
            long_trips=c.long_trips,
            min_vehicle_speed_kmh=c.min_vehicle_speed_kmh,
        )


# ---- array helpers: groups are runs of equal keys in sorted arrays -------------------------------------


def starts(key: np.ndarray) -> np.ndarray:
    """(n,) bool: True where a sorted group key changes (and at 0)."""
    s = np.ones(len(key), bool)
    if len(key) > 1:
        s[1:] = key[1:] != key[:-1]
    return s


def prev(x: np.ndarray, first: np.ndarray, fill=np.nan) -> np.ndarray:
    """x of the previous element of the same group; `fill` at a group's first element."""
    out = np.empty(len(x), dtype=np.result_type(x, np.asarray(fill)))
    if len(x):
        out[1:] = x[:-1]
        out[first] = fill
    return out


def nxt(x: np.ndarray, first: np.ndarray, fill=np.nan) -> np.ndarray:
    last = np.append(first[1:], True) if len(first) else first
    out = np.empty(len(x), dtype=np.result_type(x, np.asarray(fill)))
    if len(x):
        out[:-1] = x[1:]
        out[last] = fill
    return out


def prev_where(x: np.ndarray, eligible: np.ndarray, first: np.ndarray, fill) -> np.ndarray:
    """x at the last earlier element of the same group where `eligible` holds; `fill` if none."""
    n = len(x)
    pos = np.arange(n)
    last = np.maximum.accumulate(np.where(eligible, pos, -1)) if n else pos
    before = np.concatenate([[-1], last[:-1]]) if n else last
    group_start = np.maximum.accumulate(np.where(first, pos, 0)) if n else pos
    ok = before >= group_start
    return np.where(ok, x[np.where(ok, before, 0)] if n else x, fill)


def group_sizes(first: np.ndarray) -> np.ndarray:
    """(n,) the size of each element's group."""
    s = np.flatnonzero(first)
    sizes = np.diff(np.append(s, len(first)))
    return np.repeat(sizes, sizes)


def position_in_group(first: np.ndarray) -> np.ndarray:
    s = np.flatnonzero(first)
    sizes = np.diff(np.append(s, len(first)))
    return np.arange(len(first)) - np.repeat(s, sizes)


# ---- the rules ---------------------------------------------------------------------------------------


def resolve_ambiguous_times(
    stream: np.ndarray, row_id: np.ndarray, ts: np.ndarray, ts_alt: np.ndarray, ambiguous: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Local times an autumn DST change repeats, resolved by the fix order of each stream.

    ts: (n,) int64 the earlier instant; ts_alt: (n,) int64 the later one where `ambiguous`. In a stream's
    ambiguous fixes taken in file order (row_id), the wall clock going backwards marks the repeated hour:
    fixes before that jump are the first pass (ts), fixes from it on the second (ts_alt). A stream whose
    ambiguous fixes never jump back cannot say which pass it is in: those fixes are returned as
    unresolved (dropped as ambiguous_local_time), never guessed. Returns (ts, unresolved)."""
    ts = ts.astype(np.int64, copy=True)
    unresolved = np.zeros(len(ts), bool)
    idx = np.flatnonzero(ambiguous)
    if not len(idx):
        return ts, unresolved
    o = idx[np.lexsort((row_id[idx], stream[idx]))]
    first = starts(stream[o])
    grp = np.cumsum(first) - 1
    shifted = ts[o] + grp * (1 << 34)  # later streams sort above earlier ones: one running max for all
    prev_max = np.maximum.accumulate(shifted)
    prev_max = np.concatenate(([np.iinfo(np.int64).min], prev_max[:-1]))
    jump = ~first & (shifted < prev_max)
    seen = np.cumsum(jump)
    after = seen - (seen - jump)[first][grp] > 0  # at or after the stream's first jump back
    has_jump = np.bincount(grp, weights=jump)[grp] > 0
    ts[o] = np.where(has_jump & after, ts_alt[o], ts[o])
    unresolved[o] = ~has_jump
    return ts, unresolved


def clean_sorted(
    stream: np.ndarray,
    ts: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    state: np.ndarray | None,
    rules: CleaningRules,
    unresolved: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Verdicts for points sorted by (stream, ts, row_id, point_idx).

    stream: (n,) group key (any comparable dtype); ts: (n,) int64 Unix s; lon, lat: (n,) float64 (NaN = null);
    state: (n,) object (str or None) or None. Returns (n,) arrays: reason (int8 code, 0 = kept), seg
    (int64 piece id, -1 where dropped before segmenting), chunk (int32 window in the piece), step_m
    (float64 metres from the previous fix of the window; 0 at its first)."""
    n = len(ts)
    ts = ts.astype(np.int64, copy=False)
    reason = np.zeros(n, np.int8)
    seg_out = np.full(n, -1, np.int64)
    chunk_out = np.full(n, -1, np.int32)
    step_out = np.zeros(n, np.float64)
    if n == 0:
        return {"reason": reason, "seg": seg_out, "chunk": chunk_out, "step_m": step_out}

    def flag(codes, mask, name):
        codes[(codes == KEPT) & mask] = CODE[name]

    # 0 (point logs with local times) an ambiguous DST hour the fix order could not resolve; 1-4 on all points
    if unresolved is not None:
        flag(reason, unresolved, "ambiguous_local_time")
    first = starts(stream)
    with np.errstate(invalid="ignore"):
        valid = (
            np.isfinite(lon)
            & np.isfinite(lat)
            & (np.abs(lon) <= 180)
            & (np.abs(lat) <= 90)
            & ~((lon == 0) & (lat == 0))
        )
    flag(reason, ~valid, "invalid_coordinate")
    same_ts = ~first & (prev(ts, first, 0) == ts)
    same_pos = (prev(lon, first) == lon) & (prev(lat, first) == lat)
    flag(reason, same_ts & same_pos, "duplicate_fix")
    flag(reason, same_ts, "duplicate_timestamp")
    with np.errstate(invalid="ignore"):
        outside = ~((lon >= rules.min_lon) & (lon <= rules.max_lon) & (lat >= rules.min_lat) & (lat <= rules.max_lat))
    brk = prev_where(outside, reason == KEPT, first, False).astype(bool)
    flag(reason, outside, "outside_bbox")
    if rules.trip_state_value is not None and state is not None:
        has_state = np.array([s is not None for s in state], bool)
        code = np.where(has_state, np.unique(np.where(has_state, state, ""), return_inverse=True)[1], -1)
        before = prev_where(code, (reason == KEPT) & has_state, first, -1)
        brk |= (before >= 0) & has_state & (before != code)
        on_trip = np.array([s == rules.trip_state_value for s in state], bool)
        flag(reason, ~on_trip, "off_trip")
    live = np.flatnonzero(reason == KEPT)  # indices into the batch of the points still kept
    brk = brk[live]

    # 5. speed spikes among the kept fixes
    vmax = rules.max_speed_kmh / 3.6
    s, t, x, y = stream[live], ts[live].astype(np.float64), lon[live], lat[live]
    first = starts(s)
    px, py, nx, ny = prev(x, first), prev(y, first), nxt(x, first), nxt(y, first)
    dt_in, dt_out = t - prev(t, first), nxt(t, first) - t
    with np.errstate(invalid="ignore", divide="ignore"):
        spike = (
            (haversine_m(px, py, x, y) / dt_in > vmax)
            & (haversine_m(x, y, nx, ny) / dt_out > vmax)
            & (haversine_m(px, py, nx, ny) / (dt_in + dt_out) <= vmax)
        )
    reason[live[spike]] = CODE["speed_spike"]
    keep = ~spike
    live, brk = live[keep], brk[keep]

    # 6. stays, then segments (on the points that still hold the stay fixes)
    s, t, x, y = stream[live], ts[live], lon[live], lat[live]
    first = starts(s)
    dt = (t - prev(t, first, 0)).astype(np.float64)
    d_in = haversine_m(prev(x, first), prev(y, first), x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        moving = ~(d_in / dt * 3.6 < rules.stay_max_speed_kmh) | first  # the first fix counts as moving
    run = np.cumsum(moving)  # a stream's first fix is moving, so a run never crosses streams
    rs = np.flatnonzero(starts(run))
    sizes = np.diff(np.append(rs, len(run)))
    span = haversine_m(
        np.minimum.reduceat(x, rs), np.minimum.reduceat(y, rs), np.maximum.reduceat(x, rs), np.maximum.reduceat(y, rs)
    )
    run_s = np.maximum.reduceat(t, rs) - np.minimum.reduceat(t, rs)
    stay = ~moving & np.repeat((run_s >= rules.stay_split_s) & (span <= rules.stay_radius_m), sizes)
    brk = brk | prev(stay, first, False).astype(bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        jump = ~first & ((dt > rules.gap_split_s) | (d_in / dt > vmax))
    seg = np.cumsum(first | brk | jump)  # a new stream always starts a segment
    reason[live[stay]] = CODE["stay"]
    keep = ~stay
    live, seg = live[keep], seg[keep]

    # 7. resample: per tick from the segment's first fix, the nearest fix (then the earliest)
    t = ts[live]
    ss = starts(seg)
    t0 = np.repeat(t[ss], np.diff(np.append(np.flatnonzero(ss), len(t))))
    tick = np.floor((t - t0) / rules.interval_s + 0.5).astype(np.int64)  # round half up, like Spark's round()
    off = np.abs(t - (t0 + tick * rules.interval_s))
    out = np.zeros(len(t), bool)
    if len(t) and np.any(~ss & (tick == prev(tick, ss, -1))):
        o = np.lexsort((np.arange(len(t)), off, tick, seg))  # arange: the (ts, row_id, point_idx) order
        out[o[~(starts(seg[o]) | starts(tick[o]))]] = True
    reason[live[out]] = CODE["resampled_out"]
    keep = ~out
    live, seg, tick = live[keep], seg[keep], tick[keep]

    # 8. a missing tick starts a new piece; long pieces become windows; short and slow windows go
    ss = starts(seg)
    piece = np.cumsum(ss | (tick - prev(tick, ss, 0) > 1))
    piece_first = starts(piece)
    pos = position_in_group(piece_first)
    codes = np.zeros(len(live), np.int8)
    if rules.long_trips == "drop":
        flag(codes, group_sizes(piece_first) > rules.max_points, "too_long")
        chunk_first = piece_first
    else:
        chunk_first = piece_first | (pos % rules.max_points == 0)
    flag(codes, group_sizes(chunk_first) < rules.min_points, "short_trajectory")
    x, y, t = lon[live], lat[live], ts[live]
    step = np.nan_to_num(haversine_m(prev(x, chunk_first), prev(y, chunk_first), x, y), nan=0.0)
    if rules.min_vehicle_speed_kmh > 0 and len(live):
        cs = np.flatnonzero(chunk_first)
        sizes = np.diff(np.append(cs, len(live)))
        length = np.add.reduceat(step, cs)
        duration = np.maximum.reduceat(t, cs) - np.minimum.reduceat(t, cs)
        slow = length / np.maximum(duration, 1) * 3.6 < rules.min_vehicle_speed_kmh
        flag(codes, np.repeat(slow, sizes), "not_vehicle")
    reason[live] = codes
    seg_out[live] = piece
    chunk_out[live] = pos // rules.max_points if rules.long_trips != "drop" else 0
    step_out[live] = step
    return {"reason": reason, "seg": seg_out, "chunk": chunk_out, "step_m": step_out}


# ---- Arrow and Spark ---------------------------------------------------------------------------------


def clean_table(table: pa.Table, rules: CleaningRules) -> pa.Table:
    """One batch of whole streams (INPUT_COLUMNS, any order; `ts_alt` optional) -> OUTPUT_DDL rows, one
    per input point."""
    unresolved = None
    if "ts_alt" in table.column_names and table.column("ts_alt").null_count < table.num_rows:
        alt = table.column("ts_alt")
        streams = (
            pc.dictionary_encode(table.column("stream_id")).combine_chunks().indices.to_numpy(zero_copy_only=False)
        )
        ts, unresolved = resolve_ambiguous_times(
            streams,
            table.column("row_id").to_numpy(),
            table.column("ts").to_numpy(),
            pc.fill_null(alt, 0).to_numpy(),
            pc.is_valid(alt).to_numpy(zero_copy_only=False),
        )
        table = table.set_column(table.column_names.index("ts"), "ts", pa.array(ts))
        table = table.append_column("_unresolved", pa.array(unresolved))
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("stream_id", "ascending"),
            ("ts", "ascending"),
            ("row_id", "ascending"),
            ("point_idx", "ascending"),
        ],
    )
    table = table.take(order)
    stream = pc.dictionary_encode(table.column("stream_id")).combine_chunks().indices.to_numpy(zero_copy_only=False)
    # dictionary codes are in first-seen order, and the table is sorted by stream: equal ids are adjacent

    def floats(name):
        return table.column(name).to_numpy().astype(np.float64)  # nulls become NaN

    state = table.column("trip_state").to_numpy(zero_copy_only=False) if rules.trip_state_value is not None else None
    if unresolved is not None:
        unresolved = table.column("_unresolved").to_numpy(zero_copy_only=False)
    v = clean_sorted(stream, table.column("ts").to_numpy(), floats("lon"), floats("lat"), state, rules, unresolved)
    codes = v["reason"].astype(np.int32)
    reason = pa.DictionaryArray.from_arrays(pa.array(codes - 1, mask=codes == KEPT), pa.array(REASONS[1:]))
    reason = reason.cast(pa.string())  # null = kept
    out = table.select(list(INPUT_COLUMNS))
    return (
        out.append_column("reason", reason)
        .append_column("seg", pa.array(v["seg"]))
        .append_column("chunk", pa.array(v["chunk"]))
        .append_column("step_m", pa.array(v["step_m"]))
    )


def whole_streams(batches, fn):
    """Arrow batches in which each stream's rows are contiguous -> fn applied to runs of whole streams.

    A stream cut by a batch boundary is carried over to the next batch, so `fn` always sees every row of
    a stream at once. Shapes: batches of any size in, tables of whole streams to `fn`."""
    carry: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        table = table if carry is None else pa.concat_tables([carry, table])
        streams = table.column("stream_id")
        cut = table.num_rows - pc.sum(pc.equal(streams, streams[-1])).as_py()  # the last stream may go on
        if cut > 0:
            yield from fn(table.slice(0, cut)).to_batches()
        carry = table.slice(cut)
    if carry is not None and carry.num_rows:
        yield from fn(carry).to_batches()


def _map_whole_streams(points, fn, ddl: str, *, buckets: int, streams_contiguous: bool, then=None):
    """Spark: fn over whole streams in Arrow batches (mapInArrow), with no shuffle when it can be avoided.

    Porto rows explode into their points in place, so each stream (a row) is already contiguous in its
    partition (`streams_contiguous=True`). Point logs interleave vehicles: they are first hash-partitioned
    into `buckets` by stream and sorted, one shuffle. Either way a stream is never split, so every rule
    sees all its fixes. `then`: a function of fn's output batches, run in the same worker."""
    points = points.select(*INPUT_COLUMNS, *(["ts_alt"] if "ts_alt" in points.columns else []))
    if not streams_contiguous:
        points = points.repartition(buckets, "stream_id").sortWithinPartitions("stream_id")
    if then is None:
        return points.mapInArrow(lambda batches: whole_streams(batches, fn), ddl)
    return points.mapInArrow(lambda batches: then(whole_streams(batches, fn)), ddl)


def clean_points_spark(points, city: CityConfig, *, buckets: int, streams_contiguous: bool = False):
    """Spark: points -> OUTPUT_DDL, every point with its verdict (for inspection and tests)."""
    rules = CleaningRules.for_city(city)
    return _map_whole_streams(
        points, lambda t: clean_table(t, rules), OUTPUT_DDL, buckets=buckets, streams_contiguous=streams_contiguous
    )


def trip_pieces_table(kept: pa.Table) -> pa.Table:
    """Kept points of whole streams, sorted by (stream, ts) as clean_table leaves them -> one row per
    trajectory (stream, seg, chunk) with its fixes as arrays in time order."""
    # A piece's id (seg) is unique in the batch (a new stream starts a new one): no text key is needed.
    seg, chunk = kept.column("seg").to_numpy(), kept.column("chunk").to_numpy()
    first = np.ones(len(seg), bool)
    first[1:] = (seg[1:] != seg[:-1]) | (chunk[1:] != chunk[:-1])
    s = np.flatnonzero(first)
    offsets = pa.array(np.append(s, len(seg)).astype(np.int32))
    step = kept.column("step_m").to_numpy()
    return pa.table(
        {
            "stream_id": kept.column("stream_id").take(s),
            "seg": kept.column("seg").take(s),
            "chunk": kept.column("chunk").take(s),
            "vehicle_id": kept.column("vehicle_id").take(s),
            "source_file": kept.column("source_file").take(s),
            "n_points": pa.array(np.diff(offsets.to_numpy()).astype(np.int32)),
            "length_m": pa.array(np.add.reduceat(step, s) if len(s) else np.zeros(0)),
            "ts": pa.ListArray.from_arrays(offsets, kept.column("ts").combine_chunks()),
            "lon": pa.ListArray.from_arrays(offsets, kept.column("lon").combine_chunks()),
            "lat": pa.ListArray.from_arrays(offsets, kept.column("lat").combine_chunks()),
        }
    )


# One pass, two kinds of rows: the trajectories and the dropped points of a batch of whole streams. With a
# silver sink (jobs/clean_trips.trips_to_parts) a trajectory's arrays are written to silver in the worker
# and its row comes back slim, with its place in that file (part_*); one `part` row names each file.
CLEANED_DDL = (
    "kind string, source_file string, row_id long, point_idx int, reason string, ts long, lon double, "
    "lat double, stream_id string, seg long, chunk int, vehicle_id string, n_points int, length_m double, "
    "fix_ts array<long>, fix_lon array<double>, fix_lat array<double>, "
    "part_path string, part_row long, part_bytes long, part_rows long"
)
TRIP, DROP = "trip", "drop"


def trips_and_drops_table(table: pa.Table, rules: CleaningRules) -> pa.Table:
    """Points of whole streams -> CLEANED_DDL rows: one `trip` row per trajectory, one `drop` row per
    dropped point (with its reason). Kept points appear only inside their trajectory's arrays."""
    cleaned = clean_table(table, rules)
    is_kept = pc.is_null(cleaned.column("reason"))
    pieces = trip_pieces_table(cleaned.filter(is_kept))
    drops = cleaned.filter(pc.invert(is_kept))
    trip_part = {
        **{n: pieces.column(n) for n in ("source_file", "stream_id", "seg", "chunk", "vehicle_id")},
        **{n: pieces.column(n) for n in ("n_points", "length_m")},
        "fix_ts": pieces.column("ts"),
        "fix_lon": pieces.column("lon"),
        "fix_lat": pieces.column("lat"),
    }
    names = ("source_file", "row_id", "point_idx", "reason", "ts", "lon", "lat", "stream_id", "vehicle_id")
    return _cleaned_rows(trip_part, pieces.num_rows, {n: drops.column(n) for n in names}, drops.num_rows)


def _cleaned_rows(trip_part: dict, n_t: int, drop_part: dict, n_d: int) -> pa.Table:
    """CLEANED_DDL rows from the columns of the trips and of the drops (absent columns are null)."""
    schema = _cleaned_schema()
    parts = []
    for kind, part, n in ((TRIP, trip_part, n_t), (DROP, drop_part, n_d)):
        if n:
            parts.append(_conformed({**part, "kind": pa.array([kind] * n, pa.string())}, n, schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


# ---- Porto rows: a stream is a row, its points two arrays ------------------------------------------


def porto_trips_and_drops(rows: pa.Table, rules: CleaningRules, datum: str = "wgs84") -> pa.Table:
    """Accepted Porto rows (source_file, row_id, stream_id, vehicle_id, ts0, lons, lats) -> CLEANED_DDL
    rows, as trips_and_drops_table would give for their exploded points, without a row per point
    anywhere: each row is one stream whose fixes are PORTO_FIX_INTERVAL_S apart from ts0 (already in
    time order), so the points are numpy arrays indexed by row, and the texts of a trip or a dropped
    point are taken from its row. `datum`: the city's; its points are moved to WGS-84 first."""
    from transfertraj.jobs.parse_points import PORTO_FIX_INTERVAL_S

    lons, lats = rows.column("lons").combine_chunks(), rows.column("lats").combine_chunks()
    counts = pc.fill_null(pc.list_value_length(lons), 0).to_numpy().astype(np.int64)
    lon = pc.list_flatten(lons).to_numpy(zero_copy_only=False).astype(np.float64)
    lat = pc.list_flatten(lats).to_numpy(zero_copy_only=False).astype(np.float64)
    if datum != "wgs84":
        from transfertraj.features.datum import to_wgs84

        lon, lat = to_wgs84(lon, lat, datum)
    row = np.repeat(np.arange(rows.num_rows), counts)
    first_of_row = np.cumsum(counts) - counts
    point_idx = np.arange(len(row)) - np.repeat(first_of_row, counts)
    ts0 = np.trunc(rows.column("ts0").to_numpy(zero_copy_only=False)).astype(np.int64)  # as Spark's cast
    ts = ts0[row] + point_idx * PORTO_FIX_INTERVAL_S
    v = clean_sorted(row, ts, lon, lat, None, rules)
    kept = v["reason"] == KEPT
    k = np.flatnonzero(kept)
    seg, chunk = v["seg"][k], v["chunk"][k]
    first = np.ones(len(k), bool)
    first[1:] = (seg[1:] != seg[:-1]) | (chunk[1:] != chunk[:-1])  # a piece's id is unique in the batch
    s = np.flatnonzero(first)
    offsets = pa.array(np.append(s, len(k)).astype(np.int32))
    trip_row = pa.array(row[k[s]])
    text = {n: rows.column(n) for n in ("source_file", "stream_id", "vehicle_id", "row_id")}
    trip_part = {
        **{n: col.take(trip_row) for n, col in text.items()},  # row_id: the trip's row
        "seg": pa.array(seg[s]),
        "chunk": pa.array(chunk[s]),
        "n_points": pa.array(np.diff(np.append(s, len(k))).astype(np.int32)),
        "length_m": pa.array(np.add.reduceat(v["step_m"][k], s) if len(s) else np.zeros(0)),
        "fix_ts": pa.ListArray.from_arrays(offsets, pa.array(ts[k])),
        "fix_lon": pa.ListArray.from_arrays(offsets, pa.array(lon[k])),
        "fix_lat": pa.ListArray.from_arrays(offsets, pa.array(lat[k])),
    }
    d = np.flatnonzero(~kept)
    drop_row = pa.array(row[d])
    drop_part = {
        **{n: col.take(drop_row) for n, col in text.items()},
        "point_idx": pa.array(point_idx[d].astype(np.int32)),
        "reason": pa.array(np.asarray(REASONS, dtype=object)[v["reason"][d]], pa.string()),
        "ts": pa.array(ts[d]),
        "lon": pa.array(lon[d]),
        "lat": pa.array(lat[d]),
    }
    return _cleaned_rows(trip_part, len(s), drop_part, len(d))


PORTO_ROW_COLUMNS = ("source_file", "row_id", "stream_id", "vehicle_id", "ts0", "lons", "lats")
ROW = "row"  # checked_and_cleaned_porto: a row's own verdict, beside the trips and drops cleaned from it


def checked_and_cleaned_ddl() -> str:
    """The rows of checked_and_cleaned_porto: check_rows' columns (jobs/parse_points.ROW_CHECK_DDL), then
    CLEANED_DDL's that they lack (`kind` first of those)."""
    from transfertraj.jobs.parse_points import ROW_CHECK_DDL

    have = {f.strip().split(" ")[0] for f in ROW_CHECK_DDL.split(",")}
    extra = [f.strip() for f in CLEANED_DDL.split(",") if f.strip().split(" ")[0] not in have]
    return ", ".join([ROW_CHECK_DDL, *extra])


def checked_and_cleaned_porto(batches, rules: CleaningRules, datum: str = "wgs84", sink=None):
    """Arrow worker, after the row checks (parse_points.check_porto_rows' `then`): each checked row as
    itself (kind `row`, its lons and lats dropped: its points are counted in n_points) and the trips and
    dropped points (porto_trips_and_drops) of the rows that passed the checks of the row alone.

    Why here: before, the parsed points went back to the JVM as arrays on the checked rows, out again to a
    second worker to be cleaned, and back as trajectories. A row that a rule over other rows rejects
    later (a duplicate, a conflicting version of its trip) has its trips and drops removed by row_id.
    `sink` (a jobs.clean_trips.SilverSink): the trips are written to silver here (trips_to_parts)."""
    schema = _arrow_schema(checked_and_cleaned_ddl())
    if sink is not None:
        from transfertraj.jobs.clean_trips import trips_to_parts

        yield from trips_to_parts(checked_and_cleaned_porto(batches, rules, datum), sink, schema)
        return
    for batch in batches:
        if not batch.num_rows:
            continue
        t = pa.Table.from_batches([batch])
        ok = pc.and_(pc.is_null(t.column("_structure")), pc.is_null(t.column("_content")))
        cleaned = porto_trips_and_drops(t.filter(ok).select(list(PORTO_ROW_COLUMNS)), rules, datum)
        own = {n: t.column(n) for n in t.column_names if n not in ("lons", "lats")}
        own["kind"] = pa.array([ROW] * t.num_rows, pa.string())
        yield from _conformed(own, t.num_rows, schema).to_batches()
        if cleaned.num_rows:
            columns = {n: cleaned.column(n) for n in cleaned.column_names}
            yield from _conformed(columns, cleaned.num_rows, schema).to_batches()


def _conformed(columns: dict, n: int, schema: pa.Schema) -> pa.Table:
    """The columns in `schema`'s order and types; absent columns null."""
    return pa.table(
        {f.name: (columns[f.name] if f.name in columns else pa.nulls(n, f.type)).cast(f.type) for f in schema},
        schema=schema,
    )


def porto_cleaning(city: CityConfig, sink=None) -> tuple:
    """check_rows' (then, then_ddl) for a Porto delivery: rows checked and cleaned in one worker (and their
    trips written to silver there, with `sink`: jobs.clean_trips.SilverSink)."""
    return (
        functools.partial(checked_and_cleaned_porto, rules=CleaningRules.for_city(city), datum=city.datum, sink=sink),
        checked_and_cleaned_ddl(),
    )


def _cleaned_schema() -> pa.Schema:
    """CLEANED_DDL as Arrow types (the DDL's own parser needs a JVM; a test checks the two agree)."""
    return _arrow_schema(CLEANED_DDL)


_ARROW_TYPES = {
    "string": pa.string(),
    "long": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "array<long>": pa.list_(pa.int64()),
    "array<double>": pa.list_(pa.float64()),
}


def _arrow_schema(ddl: str) -> pa.Schema:
    """A flat DDL of _ARROW_TYPES as an Arrow schema."""
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in (f.strip().split(" ", 1) for f in ddl.split(","))])


def clean_trips_spark(points, city: CityConfig, *, buckets: int, streams_contiguous: bool = False, sink=None):
    """Spark: points -> CLEANED_DDL rows (trajectories and dropped points) in one pass over whole streams.
    `sink` (a jobs.clean_trips.SilverSink): the trajectories are written to silver by the worker and come
    back slim (jobs/clean_trips.trips_to_parts)."""
    rules = CleaningRules.for_city(city)
    fn = lambda t: trips_and_drops_table(t, rules)  # noqa: E731
    if sink is None:
        return _map_whole_streams(points, fn, CLEANED_DDL, buckets=buckets, streams_contiguous=streams_contiguous)
    from transfertraj.jobs.clean_trips import trips_to_parts

    schema = _cleaned_schema()
    return _map_whole_streams(
        points,
        fn,
        CLEANED_DDL,
        buckets=buckets,
        streams_contiguous=streams_contiguous,
        then=lambda batches: trips_to_parts(batches, sink, schema),
    )
