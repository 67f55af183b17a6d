"""Context modalities against a brute-force geopandas computation on real Porto taxi points.

One real OSM extract (central Porto, cut from the bundled file once per session) is written to the
context tables and read back; several hundred real taxi points inside it are compared with shapely:
POI counts must match exactly, road lengths within the stated tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from transfertraj.core.city_config import load_city
from transfertraj.jobs.context_density import (
    DIST_CAP_M,
    LATTICE_M,
    ROAD_TOLERANCE_M,
    ROAD_TOLERANCE_REL,
    add_loaded_context,
    add_missing_context,
    chord_lengths,
    load_context,
)
from transfertraj.jobs.context_tables import build_context_tables, read_context, with_context
from transfertraj.jobs.context_taxonomy import N_POI, N_ROAD, POI_CATEGORIES, ROAD_CLASSES, TAXONOMY_VERSION
from transfertraj.jobs.osm_context import cut_osm_extract, read_osm_xml

REPO = Path(__file__).resolve().parents[2]
BOX = (-8.626, 41.141, -8.606, 41.155)  # central Porto: Baixa, Bolhão, Trindade (1.7 x 1.6 km)
N_POINTS = 400


def porto_points(crs: str, box=None) -> np.ndarray:
    """All real points of the bundled taxi sample, projected to metres (optionally inside a lon/lat box)."""
    df = pd.read_csv(REPO / "data" / "porto" / "taxi_sample.csv", usecols=["POLYLINE"])
    lonlat = np.array([p for s in df["POLYLINE"] for p in json.loads(s)], dtype=float)
    if box is not None:
        w, s, e, n = box
        lonlat = lonlat[(lonlat[:, 0] > w) & (lonlat[:, 0] < e) & (lonlat[:, 1] > s) & (lonlat[:, 1] < n)]
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
    return np.column_stack([x, y])


@pytest.fixture(scope="session")
def porto_extract(tmp_path_factory, settings):
    """(city config pointing at the extract, parsed OsmContext) for central Porto."""
    src = REPO / "data" / "porto" / "porto_central.osm.bz2"
    dst = cut_osm_extract(src, tmp_path_factory.mktemp("osm") / "porto_centre.osm", BOX)
    porto = load_city("porto", settings)
    city = porto.model_copy(update={"osm": porto.osm.model_copy(update={"path": dst})})
    return city, read_osm_xml(dst, city.crs)


@pytest.fixture(scope="session")
def porto_tables(spark_session, settings, porto_extract):
    spark = spark_session()
    city, _ = porto_extract
    versions = build_context_tables(spark, city, settings)
    return city, versions


@pytest.fixture(scope="session")
def sample_points(porto_extract):
    """N_POINTS real taxi points at least phi inside the extract box (so the extract holds their discs)."""
    city, _ = porto_extract
    w, s, e, n = BOX
    pad = 0.0015  # ~125-165 m in degrees here, more than phi
    xy = porto_points(city.crs, (w + pad, s + pad, e - pad, n - pad))
    rng = np.random.default_rng(4)
    return xy[rng.choice(len(xy), N_POINTS, replace=False)]


@pytest.fixture(scope="session")
def loaded(spark_session, settings, porto_tables):
    """The extract's context collected once, so the edge-case tests do not collect the grid again."""
    spark = spark_session()
    city, _ = porto_tables
    pois_df, grid_df, _ = read_context(spark, city, settings)
    return load_context(pois_df, grid_df)


@pytest.fixture(scope="session")
def context_rows(spark_session, settings, porto_tables, sample_points):
    spark = spark_session()
    city, _ = porto_tables
    pdf = pd.DataFrame(
        {
            "point_id": np.arange(len(sample_points), dtype=np.int64),
            "mx": sample_points[:, 0],
            "my": sample_points[:, 1],
        }
    )
    out = with_context(spark.createDataFrame(pdf).repartition(3), city, settings).toPandas()
    return out.sort_values("point_id").reset_index(drop=True)


def brute_force(xy: np.ndarray, ctx, phi: float):
    """Per point: POI counts per category, road metres per class within phi, nearest road distance/class."""
    pois, roads = ctx.pois, ctx.roads
    cat = pois["category"].map(POI_CATEGORIES.index).to_numpy()
    cls = roads["road_class"].map(ROAD_CLASSES.index).to_numpy()
    pts = gpd.GeoSeries(shapely.points(xy), crs=pois.crs)
    counts = np.zeros((len(xy), len(POI_CATEGORIES)), dtype=int)
    lengths = np.zeros((len(xy), len(ROAD_CLASSES)))
    geoms = roads.geometry.to_numpy()
    tree = shapely.STRtree(geoms)
    for i, p in enumerate(pts):
        d = pois.geometry.distance(p).to_numpy()
        np.add.at(counts[i], cat[d <= phi], 1)
        disc = p.buffer(phi, quad_segs=128)
        hit = tree.query(disc)
        np.add.at(lengths[i], cls[hit], shapely.length(shapely.intersection(geoms[hit], disc)))
    (_, nearest), dist = tree.query_nearest(pts.to_numpy(), return_distance=True, all_matches=False)
    return counts, lengths, dist, cls[nearest]


