"""Cleaned points -> silver trajectories (real Spark, no storage). The rules are tested in test_clean_points.py."""

import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import porto_like
from transfertraj.jobs import clean_trips as ct
from transfertraj.jobs.clean_points import clean_trips_spark

COLS = "source_file string, row_id long, point_idx int, stream_id string, vehicle_id string, ts long, lon double, lat double, trip_state string"
T0 = 1_372_636_800


def walk(n, *, stream="a", dt=15, step_deg=0.0005, t0=T0, lon0=-8.61, lat0=41.15):
    """A vehicle driving east: 0.0005 degrees is ~42 m per step (10 km/h at 15 s)."""
    return [(stream, t0 + dt * i, lon0 + step_deg * i, lat0) for i in range(n)]


def cleaned(spark, rows):
    full = [("f", i, 0, r[0], "veh-" + r[0], r[1], r[2], r[3], None) for i, r in enumerate(rows)]
    return clean_trips_spark(spark.createDataFrame(full, COLS), porto_like("porto_test"), buckets=2)


def test_trajectories_are_ordered_with_stable_ids_and_hashed_vehicles(spark):
    df = cleaned(spark, list(reversed(walk(6)))).where("kind = 'trip'")

    def build():
        return ct.build_trajectories(df, city="porto", date="2013-07-01", vehicle_key=F.sha2("vehicle_id", 256)).first()

    a, b = build(), build()
    assert a.trip_id == b.trip_id and len(a.trip_id) == 24
    assert a.ts == sorted(a.ts) and a.n_points == 6 and a.duration_s == 75
    assert a.length_m == pytest.approx(5 * 41.9, rel=0.02)
    assert "veh-a" not in a.vehicle_key


def test_point_rejects_say_why_and_keep_the_fix(spark):
    rows = walk(6) + [("a", T0 + 90, -8.80, 41.15)]
    got = ct.point_rejects(cleaned(spark, rows).where("kind = 'drop'")).collect()
    assert [(r.reason, r.detail) for r in got] == [("outside_bbox", f"ts={T0 + 90} lon=-8.800000 lat=41.150000")]
