"""Each cleaning rule on a handful of inline points (real Spark, no storage)."""

import pytest
from pyspark.sql import functions as F

from jobs import clean_trips as ct
from transfertraj.city_config import BBox

COLS = "source_file string, row_id long, point_idx int, stream_id string, vehicle_id string, ts long, lon double, lat double, trip_state string"
T0 = 1_372_636_800
BOX = BBox(min_lon=-8.70, min_lat=41.12, max_lon=-8.52, max_lat=41.197)


def points(spark, rows):
    """rows: (stream, ts, lon, lat[, state]) -> the parser's point schema, flags started."""
    full = [("f", i, 0, r[0], "veh-" + r[0], r[1], r[2], r[3], r[4] if len(r) > 4 else None) for i, r in enumerate(rows)]
    return ct.start_flags(spark.createDataFrame(full, COLS))


def reasons(df):
    return [r[ct.REASON] for r in df.orderBy("stream_id", "ts", "row_id").select(ct.REASON).collect()]


def walk(n, *, stream="a", dt=15, step_deg=0.0005, t0=T0, lon0=-8.61, lat0=41.15):
    """A vehicle driving east: 0.0005 degrees is ~42 m per step (10 km/h at 15 s)."""
    return [(stream, t0 + dt * i, lon0 + step_deg * i, lat0) for i in range(n)]


def test_haversine_known_distance_and_null_neighbour(spark):
    row = spark.range(1).select(
        ct.haversine_m(F.lit(-8.61), F.lit(41.0), F.lit(-8.61), F.lit(42.0)).alias("one_degree"),
        ct.haversine_m(F.lit(None).cast("double"), F.lit(None).cast("double"), F.lit(-8.61), F.lit(41.0)).alias("none"),
    ).first()
    assert row.one_degree == pytest.approx(111_195, rel=1e-3)
    assert row.none is None


def test_invalid_coordinates(spark):
    df = points(spark, [("a", T0, float("nan"), 41.1), ("a", T0 + 15, -8.6, 91.0), ("a", T0 + 30, 0.0, 0.0),
                        ("a", T0 + 45, -8.6, 41.15)])
    assert reasons(df.transform(ct.flag_invalid_coordinates)) == ["invalid_coordinate"] * 3 + [None]


def test_duplicates_keep_the_first_fix(spark):
    df = points(spark, [("a", T0, -8.6, 41.15), ("a", T0, -8.6, 41.15), ("a", T0, -8.5, 41.0), ("a", T0 + 15, -8.6, 41.15)])
    assert reasons(df.transform(ct.flag_duplicate_fixes)) == [None, "duplicate_fix", "duplicate_timestamp", None]


def test_outside_bbox_drops_and_splits_where_it_leaves(spark):
    rows = walk(3) + [("a", T0 + 45, -8.80, 41.15)] + [("a", T0 + 60 + 15 * i, -8.60, 41.15) for i in range(2)]
    out = points(spark, rows).transform(ct.flag_outside_bbox, bbox=BOX).orderBy("ts").collect()
    assert [r.reason for r in out] == [None, None, None, "outside_bbox", None, None]
    assert [r.brk_bbox for r in out] == [False, False, False, False, True, False]


def test_off_trip_keeps_runs_of_the_trip_state(spark):
    rows = [("a", T0 + 60 * i, -8.6 + 0.001 * i, 41.15, s) for i, s in enumerate("0011011")]
    out = points(spark, rows).transform(ct.flag_off_trip, trip_state_value="1").orderBy("ts").collect()
    assert [r.reason for r in out] == ["off_trip", "off_trip", None, None, "off_trip", None, None]
    assert [r.brk_state for r in out][5] is True  # a second fare is a second trip


def test_off_trip_is_a_no_op_without_a_state_column(spark):
    df = points(spark, walk(3))
    assert reasons(df.transform(ct.flag_off_trip, trip_state_value=None)) == [None] * 3


def test_single_spike_is_dropped_but_a_real_jump_is_not(spark):
    spike = walk(5)
    spike[2] = ("a", spike[2][1], -8.55, 41.19)  # 6 km away for one fix, 15 s each way
    assert reasons(points(spark, spike).transform(ct.flag_speed_spikes, max_speed_kmh=150)) == [None, None, "speed_spike", None, None]
    jump = walk(3) + [("a", T0 + 45 + 15 * i, -8.55 + 0.0005 * i, 41.19) for i in range(3)]
    assert set(reasons(points(spark, jump).transform(ct.flag_speed_spikes, max_speed_kmh=150))) == {None}


def test_long_stay_is_dropped_and_splits_short_stop_is_kept(spark):
    drive = walk(4)
    stay = [("a", T0 + 60 + 15 * i, drive[-1][2] + 0.00001 * (i % 2), 41.15) for i in range(1, 30)]  # 7 min parked
    after = walk(4, t0=T0 + 60 + 15 * 30, lon0=drive[-1][2] + 0.001)
    out = (
        points(spark, drive + stay + after)
        .transform(ct.flag_stays, stay_max_speed_kmh=3, stay_radius_m=100, stay_split_s=300)
        .orderBy("ts")
        .collect()
    )
    assert [r.reason for r in out].count("stay") == 29
    assert out[4 + 29].brk_stay is True  # the first fix after the stay starts a new trip
    short = drive + [("a", T0 + 60 + 15 * i, drive[-1][2], 41.15) for i in range(1, 5)]  # one minute
    kept = points(spark, short).transform(ct.flag_stays, stay_max_speed_kmh=3, stay_radius_m=100, stay_split_s=300)
    assert set(reasons(kept)) == {None}


