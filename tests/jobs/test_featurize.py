"""silver -> features on a city without OSM context (fast) and the pure transforms."""

import math

import pytest
from pyproj import Geod, Transformer

from tests.jobs.ingest_fixtures import BAD_INPUTS, land, point_log_city
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.tables import table_path
from transfertraj.jobs.featurize import add_temporal, featurize_date
from transfertraj.jobs.ingest import ingest_date
from transfertraj.jobs.metric_coordinates import add_metric_xy


def test_metric_xy_matches_pyproj(spark):
    df = spark.createDataFrame([(-8.61, 41.15), (-8.60, 41.16)], "lon double, lat double")
    got = add_metric_xy(df, "EPSG:32629").collect()
    t = Transformer.from_crs("EPSG:4326", "EPSG:32629", always_xy=True)
    for row in got:
        ex, ey = t.transform(row.lon, row.lat)
        assert row.mx == pytest.approx(ex, abs=1e-6) and row.my == pytest.approx(ey, abs=1e-6)


def test_temporal_fields_are_local_time(spark):
    # 2013-07-01 00:30 UTC is Monday 01:30 in Lisbon (WEST, UTC+1) and Monday 08:30 in Shanghai.
    df = spark.createDataFrame([(1372638600,)], "ts long")
    lisbon = add_temporal(df, timezone="Europe/Lisbon").first()
    shanghai = add_temporal(df, timezone="Asia/Shanghai").first()
    la = add_temporal(df, timezone="America/Los_Angeles").first()
    assert (lisbon.weekday, lisbon.hour, lisbon.minute) == (0, 1, 30)
    assert (shanghai.weekday, shanghai.hour) == (0, 8)
    assert (la.weekday, la.hour) == (6, 17)  # still Sunday in California


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
