"""GPS points -> clean trajectories. Each cleaning rule is a pure DataFrame -> DataFrame transform.

    kept, dropped = split_dropped(points.transform(flag_invalid_coordinates))

Every rule only *flags*: it sets `reason` on the points it drops (null = kept) and may set a break
column (`brk_*`) on the next kept point where the trip must be split. `clean_points` chains the rules,
moves flagged points to the quarantine after each one, and builds one row per trajectory.

Ordering within a stream is (ts, row_id, point_idx); every window partitions by `stream_id` first,
so Spark shuffles the points once and sorts within partitions after that.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from jobs.schemas import DETAIL, POINT_IDX, REASON, ROW_ID, SOURCE_FILE
from transfertraj.city_config import BBox

EARTH_RADIUS_M = 6_371_008.8
BREAKS = ("brk_bbox", "brk_state", "brk_stay")



class _Stream:
    """The stream window, built lazily: a Window needs an active Spark context."""

    def __get__(self, obj, owner=None):
        return Window.partitionBy("stream_id").orderBy("ts", ROW_ID, POINT_IDX)


class _W:
    stream = _Stream()


def haversine_m(lon1: Column, lat1: Column, lon2: Column, lat2: Column) -> Column:
    """Great-circle distance in metres between two WGS-84 points (built-in functions only)."""
    dlat = F.radians(lat2 - lat1)
    dlon = F.radians(lon2 - lon1)
    a = F.sin(dlat / 2) ** 2 + F.cos(F.radians(lat1)) * F.cos(F.radians(lat2)) * F.sin(dlon / 2) ** 2
    root = F.sqrt(a)
    # F.least would skip a null (a missing neighbour) and return 1: clamp with when() instead.
    return 2 * EARTH_RADIUS_M * F.asin(F.when(root > 1.0, F.lit(1.0)).otherwise(root))


def _flag(df: DataFrame, cond: Column, reason: str) -> DataFrame:
    return df.withColumn(REASON, F.when(F.col(REASON).isNull() & cond, F.lit(reason)).otherwise(F.col(REASON)))


def start_flags(points: DataFrame) -> DataFrame:
    """Add the columns the rules use: reason (null) and the break flags (false)."""
    out = points.withColumn(REASON, F.lit(None).cast("string"))
    for brk in BREAKS:
        out = out.withColumn(brk, F.lit(False))
    return out


def split_dropped(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(kept points without reason, dropped points with reason)."""
    return df.where(F.col(REASON).isNull()), df.where(F.col(REASON).isNotNull())


def flag_invalid_coordinates(df: DataFrame) -> DataFrame:
    lon, lat = F.col("lon"), F.col("lat")
    valid = (
        lon.isNotNull() & lat.isNotNull() & ~F.isnan(lon) & ~F.isnan(lat)
        & (F.abs(lon) <= 180) & (F.abs(lat) <= 90) & ~((lon == 0) & (lat == 0))
    )
    return _flag(df, ~valid, "invalid_coordinate")


def flag_duplicate_fixes(df: DataFrame) -> DataFrame:
    """A second fix of the same stream at the same second: an exact copy, or a conflicting position."""
    same_ts = F.lag("ts").over(_W.stream) == F.col("ts")
    same_pos = (F.lag("lon").over(_W.stream) == F.col("lon")) & (F.lag("lat").over(_W.stream) == F.col("lat"))
    df = _flag(df, same_ts & same_pos, "duplicate_fix")
    return _flag(df, same_ts, "duplicate_timestamp")


def _previous_kept(col: Column) -> Column:
    """The value of `col` at the previous point not already dropped by an earlier rule."""
    frame = _W.stream.rowsBetween(Window.unboundedPreceding, -1)
    return F.last(F.when(F.col(REASON).isNull(), col), ignorenulls=True).over(frame)


def flag_outside_bbox(df: DataFrame, *, bbox: BBox) -> DataFrame:
    """Drop fixes outside the city box; the next fix inside starts a new trip."""
    inside = F.col("lon").between(bbox.min_lon, bbox.max_lon) & F.col("lat").between(bbox.min_lat, bbox.max_lat)
    df = df.withColumn("_outside", ~inside)
    df = df.withColumn("brk_bbox", F.col("brk_bbox") | F.coalesce(_previous_kept(F.col("_outside")), F.lit(False)))
    return _flag(df, F.col("_outside"), "outside_bbox").drop("_outside")


