"""Cleaned points -> silver rows written by the cleaning worker (real Spark, real files). The rules are
tested in test_clean_points.py; the files' commit in tests/feature_store/test_arrow_parts.py."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import porto_like
from transfertraj.feature_store.arrow_parts import PartSink
from transfertraj.jobs import clean_trips as ct
from transfertraj.jobs.clean_points import TRIP, clean_trips_spark
from transfertraj.jobs.schemas import SILVER_SCHEMA, delta_arrow_schema
from transfertraj.jobs.vehicle_key import vehicle_keys

COLS = "source_file string, row_id long, point_idx int, stream_id string, vehicle_id string, ts long, lon double, lat double, trip_state string"
T0 = 1_372_636_800


def walk(n, *, stream="a", dt=15, step_deg=0.0005, t0=T0, lon0=-8.61, lat0=41.15):
    """A vehicle driving east: 0.0005 degrees is ~42 m per step (10 km/h at 15 s)."""
    return [(stream, t0 + dt * i, lon0 + step_deg * i, lat0) for i in range(n)]


def cleaned(spark, rows, sink=None):
    full = [("f", i, 0, r[0], "veh-" + r[0], r[1], r[2], r[3], None) for i, r in enumerate(rows)]
    return clean_trips_spark(spark.createDataFrame(full, COLS), porto_like("porto_test"), buckets=2, sink=sink)


def _sink(tmp_path, tag="run1"):
    schema = delta_arrow_schema(SILVER_SCHEMA, without=("city", "date"))
    parts = PartSink(str(tmp_path / "silver"), {"city": "porto", "date": "2013-07-01"}, schema, tag=tag)
    return ct.SilverSink(parts, city="porto", key="k")


def _written(tmp_path, df) -> pa.Table:
    parts = df.where(F.col("kind") == ct.PART).collect()
    return pa.concat_tables([pq.read_table(tmp_path / "silver" / p.part_path) for p in parts])


def test_trips_are_written_ordered_with_stable_ids_and_hashed_vehicles(spark, tmp_path):
    df = cleaned(spark, list(reversed(walk(6))) + walk(5, stream="b", lat0=41.16), _sink(tmp_path))
    trips = df.where(F.col("kind") == TRIP).collect()
    assert len(trips) == 2 and all(t.fix_ts is None and t.part_path for t in trips)  # slim: arrays are in the file
    first = _written(tmp_path, df)
    again = _written(tmp_path, cleaned(spark, walk(6) + walk(5, stream="b", lat0=41.16), _sink(tmp_path)))
    assert sorted(first.column("trip_id").to_pylist()) == sorted(again.column("trip_id").to_pylist())
    a = first.filter(pa.compute.equal(first.column("n_points"), 6)).to_pylist()[0]
    assert len(a["trip_id"]) == 24 and a["ts"] == sorted(a["ts"]) and a["duration_s"] == 75
    assert a["length_m"] == pytest.approx(5 * 41.9, rel=0.02)
    assert a["start_ts"].timestamp() == T0 and a["vehicle_key"] == vehicle_keys(pa.array(["veh-a"]), "k")[0].as_py()
    by_place = {(t.part_path, t.part_row): t.n_points for t in trips}  # each slim row says where its trip is
    files = {p: pq.read_table(tmp_path / "silver" / p) for p, _ in by_place}
    assert {k: files[k[0]].column("n_points")[k[1]].as_py() for k in by_place} == by_place


def test_ids_and_vehicle_keys_are_the_formulas_the_lake_was_written_with(spark):
    """The Spark expressions that wrote silver before the workers did: a rerun must give the same values."""
    ids = ["20000589", "20000596", None, "20000589"]
    df = spark.createDataFrame([(v,) for v in ids], "v string")
    inner = F.sha2(F.concat(F.lit("key:"), "v"), 256)
    spark_keys = [r[0] for r in df.select(F.substring(F.sha2(F.concat(F.lit("key:"), inner), 256), 1, 32)).collect()]
    assert vehicle_keys(pa.array(ids, pa.string()), "key").to_pylist() == spark_keys
    rows = spark.createDataFrame([("s1", 1372636800), ("s2", 5)], "s string, t long")
    expr = F.substring(F.sha2(F.concat_ws("|", F.lit("porto"), "s", F.col("t").cast("string")), 256), 1, 24)
    import numpy as np

    got = ct.trip_ids("porto", pa.array(["s1", "s2"]), np.array([1372636800, 5])).to_pylist()
    assert got == [r[0] for r in rows.select(expr).collect()]


def _sink_with_rejects(tmp_path, tag="run1"):
    from transfertraj.jobs.schemas import REJECTS_SCHEMA

    part = {"city": "porto", "date": "2013-07-01"}
    rejects = PartSink(
        str(tmp_path / "rejects"), part, delta_arrow_schema(REJECTS_SCHEMA, without=("city", "date")), tag=tag
    )
    return ct.SilverSink(_sink(tmp_path, tag).parts, city="porto", key="k", rejects=rejects)


def test_dropped_points_are_written_by_the_worker_and_come_back_counted(spark, tmp_path):
    rows = walk(6) + [("a", T0 + 90, -8.80, 41.15), ("a", T0 + 105, -8.81, 41.15)]
    df = cleaned(spark, rows, _sink_with_rejects(tmp_path))
    runs = df.where("kind = 'drop'").collect()
    assert sum(r.n_points for r in runs) == 2 and {r.reason for r in runs} == {"outside_bbox"}
    files = {p.part_path for p in df.where(F.col("kind") == ct.REJECTS_PART).collect()}
    assert files == {r.part_path for r in runs}
    written = pa.concat_tables([pq.read_table(tmp_path / "rejects" / f) for f in files]).to_pylist()
    assert sorted((r["reason"], r["detail"]) for r in written) == [
        ("outside_bbox", f"ts={T0 + 90} lon=-8.800000 lat=41.150000"),
        ("outside_bbox", f"ts={T0 + 105} lon=-8.810000 lat=41.150000"),
    ]
    for r in runs:  # each run says where its rows are
        table = pq.read_table(tmp_path / "rejects" / r.part_path).slice(r.part_row, r.n_points)
        assert set(table.column("row_id").to_pylist()) == {r.row_id} and set(table.column("reason").to_pylist()) == {
            r.reason
        }


def test_drop_detail_is_what_spark_format_string_wrote(spark):
    """The quarantine row of a dropped point reads as it did when Spark formatted it (format_string)."""
    values = [(1372636800, -8.6186, 41.1414), (5, 0.0, -0.0), (-7, 200.123456789, -90.0000005)]
    values += [(9, float("nan"), float("inf")), (10, float("-inf"), 1e-7), (11, 123456.5, -3.25e-6)]
    df = spark.createDataFrame(values, "ts long, lon double, lat double")
    want = [r[0] for r in df.select(F.format_string("ts=%d lon=%.6f lat=%.6f", "ts", "lon", "lat")).collect()]
    drops = pa.table(
        {
            "source_file": ["f"] * len(values),
            "row_id": list(range(len(values))),
            "point_idx": [0] * len(values),
            "reason": ["invalid_coordinate"] * len(values),
            "ts": [v[0] for v in values],
            "lon": [v[1] for v in values],
            "lat": [v[2] for v in values],
        }
    )
    assert ct.drop_rejects(drops).column("detail").to_pylist() == want


def test_drop_runs_are_the_row_and_reason_runs():
    runs = ct.drop_runs(pa.array([1, 1, 1, 2, 3, 3]), pa.array(["a", "a", "b", "a", "b", "b"]))
    assert runs["row_id"].to_pylist() == [1, 1, 2, 3] and runs["reason"].to_pylist() == ["a", "b", "a", "b"]
    assert runs["start"].tolist() == [0, 2, 3, 4] and runs["n"].tolist() == [2, 1, 1, 2]


def test_a_point_logs_drops_come_back_one_row_per_reason(spark, tmp_path):
    """A point log's row is one fix: its drops are counted by reason, with no row to take out."""
    from dataclasses import replace

    rows = walk(6) + [("a", T0 + 90, -8.80, 41.15), ("a", T0 + 105, -8.81, 41.15)]
    df = cleaned(spark, rows, replace(_sink_with_rejects(tmp_path), runs_by_row=False))
    runs = df.where("kind = 'drop'").collect()
    assert [(r.row_id, r.reason, r.n_points) for r in runs] == [(None, "outside_bbox", 2)]
    table = pq.read_table(tmp_path / "rejects" / runs[0].part_path).slice(runs[0].part_row, 2)
    assert sorted(table.column("row_id").to_pylist()) == [6, 7]
