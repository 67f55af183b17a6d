"""Each cleaning rule of jobs/clean_points.py on a handful of inline points (pure numpy, no Spark),
and the Spark wrapper on the same points."""

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from tests.jobs.ingest_fixtures import porto_like
from transfertraj.jobs.clean_points import (
    REASONS,
    CleaningRules,
    _cleaned_schema,
    clean_points_spark,
    clean_sorted,
    clean_table,
    clean_trips_spark,
    haversine_m,
    prev_where,
    trips_and_drops_table,
    whole_streams,
)

T0 = 1_372_636_800
RULES = CleaningRules(
    min_lon=-8.70,
    min_lat=41.12,
    max_lon=-8.52,
    max_lat=41.197,
    trip_state_value=None,
    max_speed_kmh=150,
    gap_split_s=120,
    stay_split_s=300,
    stay_radius_m=100,
    stay_max_speed_kmh=3,
    interval_s=15,
    min_points=2,
    max_points=120,
    long_trips="window",
    min_vehicle_speed_kmh=0,
)


def walk(n, *, stream="a", dt=15, step_deg=0.0005, t0=T0, lon0=-8.61, lat0=41.15):
    """A vehicle driving east: 0.0005 degrees is ~42 m per step (10 km/h at 15 s)."""
    return [(stream, t0 + dt * i, lon0 + step_deg * i, lat0) for i in range(n)]


def clean(rows, **overrides):
    """rows: (stream, ts, lon, lat[, state]) in the order the stream's fixes are sorted -> verdict arrays."""
    rules = dataclasses.replace(RULES, **overrides)
    state = np.array([r[4] if len(r) > 4 else None for r in rows], dtype=object)
    v = clean_sorted(
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows], np.int64),
        np.array([r[2] for r in rows], float),
        np.array([r[3] for r in rows], float),
        state,
        rules,
    )
    v["why"] = [REASONS[c] or None for c in v["reason"]]
    return v


def pieces(v):
    """Kept points numbered by trajectory (seg, chunk) in order of appearance; None where dropped."""
    ids, out = {}, []
    for code, seg, chunk in zip(v["reason"], v["seg"], v["chunk"]):
        out.append(None if code else ids.setdefault((seg, chunk), len(ids)))
    return out


def test_haversine_known_distance_and_missing_neighbour():
    assert haversine_m(-8.61, 41.0, -8.61, 42.0) == pytest.approx(111_195, rel=1e-3)
    assert np.isnan(haversine_m(np.nan, np.nan, -8.61, 41.0))


def test_prev_where_skips_ineligible_points_and_never_crosses_streams():
    x = np.array([1, 2, 3, 4, 5])
    first = np.array([True, False, False, True, False])
    eligible = np.array([True, False, True, True, True])
    assert prev_where(x, eligible, first, -1).tolist() == [-1, 1, 1, -1, 4]


def test_invalid_coordinates():
    rows = [("a", T0, float("nan"), 41.1), ("a", T0 + 15, -8.6, 91.0), ("a", T0 + 30, 0.0, 0.0)] + walk(3, t0=T0 + 45)
    assert clean(rows)["why"] == ["invalid_coordinate"] * 3 + [None] * 3


def test_duplicates_keep_the_first_fix():
    rows = [("a", T0, -8.6, 41.15), ("a", T0, -8.6, 41.15), ("a", T0, -8.5, 41.0), ("a", T0 + 15, -8.6005, 41.15)]
    assert clean(rows)["why"] == [None, "duplicate_fix", "duplicate_timestamp", None]


def test_outside_bbox_drops_and_splits_where_it_leaves():
    rows = (
        walk(3)
        + [("a", T0 + 45, -8.80, 41.15)]
        + [("a", T0 + 60 + 15 * i, -8.60 + 0.0005 * i, 41.15) for i in range(2)]
    )
    v = clean(rows)
    assert v["why"] == [None, None, None, "outside_bbox", None, None]
    assert pieces(v) == [0, 0, 0, None, 1, 1]  # coming back into the box starts a new trip


def test_off_trip_keeps_runs_of_the_trip_state():
    rows = [("a", T0 + 15 * i, -8.6 + 0.0005 * i, 41.15, s) for i, s in enumerate("0011011")]
    v = clean(rows, trip_state_value="1")
    assert v["why"] == ["off_trip", "off_trip", None, None, "off_trip", None, None]
    assert pieces(v) == [None, None, 0, 0, None, 1, 1]  # a second fare is a second trip