@pytest.fixture(scope="session")
def expected(porto_extract, sample_points):
    city, ctx = porto_extract
    return brute_force(sample_points, ctx, city.phi_m)


def test_poi_counts_are_exact(context_rows, expected):
    counts, *_ = expected
    poi = np.stack(context_rows["poi"].to_numpy())
    assert poi.shape == (N_POINTS, N_POI)
    got = np.rint(np.expm1(poi[:, :-1].astype(np.float64))).astype(int)
    assert counts.sum() > 10 * N_POINTS  # central Porto: a real test, not zeros against zeros
    np.testing.assert_array_equal(got, counts)
    np.testing.assert_array_equal(np.rint(np.expm1(poi[:, -1].astype(np.float64))).astype(int), counts.sum(1))
    assert not np.stack(context_rows["poi_missing"].to_numpy()).any()  # Porto's source covers everything


def test_road_lengths_within_stated_tolerance(context_rows, expected):
    _, lengths, _, _ = expected
    road = np.stack(context_rows["road"].to_numpy()).astype(np.float64)
    assert road.shape == (N_POINTS, N_ROAD)
    got = np.expm1(road[:, : len(ROAD_CLASSES)])
    err = np.abs(got - lengths)
    tolerance = np.maximum(ROAD_TOLERANCE_M, ROAD_TOLERANCE_REL * lengths)
    assert lengths.sum(1).min() > 0  # every sample point has road within phi
    assert (err <= tolerance).all(), f"worst error {err.max():.1f} m"
    assert np.median(err) < 1.0
    assert np.abs(got.sum() - lengths.sum()) / lengths.sum() < 0.005  # no bias in aggregate
    assert not context_rows["road_missing"].any()


def test_nearest_road_distance_and_class(context_rows, expected):
    *_, dist, nearest_class = expected
    road = np.stack(context_rows["road"].to_numpy()).astype(np.float64)
    k = len(ROAD_CLASSES)
    got = road[:, k] * DIST_CAP_M
    assert np.abs(got - dist).max() <= LATTICE_M * np.sqrt(2) + 1.0
    one_hot = road[:, k + 1 :]
    assert (one_hot.sum(1) == 1).all()
    # at intersections two classes are equally near; the class agrees almost everywhere else
    assert (one_hot.argmax(1) == nearest_class).mean() > 0.9


def test_chord_lengths_match_shapely():
    rng = np.random.default_rng(0)
    start, end = rng.uniform(-150, 150, (500, 2)), rng.uniform(-150, 150, (500, 2))
    centres = rng.uniform(-50, 50, (500, 2))
    got = chord_lengths(centres, start, end, 100.0)
    want = [
        shapely.intersection(shapely.LineString([a, b]), shapely.Point(c).buffer(100.0, quad_segs=256)).length
        for a, b, c in zip(start, end, centres)
    ]
    np.testing.assert_allclose(got, want, atol=0.05)


def test_context_npz_written_at_build_is_the_one_read_back_from_the_tables(settings, porto_tables):
    """build_context_tables writes the NPZ every job loads from the rows it commits (no read-back); it
    must hold exactly what context_npz builds from the tables themselves."""
    from transfertraj.features.context import load_city_context
    from transfertraj.jobs.context_tables import context_npz

    city, versions = porto_tables
    path, current = context_npz(settings, city)
    assert current == {k: versions[k] for k in ("context_pois", "context_grid")}
    at_build = load_city_context(path)
    path.unlink()
    rebuilt_path, _ = context_npz(settings, city)  # a cache miss: read back from the Delta tables
    assert rebuilt_path == path
    from transfertraj.features.mapped_context import is_unpacked

    assert is_unpacked(path)  # the workers' folder is part of the cache: no job unpacks it
    read_back = load_city_context(path)
    assert at_build.taxonomy_version == read_back.taxonomy_version
    for name in ("x0", "y0", "step", "phi_m"):
        assert getattr(at_build.lattice, name) == getattr(read_back.lattice, name)
    for name in ("road_m", "nearest_m", "nearest_class", "road_covered", "poi_covered"):
        np.testing.assert_array_equal(getattr(at_build.lattice, name), getattr(read_back.lattice, name), name)
    order_a = np.lexsort((at_build.poi_xy[:, 1], at_build.poi_xy[:, 0], at_build.poi_category))
    order_b = np.lexsort((read_back.poi_xy[:, 1], read_back.poi_xy[:, 0], read_back.poi_category))
    np.testing.assert_array_equal(at_build.poi_xy[order_a], read_back.poi_xy[order_b])
    np.testing.assert_array_equal(at_build.poi_category[order_a], read_back.poi_category[order_b])
    assert np.count_nonzero(at_build.lattice.road_m) > 0 and len(at_build.poi_xy) > 100


