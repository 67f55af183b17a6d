"""The per-point context lookups are the same numbers as the plain computations they replace.

POI counts: the cell index against a KD-tree pair search (every POI at sqrt(dx^2 + dy^2) <= phi), with
points placed at exactly phi from POIs and on cell edges. Road values: the flat-index bilinear form
against the same formula read node by node. Inputs are GENERATED (random lattice and POIs).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from transfertraj.features.context import (
    CityContext,
    RoadLattice,
    interpolate,
    poi_counts,
    poi_index,
)
from transfertraj.features.taxonomy import POI_CATEGORIES, ROAD_CLASSES

PHI = 100.0


def generated_context(rng, n_poi: int = 3000) -> CityContext:
    ny, nx = 120, 160  # 600 x 800 m at 5 m
    lattice = RoadLattice(
        x0=500_000.0,
        y0=4_550_000.0,
        step=5.0,
        phi_m=PHI,
        road_m=rng.uniform(0, 300, (ny, nx, len(ROAD_CLASSES))).astype(np.float16),
        nearest_m=rng.uniform(0, 500, (ny, nx)).astype(np.float16),
        nearest_class=rng.integers(-1, len(ROAD_CLASSES), (ny, nx)).astype(np.int8),
        road_covered=rng.random((ny, nx)) > 0.2,
        poi_covered=rng.random((ny, nx)) > 0.2,
    )
    # half on whole metres (so that points 60, 80 m away are at exactly phi), half anywhere
    grid_pois = np.column_stack([rng.integers(0, 800, n_poi // 2), rng.integers(0, 600, n_poi // 2)]).astype(float)
    free_pois = np.column_stack([rng.uniform(-50, 850, n_poi // 2), rng.uniform(-50, 650, n_poi // 2)])
    poi_xy = np.concatenate([grid_pois, free_pois]) + [500_000.0, 4_550_000.0]
    return CityContext(lattice, poi_xy, rng.integers(0, len(POI_CATEGORIES), len(poi_xy)), "poi-v1")


def kdtree_counts(xy, ctx: CityContext) -> np.ndarray:
    """The reference: all pairs within phi from two KD-trees, counted per point and category."""
    n, n_cat = len(xy), len(POI_CATEGORIES)
    pairs = cKDTree(xy).sparse_distance_matrix(cKDTree(ctx.poi_xy), PHI, output_type="ndarray")
    keep = pairs["v"] <= PHI
    idx = pairs["i"][keep] * n_cat + ctx.poi_category[pairs["j"][keep]]
    return np.bincount(idx, minlength=n * n_cat).reshape(n, n_cat)


def test_poi_counts_equal_a_kdtree_pair_search():
    rng = np.random.default_rng(0)
    ctx = generated_context(rng)
    origin = np.array([500_000.0, 4_550_000.0])
    anywhere = origin + np.column_stack([rng.uniform(0, 795, 20_000), rng.uniform(0, 595, 20_000)])
    at_phi = ctx.poi_xy[: ctx.poi_xy.shape[0] // 2][rng.integers(0, 1500, 5000)] + [60.0, 80.0]  # exactly 100 m
    on_edges = origin + rng.integers(0, 79, (5000, 2)) * 10.0  # cell corners of the 10 m index
    xy = np.concatenate([anywhere, at_phi, on_edges])
    inside = (xy[:, 0] <= origin[0] + 795) & (xy[:, 1] <= origin[1] + 595)
    xy = xy[inside]
    index = poi_index(ctx)
    got = poi_counts(xy, index, PHI)
    want = kdtree_counts(xy, ctx)
    np.testing.assert_array_equal(got, want)
    assert want.sum() > 100 * len(xy)  # dense enough that the rings are exercised, not zeros against zeros
    exact = cKDTree(xy).sparse_distance_matrix(cKDTree(ctx.poi_xy), PHI, output_type="ndarray")["v"] == PHI
    assert exact.sum() >= 1000  # the boundary case is really tested: pairs at exactly phi, counted


def test_poi_counts_outside_the_lattice_are_zero_and_phi_is_checked():
    rng = np.random.default_rng(1)
    ctx = generated_context(rng, n_poi=200)
    index = poi_index(ctx)
    far = np.array([[400_000.0, 4_550_000.0], [500_000.0, 4_650_000.0]])
    assert poi_counts(far, index, PHI).sum() == 0
    assert poi_index(CityContext(ctx.lattice, np.zeros((0, 2)), np.zeros(0, np.int64), "poi-v1")) is None
    with pytest.raises(ValueError, match="built for phi=100.0 m, not 150.0 m"):
        poi_counts(far, index, 150.0)


def test_interpolate_is_the_bilinear_form_node_by_node():
    rng = np.random.default_rng(2)
    lat = generated_context(rng, n_poi=10).lattice
    ny, nx = lat.shape
    x = lat.x0 + rng.uniform(-20, (nx - 1) * lat.step + 20, 3000)
    y = lat.y0 + rng.uniform(-20, (ny - 1) * lat.step + 20, 3000)
    lengths, dist, cls, road_ok, poi_ok = interpolate(lat, x, y)
    for p in rng.choice(3000, 300, replace=False):
        fx, fy = (x[p] - lat.x0) / lat.step, (y[p] - lat.y0) / lat.step
        ix, iy = int(np.clip(np.floor(fx), 0, nx - 2)), int(np.clip(np.floor(fy), 0, ny - 2))
        ax, ay = np.clip(fx - ix, 0.0, 1.0), np.clip(fy - iy, 0.0, 1.0)
        w = [(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay]
        nodes = [(iy, ix), (iy, ix + 1), (iy + 1, ix), (iy + 1, ix + 1)]
        want = sum(lat.road_m[n].astype(np.float64) * wk for n, wk in zip(nodes, w, strict=True))
        np.testing.assert_array_equal(lengths[p], want)
        assert dist[p] == sum(float(lat.nearest_m[n]) * wk for n, wk in zip(nodes, w, strict=True))
        jx, jy = int(np.clip(np.rint(fx), 0, nx - 1)), int(np.clip(np.rint(fy), 0, ny - 1))
        inside = 0 <= fx <= nx - 1 and 0 <= fy <= ny - 1
        assert cls[p] == lat.nearest_class[jy, jx] and road_ok[p] == (inside and lat.road_covered[jy, jx])
        assert poi_ok[p] == (inside and lat.poi_covered[jy, jx])