def test_segments_split_at_gaps_and_jumps(spark):
    rows = walk(3) + walk(3, t0=T0 + 1000, lon0=-8.60) + [("a", T0 + 1045, -8.55, 41.15)]
    out = (
        points(spark, rows)
        .transform(ct.assign_segments, gap_split_s=120, max_speed_kmh=150)
        .orderBy("ts")
        .select("seg")
        .collect()
    )
    assert [r.seg for r in out] == [0, 0, 0, 1, 1, 1, 2]


def test_resample_takes_the_nearest_real_fix_and_a_missing_tick_splits(spark):
    # 5 s fixes for 60 s, a 40 s hole, then 5 s fixes again; interval 15 s.
    ts = [0, 5, 10, 14, 20, 25, 30, 35, 45, 85, 90, 95, 100, 105]
    rows = [("a", T0 + t, -8.61 + 0.0001 * t, 41.15) for t in ts]
    df = points(spark, rows).transform(ct.assign_segments, gap_split_s=120, max_speed_kmh=150)
    df = df.transform(ct.resample, interval_s=15)
    kept, dropped = ct.split_dropped(df)
    got = [r.ts - T0 for r in kept.orderBy("ts").collect()]
    assert got == [0, 14, 30, 45, 90, 105]  # real fixes nearest to ticks 0, 15, 30, 45, 90, 105
    assert dropped.count() == len(ts) - len(got)
    subs = [r.sub for r in ct.assign_subsegments(kept).orderBy("ts").collect()]
    assert subs == [0, 0, 0, 0, 1, 1]  # ticks 4 and 5 (60 s, 75 s) have no fix within 7.5 s


def test_resample_never_invents_points(spark):
    rows = [("a", T0 + t, -8.61 + 0.0001 * t, 41.15) for t in (0, 15, 30)]
    df = points(spark, rows).transform(ct.assign_segments, gap_split_s=120, max_speed_kmh=150)
    kept = df.transform(ct.resample, interval_s=5).where(F.col(ct.REASON).isNull())
    assert kept.count() == 3


def _pieces(df):
    return (
        df.transform(ct.assign_segments, gap_split_s=120, max_speed_kmh=150)
        .transform(ct.resample, interval_s=15)
        .where(F.col(ct.REASON).isNull())
        .transform(ct.assign_subsegments)
    )


def test_long_pieces_are_windowed_and_short_ones_dropped(spark):
    df = _pieces(points(spark, walk(12) + walk(3, stream="b")))
    out = df.transform(ct.flag_trajectory_length, min_points=3, max_points=5, long_trips="window", min_vehicle_speed_kmh=0)
    rows = out.orderBy("stream_id", "ts").collect()
    assert [r.chunk for r in rows if r.stream_id == "a"] == [0] * 5 + [1] * 5 + [2] * 2
    assert [r.reason for r in rows if r.stream_id == "a"] == [None] * 10 + ["short_trajectory"] * 2
    assert [r.reason for r in rows if r.stream_id == "b"] == [None] * 3
    dropped = df.transform(ct.flag_trajectory_length, min_points=3, max_points=5, long_trips="drop", min_vehicle_speed_kmh=0)
    assert set(reasons(dropped.where("stream_id = 'a'"))) == {"too_long"}


def test_slow_pieces_are_not_vehicle_trips(spark):
    walker = [("w", T0 + 15 * i, -8.61 + 0.00005 * i, 41.15) for i in range(8)]  # ~4 m per 15 s ≈ 1 km/h
    df = _pieces(points(spark, walker + walk(8, step_deg=0.002)))  # ~40 km/h
    out = df.transform(ct.flag_trajectory_length, min_points=3, max_points=120, long_trips="window", min_vehicle_speed_kmh=15)
    by_stream = {r.stream_id: r.reason for r in out.collect()}
    assert by_stream == {"w": "not_vehicle", "a": None}


def test_trajectories_are_ordered_with_stable_ids_and_hashed_vehicles(spark):
    rows = list(reversed(walk(6)))
    df = _pieces(points(spark, rows)).transform(
        ct.flag_trajectory_length, min_points=3, max_points=120, long_trips="window", min_vehicle_speed_kmh=0
    )
    build = lambda: ct.build_trajectories(df, city="porto", date="2013-07-01", vehicle_key=F.sha2("vehicle_id", 256)).first()  # noqa: E731
    a, b = build(), build()
    assert a.trip_id == b.trip_id and len(a.trip_id) == 24
    assert a.ts == sorted(a.ts) and a.n_points == 6 and a.duration_s == 75
    assert a.length_m == pytest.approx(5 * 41.9, rel=0.02)
    assert "veh-a" not in a.vehicle_key