def test_tables_record_snapshot_and_taxonomy(spark, settings, porto_tables):
    city, versions = porto_tables
    assert set(versions) == {"context_roads", "context_pois", "context_grid"}
    pois_df, grid_df, _ = read_context(spark, city, settings)
    row = pois_df.select("snapshot_date", "taxonomy_version").distinct().collect()
    assert [(r.snapshot_date.isoformat(), r.taxonomy_version) for r in row] == [("2024-06-01", TAXONOMY_VERSION)]
    from delta.tables import DeltaTable

    from transfertraj.feature_store.tables import table_path

    meta = json.loads(DeltaTable.forPath(spark, table_path(settings, "context_roads")).history(1).first().userMetadata)
    assert meta["taxonomy_version"] == TAXONOMY_VERSION and meta["snapshot_date"] == "2024-06-01"
    assert meta["road_classes"] == list(ROAD_CLASSES)


def test_rewrite_replaces_the_city_partition(spark, settings, porto_extract, porto_tables):
    city, ctx = porto_extract
    from transfertraj.feature_store.delta_io import read_table
    from transfertraj.feature_store.tables import table_path
    from transfertraj.jobs.context_tables import POIS_SCHEMA, _write, pois_table

    before = read_table(spark, table_path(settings, "context_pois"))[0].count()
    _write(spark, settings, "context_pois", pois_table(ctx, city), POIS_SCHEMA, city, {})
    assert read_table(spark, table_path(settings, "context_pois"))[0].count() == before == len(ctx.pois)


def test_points_outside_the_extract_are_missing_not_zero(spark, porto_tables, loaded):
    city, _ = porto_tables
    far = porto_points(city.crs, (-8.70, 41.17, -8.69, 41.18))[:5]  # west Porto, outside the extract
    pdf = pd.DataFrame({"point_id": np.arange(len(far), dtype=np.int64), "mx": far[:, 0], "my": far[:, 1]})
    out = spark.createDataFrame(pdf).transform(add_loaded_context, loaded, phi_m=city.phi_m).toPandas()
    assert len(out) == len(far) > 0
    assert out["road_missing"].all()
    assert np.stack(out["poi_missing"].to_numpy()).all()
    assert np.isnan(np.stack(out["poi"].to_numpy())).all()


def test_uncovered_categories_are_missing(spark, porto_tables, loaded, sample_points):
    city, _ = porto_tables
    covered = ["food", "education", "health", "transport", "parking", "office_services", "other"]  # SF's
    pdf = pd.DataFrame({"point_id": [0, 1], "mx": sample_points[:2, 0], "my": sample_points[:2, 1]})
    out = (
        spark.createDataFrame(pdf)
        .transform(add_loaded_context, loaded, phi_m=city.phi_m, categories_covered=covered)
        .toPandas()
    )
    missing = np.stack(out["poi_missing"].to_numpy())
    expect = [c not in covered for c in POI_CATEGORIES] + [True]  # the total would undercount
    assert missing.tolist() == [expect, expect]
    poi = np.stack(out["poi"].to_numpy())
    assert np.isnan(poi[missing]).all() and np.isfinite(poi[~missing]).all()


def test_grid_built_with_another_phi_or_taxonomy_is_refused(spark, loaded):
    from dataclasses import replace

    points = spark.createDataFrame([(1, 0.0, 0.0)], "point_id long, mx double, my double")
    with pytest.raises(ValueError, match="built with phi=100.0 m, not 150.0 m"):
        add_loaded_context(points, loaded, phi_m=150.0)
    with pytest.raises(ValueError, match="built with taxonomy poi-v0, this code is " + TAXONOMY_VERSION):
        add_loaded_context(points, replace(loaded, taxonomy_version="poi-v0"), phi_m=100.0)


def test_city_with_osm_but_no_tables_fails_clearly(spark, settings, tmp_path):
    from dataclasses import replace as dc_replace

    from transfertraj.jobs.context_tables import ContextNotBuiltError

    empty = dc_replace(settings, home=tmp_path)
    points = spark.createDataFrame([(1, 0.0, 0.0)], "point_id long, mx double, my double")
    with pytest.raises(ContextNotBuiltError, match="python -m jobs.context_tables --city porto"):
        with_context(points, load_city("porto", settings), empty)