def flag_off_trip(df: DataFrame, *, trip_state_value: str | None) -> DataFrame:
    """With a trip-state column (SF 'occupied'), trips are the runs of one state: drop the other state
    and split where the state changes (two fares back to back are two trips)."""
    if trip_state_value is None:
        return df
    changed = F.coalesce(_previous_kept(F.col("trip_state")) != F.col("trip_state"), F.lit(False))
    df = df.withColumn("brk_state", F.col("brk_state") | changed)
    return _flag(df, F.coalesce(F.col("trip_state") != F.lit(trip_state_value), F.lit(True)), "off_trip")


def _with_prev_next(df: DataFrame) -> DataFrame:
    return (
        df.withColumn("_dt_in", F.col("ts") - F.lag("ts").over(_W.stream))
        .withColumn("_d_in", haversine_m(F.lag("lon").over(_W.stream), F.lag("lat").over(_W.stream), F.col("lon"), F.col("lat")))
        .withColumn("_dt_out", F.lead("ts").over(_W.stream) - F.col("ts"))
        .withColumn("_d_out", haversine_m(F.col("lon"), F.col("lat"), F.lead("lon").over(_W.stream), F.lead("lat").over(_W.stream)))
        .withColumn(
            "_d_skip",
            haversine_m(F.lag("lon").over(_W.stream), F.lag("lat").over(_W.stream), F.lead("lon").over(_W.stream), F.lead("lat").over(_W.stream)),
        )
    )


def flag_speed_spikes(df: DataFrame, *, max_speed_kmh: float) -> DataFrame:
    """A single fix that is reached and left faster than max speed, while its neighbours are
    consistent with each other, is a GPS glitch: drop it. (Real jumps split the trip later.)"""
    vmax = max_speed_kmh / 3.6
    df = _with_prev_next(df)
    spike = (
        (F.col("_d_in") / F.col("_dt_in") > vmax)
        & (F.col("_d_out") / F.col("_dt_out") > vmax)
        & (F.col("_d_skip") / (F.col("_dt_in") + F.col("_dt_out")) <= vmax)
    )
    df = _flag(df, F.coalesce(spike, F.lit(False)), "speed_spike")
    return df.drop("_dt_in", "_d_in", "_dt_out", "_d_out", "_d_skip")


def flag_stays(df: DataFrame, *, stay_max_speed_kmh: float, stay_radius_m: float, stay_split_s: float) -> DataFrame:
    """A stay (parked, waiting for a fare): a run of fixes each reached slower than stay_max_speed_kmh,
    lasting stay_split_s or more and spanning at most stay_radius_m. Drop its fixes after the arrival
    and split the trip after it. Speed, not distance between fixes, decides "stationary", so 1 s
    sampling (GeoLife) and 60 s sampling (SF) are judged alike."""
    w = _W.stream
    dt = F.col("ts") - F.lag("ts").over(w)
    d_in = haversine_m(F.lag("lon").over(w), F.lag("lat").over(w), F.col("lon"), F.col("lat"))
    df = df.withColumn("_moving", F.coalesce(d_in / dt * 3.6 >= stay_max_speed_kmh, F.lit(True)))
    df = df.withColumn("_run", F.sum(F.col("_moving").cast("int")).over(w.rowsBetween(Window.unboundedPreceding, 0)))
    run = Window.partitionBy("stream_id", "_run")
    span = haversine_m(F.min("lon").over(run), F.min("lat").over(run), F.max("lon").over(run), F.max("lat").over(run))
    df = df.withColumn("_run_s", F.max("ts").over(run) - F.min("ts").over(run)).withColumn("_span", span)
    df = df.withColumn("_stay", ~F.col("_moving") & (F.col("_run_s") >= stay_split_s) & (F.col("_span") <= stay_radius_m))
    df = df.withColumn("brk_stay", F.col("brk_stay") | F.coalesce(F.lag("_stay").over(w), F.lit(False)))
    return _flag(df, F.col("_stay"), "stay").drop("_moving", "_run", "_run_s", "_span", "_stay")