def test_off_trip_is_a_no_op_without_a_state_column():
    assert clean(walk(3), trip_state_value=None)["why"] == [None] * 3


def test_single_spike_is_dropped_but_a_real_jump_is_not():
    spike = walk(5)
    spike[2] = ("a", spike[2][1], -8.55, 41.19)  # 6 km away for one fix, 15 s each way
    assert clean(spike)["why"] == [None, None, "speed_spike", None, None]
    jump = walk(3) + [("a", T0 + 45 + 15 * i, -8.55 + 0.0005 * i, 41.19) for i in range(3)]
    v = clean(jump)
    assert set(v["why"]) == {None}
    assert pieces(v) == [0, 0, 0, 1, 1, 1]  # a jump faster than max speed splits instead


def test_long_stay_is_dropped_and_splits_short_stop_is_kept():
    drive = walk(4)
    stay = [("a", T0 + 45 + 15 * i, drive[-1][2] + 0.00001 * (i % 2), 41.15) for i in range(1, 30)]  # 7 min parked
    after = walk(4, t0=T0 + 45 + 15 * 30, lon0=drive[-1][2] + 0.0005)
    v = clean(drive + stay + after)
    assert v["why"].count("stay") == 29
    assert pieces(v) == [0] * 4 + [None] * 29 + [1] * 4  # the first fix after the stay starts a new trip
    short = drive + [("a", T0 + 45 + 15 * i, drive[-1][2], 41.15) for i in range(1, 5)]  # one minute
    assert set(clean(short)["why"]) == {None}


def test_segments_split_at_gaps():
    rows = walk(3) + walk(3, t0=T0 + 1000, lon0=-8.60)
    assert pieces(clean(rows)) == [0, 0, 0, 1, 1, 1]


def test_resample_takes_the_nearest_real_fix_and_a_missing_tick_splits():
    # 5 s fixes for 35 s, a 10 s hole, then one fix; a 40 s hole; 5 s fixes again. Interval 15 s.
    ts = [0, 5, 10, 14, 20, 25, 30, 35, 45, 85, 90, 95, 100, 105]
    v = clean([("a", T0 + t, -8.61 + 0.0001 * t, 41.15) for t in ts])
    kept = [t for t, why in zip(ts, v["why"]) if why is None]
    assert kept == [0, 14, 30, 45, 90, 105]  # real fixes nearest to ticks 0, 15, 30, 45, 90, 105
    assert v["why"].count("resampled_out") == len(ts) - len(kept)
    assert [p for p in pieces(v) if p is not None] == [0, 0, 0, 0, 1, 1]  # ticks 60 s and 75 s have no fix


def test_resample_never_invents_points():
    v = clean([("a", T0 + t, -8.61 + 0.0001 * t, 41.15) for t in (0, 15, 30)], interval_s=5, min_points=1)
    assert v["why"] == [None] * 3 and pieces(v) == [0, 1, 2]  # empty ticks split; nothing is added


def test_long_pieces_are_windowed_and_short_ones_dropped():
    v = clean(walk(12) + walk(3, stream="b"), min_points=3, max_points=5)
    assert v["chunk"][:12].tolist() == [0] * 5 + [1] * 5 + [2] * 2
    assert v["why"] == [None] * 10 + ["short_trajectory"] * 2 + [None] * 3
    dropped = clean(walk(12) + walk(3, stream="b"), min_points=3, max_points=5, long_trips="drop")
    assert dropped["why"] == ["too_long"] * 12 + [None] * 3


def test_slow_pieces_are_not_vehicle_trips():
    walker = [("w", T0 + 15 * i, -8.61 + 0.00005 * i, 41.15) for i in range(8)]  # ~4 m per 15 s = 1 km/h
    v = clean(walk(8, step_deg=0.002) + walker, min_vehicle_speed_kmh=15)  # ~40 km/h
    assert v["why"] == [None] * 8 + ["not_vehicle"] * 8


def test_step_lengths_restart_at_each_trajectory():
    v = clean(walk(4))
    assert v["step_m"][0] == 0 and v["step_m"][1:] == pytest.approx([41.9] * 3, rel=0.02)