def test_city_without_osm_gets_an_explicit_missing_mask(spark, settings):
    beijing = load_city("beijing", settings)
    points = spark.createDataFrame(
        [(1, 450000.0, 4420000.0), (2, 450100.0, 4420000.0)], "point_id long, mx double, my double"
    )
    out = with_context(points, beijing, settings)
    assert out.columns == ["point_id", "mx", "my", "poi", "poi_missing", "road", "road_missing"]
    rows = out.collect()
    for r in rows:
        assert r.poi_missing == [True] * N_POI and r.road_missing is True
        assert len(r.poi) == N_POI and len(r.road) == N_ROAD
        assert all(np.isnan(v) for v in r.poi + r.road)
    from pyspark.testing import assertSchemaEqual

    assertSchemaEqual(out.schema, add_missing_context(points).schema)


def test_context_passes_other_columns_through(spark, porto_tables, loaded, sample_points):
    city, _ = porto_tables
    points = spark.createDataFrame(
        [(7, float(sample_points[0, 0]), float(sample_points[0, 1]), "trip-a")],
        "point_id long, mx double, my double, trip_id string",
    )
    out = points.transform(add_loaded_context, loaded, phi_m=city.phi_m)
    assert out.columns == ["point_id", "mx", "my", "trip_id", "poi", "poi_missing", "road", "road_missing"]
    from pyspark.testing import assertDataFrameEqual

    assertDataFrameEqual(out.select("point_id", "trip_id"), points.select("point_id", "trip_id"))


def test_lattice_over_the_city_box_holds_the_whole_lattices_values(settings):
    """San Francisco's bundled extract reaches 35 km past the city box (Bay ferry terminals): the lattice
    is built over the box only, and every node it keeps equals the same node of the whole extent's
    lattice, coverage included (compared at 25 m so the whole one builds in seconds)."""
    from transfertraj.jobs.context_density import build_road_lattice
    from transfertraj.jobs.context_tables import box_extent
    from transfertraj.jobs.osm_context import read_osm_context

    sf = load_city("sanfrancisco", settings)
    ctx = read_osm_context(sf, settings)
    args = (
        ctx.roads.geometry.to_numpy(),
        ctx.roads["road_class"].map(ROAD_CLASSES.index).to_numpy(),
        np.column_stack([ctx.pois.geometry.x.to_numpy(), ctx.pois.geometry.y.to_numpy()]),
    )
    whole = build_road_lattice(*args, phi_m=sf.phi_m, lattice_m=25.0)
    extent = box_extent(sf)
    box = build_road_lattice(*args, phi_m=sf.phi_m, lattice_m=25.0, extent=extent)

    assert box.road_m.size * 20 < whole.road_m.size  # the outlying POIs no longer size the lattice
    ny, nx = box.shape
    assert box.x0 <= extent[0] and box.x0 + (nx - 1) * box.step >= extent[2]  # the box, corner nodes included
    assert box.y0 <= extent[1] and box.y0 + (ny - 1) * box.step >= extent[3]
    i, j = round((box.x0 - whole.x0) / box.step), round((box.y0 - whole.y0) / box.step)
    window = (slice(j, j + ny), slice(i, i + nx))
    for name in ("road_m", "nearest_m", "nearest_class", "road_covered", "poi_covered"):
        np.testing.assert_array_equal(getattr(box, name), getattr(whole, name)[window], err_msg=name)
    assert box.road_covered.mean() > 0.5 and box.road_m.sum() > 0  # a real slice, not an empty corner


def test_a_worker_that_cannot_see_the_folder_reads_the_broadcast_bytes(tmp_path):
    """On a cluster an executor may not see the driver's cache folder: it inflates the broadcast NPZ."""
    from types import SimpleNamespace

    from tests.features.test_features import small_context
    from transfertraj.features.context import context_vectors, save_city_context
    from transfertraj.jobs.context_density import SharedContext, worker_context

    ctx = small_context(np.random.default_rng(6))
    npz = save_city_context(ctx, tmp_path / "city.npz")
    bc = SimpleNamespace(value=npz.read_bytes())
    remote = worker_context(SharedContext(bc, "remote", str(tmp_path / "not-on-this-machine.mapped")))
    xy = np.column_stack([np.linspace(500_000, 500_300, 300), np.linspace(4_550_000, 4_550_200, 300)])
    want = context_vectors(xy, ctx.lattice, None, phi_m=100.0, category_missing=[False] * N_POI)
    got = context_vectors(xy, remote[0].lattice, None, phi_m=100.0, category_missing=[False] * N_POI)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)
    assert remote[1] is not None  # the POI index built in the worker