def assign_segments(df: DataFrame, *, gap_split_s: float, max_speed_kmh: float) -> DataFrame:
    """Number the pieces of each stream: a new piece starts after a break flag, a time gap longer than
    gap_split_s, or a jump faster than max speed."""
    dt = F.col("ts") - F.lag("ts").over(_W.stream)
    d = haversine_m(F.lag("lon").over(_W.stream), F.lag("lat").over(_W.stream), F.col("lon"), F.col("lat"))
    brk = F.col("brk_bbox") | F.col("brk_state") | F.col("brk_stay")
    brk = brk | F.coalesce((dt > gap_split_s) | (d / dt > max_speed_kmh / 3.6), F.lit(False))
    df = df.withColumn("_brk", brk.cast("int"))
    return df.withColumn("seg", F.sum("_brk").over(_W.stream.rowsBetween(Window.unboundedPreceding, 0))).drop("_brk")


def resample(df: DataFrame, *, interval_s: float) -> DataFrame:
    """Keep, for each tick of the interval from a segment's first fix, the nearest real fix within half
    an interval; never interpolate. A tick without a fix splits the segment (column `sub`)."""
    seg = Window.partitionBy("stream_id", "seg")
    df = df.withColumn("_t0", F.min("ts").over(seg))
    df = df.withColumn("_tick", F.round((F.col("ts") - F.col("_t0")) / F.lit(interval_s)).cast("long"))
    off = F.abs(F.col("ts") - (F.col("_t0") + F.col("_tick") * F.lit(interval_s)))
    rank = F.row_number().over(Window.partitionBy("stream_id", "seg", "_tick").orderBy(off, "ts", ROW_ID, POINT_IDX))
    df = _flag(df, rank > 1, "resampled_out")
    return df.drop("_t0").withColumnRenamed("_tick", "tick")


def assign_subsegments(kept: DataFrame) -> DataFrame:
    """After resampling (on kept fixes only): a missing tick starts a new sub-segment."""
    order = Window.partitionBy("stream_id", "seg").orderBy("tick")
    gap = F.coalesce(F.col("tick") - F.lag("tick").over(order) > 1, F.lit(False)).cast("int")
    return kept.withColumn("_gap", gap).withColumn(
        "sub", F.sum("_gap").over(order.rowsBetween(Window.unboundedPreceding, 0))
    ).drop("_gap")


def flag_trajectory_length(
    kept: DataFrame, *, min_points: int, max_points: int, long_trips: str, min_vehicle_speed_kmh: float
) -> DataFrame:
    """Cut pieces longer than max_points into windows (or drop them), drop windows shorter than
    min_points, and windows slower on average than min_vehicle_speed_kmh (walks, stays)."""
    piece = Window.partitionBy("stream_id", "seg", "sub")
    order = piece.orderBy("ts")
    df = kept.withColumn("_pos", F.row_number().over(order) - 1).withColumn("_n", F.count(F.lit(1)).over(piece))
    if long_trips == "drop":
        df = _flag(df, F.col("_n") > max_points, "too_long")
        df = df.withColumn("chunk", F.lit(0))
    else:
        df = df.withColumn("chunk", F.floor(F.col("_pos") / max_points).cast("int"))
    chunk = Window.partitionBy("stream_id", "seg", "sub", "chunk")
    corder = chunk.orderBy("ts")
    df = df.withColumn("_cn", F.count(F.lit(1)).over(chunk))
    df = _flag(df, F.col("_cn") < min_points, "short_trajectory")
    step = F.coalesce(haversine_m(F.lag("lon").over(corder), F.lag("lat").over(corder), F.col("lon"), F.col("lat")), F.lit(0.0))
    df = df.withColumn("step_m", step)
    if min_vehicle_speed_kmh > 0:
        length = F.sum("step_m").over(chunk)
        duration = F.max("ts").over(chunk) - F.min("ts").over(chunk)
        slow = (length / F.greatest(duration, F.lit(1)) * 3.6) < min_vehicle_speed_kmh
        df = _flag(df, slow, "not_vehicle")
    return df.drop("_pos", "_n", "_cn")


def build_trajectories(kept: DataFrame, *, city: str, date: str, vehicle_key: Column) -> DataFrame:
    """One row per (stream, seg, sub, chunk): arrays ordered by time, a stable trip id, a hashed vehicle."""
    fixes = F.array_sort(F.collect_list(F.struct("ts", "lon", "lat", "step_m")))
    trips = kept.groupBy("stream_id", "seg", "sub", "chunk").agg(
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