def test_clean_table_sorts_by_stream_and_time_and_keeps_every_point():
    rows = list(reversed(walk(6))) + walk(3, stream="b")
    table = pa.table(
        {
            "source_file": ["f"] * 9,
            "row_id": list(range(9)),
            "point_idx": pa.array([0] * 9, pa.int32()),
            "stream_id": [r[0] for r in rows],
            "vehicle_id": ["v-" + r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "lon": [r[2] for r in rows],
            "lat": [r[3] for r in rows],
            "trip_state": pa.nulls(9, pa.string()),
        }
    )
    out = clean_table(table, RULES)
    assert out.num_rows == 9 and out.column("reason").null_count == 9
    a = out.filter(out.column("stream_id").to_numpy(zero_copy_only=False) == "a")
    assert a.column("ts").to_pylist() == sorted(r[1] for r in rows[:6])


def test_spark_wrapper_cleans_whole_streams_in_any_bucket(spark):
    city = porto_like("porto_test")
    rows = walk(6) + walk(6, stream="b") + [("b", T0 + 90, -8.80, 41.15)]
    df = spark.createDataFrame(
        [("f", i, 0, r[0], "v-" + r[0], r[1], r[2], r[3], None) for i, r in enumerate(rows)],
        "source_file string, row_id long, point_idx int, stream_id string, vehicle_id string, ts long, "
        "lon double, lat double, trip_state string",
    )
    for buckets in (1, 3):
        got = {(r.stream_id, r.ts): r.reason for r in clean_points_spark(df, city, buckets=buckets).collect()}
        assert len(got) == len(rows)
        assert got[("b", T0 + 90)] == "outside_bbox" and sum(v is None for v in got.values()) == 12


def test_whole_streams_carries_a_stream_cut_by_a_batch_boundary():
    table = pa.table({"stream_id": list("aaabbbbc"), "v": list(range(8))})
    seen = []

    def fn(t):
        seen.append(t.column("stream_id").to_pylist())
        return t

    out = list(whole_streams(table.to_batches(max_chunksize=3), fn))
    assert sum(b.num_rows for b in out) == 8
    for chunk in seen:  # each call holds whole streams only
        for s in set(chunk):
            assert chunk.count(s) == table.column("stream_id").to_pylist().count(s)


def test_spark_wrapper_with_tiny_arrow_batches_and_contiguous_streams(spark):
    city = porto_like("porto_test")
    rows = walk(7) + walk(7, stream="b")
    df = spark.createDataFrame(
        [("f", i, 0, r[0], "v-" + r[0], r[1], r[2], r[3], None) for i, r in enumerate(rows)],
        "source_file string, row_id long, point_idx int, stream_id string, vehicle_id string, ts long, "
        "lon double, lat double, trip_state string",
    ).coalesce(1)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")
    try:
        got = clean_points_spark(df, city, buckets=1, streams_contiguous=True).collect()
        pieces = clean_trips_spark(df, city, buckets=1, streams_contiguous=True).where("kind = 'trip'").collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert len(got) == 14 and all(r.reason is None for r in got)
    assert sorted((p.stream_id, p.n_points) for p in pieces) == [("a", 7), ("b", 7)]


def test_trips_and_drops_hold_every_point_once():
    rows = walk(6) + [("a", T0 + 90, -8.80, 41.15)] + walk(2, stream="b")
    table = pa.table(
        {
            "source_file": ["f"] * 9,
            "row_id": list(range(9)),
            "point_idx": pa.array([0] * 9, pa.int32()),
            "stream_id": [r[0] for r in rows],
            "vehicle_id": ["v-" + r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "lon": [r[2] for r in rows],
            "lat": [r[3] for r in rows],
            "trip_state": pa.nulls(9, pa.string()),
        }
    )
    out = trips_and_drops_table(table, dataclasses.replace(RULES, min_points=3)).to_pylist()
    trips = [r for r in out if r["kind"] == "trip"]
    drops = [r for r in out if r["kind"] == "drop"]
    assert [(t["stream_id"], t["n_points"], len(t["fix_ts"])) for t in trips] == [("a", 6, 6)]
    assert trips[0]["fix_ts"] == sorted(trips[0]["fix_ts"]) and trips[0]["length_m"] == pytest.approx(
        5 * 41.9, rel=0.02
    )
    assert sorted(d["reason"] for d in drops) == ["outside_bbox", "short_trajectory", "short_trajectory"]
    assert sum(t["n_points"] for t in trips) + len(drops) == 9


def test_cleaned_arrow_schema_matches_the_spark_ddl(spark):
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import _parse_datatype_string

    from transfertraj.jobs.clean_points import CLEANED_DDL

    expected = to_arrow_schema(_parse_datatype_string(CLEANED_DDL))
    assert [(f.name, f.type) for f in _cleaned_schema()] == [(f.name, f.type) for f in expected]
