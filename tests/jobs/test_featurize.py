"""silver -> features on a city without OSM context (fast) and the pure transforms.

The features against the per-point-row job they replaced, with and without OSM: test_featurize_trajectory_rows.py."""

import math

import pyarrow as pa
import pytest
from pyproj import Geod, Transformer

from tests.jobs.ingest_fixtures import BAD_INPUTS, land, point_log_city
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.tables import table_path
from transfertraj.jobs.featurize import _chunks, featurize_date
from transfertraj.jobs.ingest import ingest_date
from transfertraj.jobs.metric_coordinates import add_metric_xy


def test_metric_xy_matches_pyproj(spark):
    df = spark.createDataFrame([(-8.61, 41.15), (-8.60, 41.16)], "lon double, lat double")
    got = add_metric_xy(df, "EPSG:32629").collect()
    t = Transformer.from_crs("EPSG:4326", "EPSG:32629", always_xy=True)
    for row in got:
        ex, ey = t.transform(row.lon, row.lat)
        assert row.mx == pytest.approx(ex, abs=1e-6) and row.my == pytest.approx(ey, abs=1e-6)


def test_a_batch_is_cut_into_whole_trips_of_about_the_chunk_size():
    lengths = [3, 0, 5, 2, 7, 1, 1]
    ts = pa.array([list(range(n)) for n in lengths], pa.list_(pa.int64()))
    batch = pa.RecordBatch.from_arrays([ts, pa.array(range(len(lengths)))], names=["ts", "row"])
    chunks = list(_chunks(batch.slice(0), 6))
    assert [c.column("row").to_pylist() for c in chunks] == [[0, 1], [2], [3], [4], [5, 6]]  # 7 > 6: alone
    assert pa.Table.from_batches(chunks).column("ts").to_pylist() == ts.to_pylist()
    assert [c.column("row").to_pylist() for c in _chunks(batch.slice(2, 3), 100)] == [[2, 3, 4]]


@pytest.mark.slow
def test_featurize_a_city_without_osm(spark, settings):
    city = point_log_city("noosm", osm={"kind": "none"})
    land(settings, city.name, "2013-07-01", BAD_INPUTS / "pointlog_bad_values.csv")
    report = ingest_date(spark, city, "2013-07-01", settings)
    out = featurize_date(spark, city, "2013-07-01", settings)
    assert out["trajectories"] == report.trajectories_out == 1
    df, version = read_table(spark, table_path(settings, "features"), where={"city": "noosm"})
    assert version == out["features_version"]
    row = df.first()
    n = row.n_points
    assert all(len(row[c]) == n for c in ("x", "y", "mx", "my", "weekday", "minutes_since_start", "poi", "road"))
    assert row.x[0] == 0 and row.y[0] == 0
    step = math.hypot(row.x[1] - row.x[0], row.y[1] - row.y[0])
    # The first two fixes of v1 are 0.0004 deg lon and 0.0002 deg lat apart at 41.15 N: about 40.2 m on the
    # ellipsoid; UTM's scale factor (0.9996 near the central meridian) keeps the projected step within 0.1 %.
    _, _, geodesic = Geod(ellps="WGS84").inv(-8.61, 41.15, -8.6096, 41.1502)
    assert step == pytest.approx(geodesic, rel=1e-3)
    assert row.minutes_since_start[:3] == [0.0, 0.25, 0.5]
    assert row.context_missing is True
    assert all(all(m) for m in row.poi_missing) and all(row.road_missing)
    assert all(math.isnan(v) for v in row.poi[0])  # missing is NaN, never zero
    assert '"silver_version"' in row.source_versions
