"""The per-point feature functions without Spark: local time, the trajectory row, the compact context."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyproj import Transformer

from transfertraj.features.context import (
    CityContext,
    RoadLattice,
    city_context,
    context_vectors,
    lattice_to_arrow,
    load_city_context,
    poi_tree,
    save_city_context,
)
from transfertraj.features.metric_coordinates import metric_xy
from transfertraj.features.taxonomy import N_POI, N_ROAD, POI_CATEGORIES, ROAD_CLASSES, covered_mask
from transfertraj.features.temporal import temporal_fields
from transfertraj.features.trajectory import point_features, trajectory_rows

FEATURES = Path(__file__).resolve().parents[2] / "transfertraj" / "features"
ALLOWED = {"__future__", "dataclasses", "functools", "json", "os", "pathlib", "shutil", "tempfile"}
ALLOWED |= {"numpy", "pyarrow", "pyproj", "scipy", "transfertraj"}


def test_features_import_only_numpy_arrow_pyproj_scipy():
    """What serving imports: never pyspark, delta-spark, shapely or geopandas."""
    found = set()
    for path in FEATURES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
    assert found <= ALLOWED, found - ALLOWED


def test_temporal_fields_are_local_time():
    # 2013-07-01 00:30 UTC is Monday 01:30 in Lisbon (WEST, UTC+1) and Monday 08:30 in Shanghai.
    ts = [1372638600]
    assert [int(a[0]) for a in temporal_fields(ts, "Europe/Lisbon")] == [0, 1, 30]
    assert [int(a[0]) for a in temporal_fields(ts, "Asia/Shanghai")] == [0, 8, 30]
    assert [int(a[0]) for a in temporal_fields(ts, "America/Los_Angeles")] == [6, 17, 30]  # still Sunday


@pytest.mark.parametrize("tz", ["Europe/Lisbon", "America/Los_Angeles", "Asia/Kathmandu", "Australia/Lord_Howe"])
def test_temporal_fields_are_arrows_local_fields(tz):
    """The numpy arithmetic on the local wall clock equals Arrow's own weekday/hour/minute of the zoned time,
    over 1950-2040 (before 1970 too) and every minute around the zone's DST changes of 2013."""
    rng = np.random.default_rng(0)
    around = [t + np.arange(-7200, 7200, 60) for t in (1364691600, 1383440400, 1364695200, 1380931200)]
    ts = np.concatenate([rng.integers(-631152000, 2208988800, 50_000), *around])
    zoned = pa.array(ts, pa.timestamp("s", tz=tz))
    want = (pc.day_of_week(zoned, count_from_zero=True, week_start=1), pc.hour(zoned), pc.minute(zoned))
    for got, w in zip(temporal_fields(ts, tz), want, strict=True):
        np.testing.assert_array_equal(got, w.to_numpy(zero_copy_only=False))


def test_metric_xy_is_pyproj():
    mx, my = metric_xy([-8.61, -8.60], [41.15, 41.16], "EPSG:32629")
    ex, ey = Transformer.from_crs("EPSG:4326", "EPSG:32629", always_xy=True).transform([-8.61, -8.60], [41.15, 41.16])
    np.testing.assert_array_equal(mx, ex) and np.testing.assert_array_equal(my, ey)


def test_trajectory_rows_order_points_by_index_and_measure_from_the_first():
    points = pa.table(
        {
            "trip_id": ["b", "a", "a", "b", "a"],
            "idx": pa.array([1, 2, 0, 0, 1], pa.int32()),
            "ts": [1372636860, 1372636830, 1372636800, 1372636800, 1372636815],
            "lon": [-8.60, -8.609, -8.611, -8.61, -8.61],
            "lat": [41.15, 41.15, 41.15, 41.15, 41.15],
        }
    )
    per_point = point_features(points, crs="EPSG:32629", timezone="Europe/Lisbon", context=None, phi_m=100.0)
    rows = trajectory_rows(per_point).to_pylist()
    assert [r["trip_id"] for r in rows] == ["a", "b"] and [r["n_points"] for r in rows] == [3, 2]
    a = rows[0]
    assert a["ts"] == [1372636800, 1372636815, 1372636830] and a["minutes_since_start"] == [0.0, 0.25, 0.5]
    assert a["x"][0] == 0.0 and a["y"][0] == 0.0 and 165 < a["x"][2] < 170  # 0.002 deg lon at 41.15 N
    assert all(len(v) == N_POI and all(np.isnan(v)) for v in a["poi"]) and all(a["road_missing"])


def small_context(rng) -> CityContext:
    ny, nx = 40, 60
    lattice = RoadLattice(
        x0=500_000.0,
        y0=4_550_000.0,
        step=5.0,
        phi_m=100.0,
        road_m=rng.uniform(0, 300, (ny, nx, len(ROAD_CLASSES))).astype(np.float16),
        nearest_m=rng.uniform(0, 500, (ny, nx)).astype(np.float16),
        nearest_class=rng.integers(-1, len(ROAD_CLASSES), (ny, nx)).astype(np.int8),
        road_covered=rng.random((ny, nx)) > 0.2,
        poi_covered=rng.random((ny, nx)) > 0.2,
    )
    poi_xy = np.column_stack([rng.uniform(500_000, 500_300, 500), rng.uniform(4_550_000, 4_550_200, 500)])
    return CityContext(lattice, poi_xy, rng.integers(0, len(POI_CATEGORIES), 500), "poi-v1")


def test_the_compact_context_is_exact(tmp_path):
    """Arrow grid (as the Delta table holds it) -> CityContext -> NPZ -> CityContext: the same vectors."""
    rng = np.random.default_rng(0)
    ctx = small_context(rng)
    grid = lattice_to_arrow(ctx.lattice)
    grid = grid.append_column("taxonomy_version", pa.array(["poi-v1"] * grid.num_rows))
    cats = [POI_CATEGORIES[i] for i in ctx.poi_category]
    pois = pa.table({"category": cats, "mx": ctx.poi_xy[:, 0], "my": ctx.poi_xy[:, 1]})
    from_tables = city_context(pois, grid.take(rng.permutation(grid.num_rows)))  # rows in any order
    loaded = load_city_context(save_city_context(from_tables, tmp_path / "ctx.npz"))
    xy = np.column_stack([rng.uniform(499_990, 500_310, 2000), rng.uniform(4_549_990, 4_550_210, 2000)])
    mask = covered_mask(["food", "shop"])
    want = context_vectors(xy, ctx.lattice, poi_tree(ctx), ctx.poi_category, phi_m=100.0, category_missing=mask)
    got = context_vectors(xy, loaded.lattice, poi_tree(loaded), loaded.poi_category, phi_m=100.0, category_missing=mask)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)
    assert got[0].shape == (2000, N_POI) and got[2].shape == (2000, N_ROAD)
    assert np.isfinite(got[0][:, 0]).any() and np.isnan(got[0][:, 2]).all()  # education is not covered
    with pytest.raises(ValueError, match="outside the taxonomy"):
        city_context(pois.set_column(0, "category", pa.array(["bakery"] * pois.num_rows)), grid)
