"""Road-path interpolation (TR): a toy street map where the road beats the straight line, the fall-backs,
and the real Porto drive graph from the bundled OSM extract."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from tests.model.generated import generated_features
from transfertraj.model.baselines import tr_linear_interpolation
from transfertraj.model.road_paths import (
    SEARCH_DETOURS,
    RoadGraph,
    place_along,
    shortest_paths,
    tr_road_path_interpolation,
)
from transfertraj.model.trajectory_data import load_features

# A 3 x 3 block of streets, 100 m apart, with the river-side streets of the upper-left blocks missing:
# from (0, 0) to (200, 200) the only route is east along y = 0, then north along x = 200 (an L).
STREETS = [
    [(0, 0), (100, 0), (200, 0)],
    [(200, 0), (200, 100), (200, 200)],
    [(0, 0), (0, 100)],
    [(0, 100), (100, 100)],
    [(100, 200), (200, 200)],
]


def l_trip(mu_points: int = 9):
    """GENERATED: one trip driving the L, a point every 50 m and every 15 s."""
    data = load_features(generated_features(1, min_points=mu_points, max_points=mu_points, city="toy"), 0)
    along = np.linspace(0, 400, mu_points)
    mxy = np.where(along[:, None] <= 200, np.stack([along, 0 * along], 1), np.stack([200 + 0 * along, along - 200], 1))
    time = data.time.copy()
    time[:, 3] = np.arange(mu_points) / 4.0
    return replace(data, mxy=mxy.astype(np.float64), time=time)


def test_the_graph_joins_lines_at_shared_vertices():
    g = RoadGraph.from_lines([np.array(s, float) for s in STREETS])
    assert g.n_nodes == 8  # 9 grid corners less (0, 200)
    assert g.lengths.nnz == 2 * 7  # 7 street pieces, both directions


def test_road_path_beats_the_straight_line_on_an_l_shaped_trip():
    data = l_trip()
    graph = RoadGraph.from_lines([np.array(s, float) for s in STREETS])
    road = tr_road_path_interpolation(data, [0], mu=8, graphs={"toy": graph})
    line = tr_linear_interpolation(data, [0], mu=8, by="time")
    truth = data.mxy[road["point"].to_numpy()]
    road_err = np.linalg.norm(road[["pred_mx", "pred_my"]].to_numpy() - truth, axis=1)
    line_err = np.linalg.norm(line[["pred_mx", "pred_my"]].to_numpy() - truth, axis=1)
    assert road["on_road"].all() and list(road["point"]) == list(range(1, 8))
    np.testing.assert_allclose(road_err, 0, atol=1e-6)  # the taxi drove the road at constant speed
    assert line_err.max() > 100  # the straight line cuts the corner: 141 m off at the corner


def test_falls_back_to_the_straight_line_off_the_map_or_without_a_path():
    data = l_trip()
    line = tr_linear_interpolation(data, [0], mu=8, by="time")[["pred_mx", "pred_my"]].to_numpy()
    far = RoadGraph.from_lines([np.array([(5000, 5000), (5100, 5000)], float), np.array([(0, 0), (0, 50)], float)])
    broken = RoadGraph.from_lines([np.array(s, float) for s in STREETS if s[0] != (200, 0)])  # no way north
    for graphs in ({"toy": far}, {"toy": broken}, {}):
        out = tr_road_path_interpolation(data, [0], mu=8, graphs=graphs)
        assert not out["on_road"].any()
        np.testing.assert_allclose(out[["pred_mx", "pred_my"]].to_numpy(), line, atol=1e-9)


def test_paths_beyond_the_detour_limit_are_refused():
    g = RoadGraph.from_lines([np.array(s, float) for s in STREETS])
    a, b = g.tree.query([[0, 0], [200, 200]])[1]
    ok, refused = shortest_paths(g, np.array([[a, b], [a, b]]), np.array([400.0, 399.0]))
    assert ok is not None and len(ok) == 5 and refused is None


def test_place_along_is_linear_in_length():
    line = np.array([[0, 0], [100, 0], [100, 300]], float)
    np.testing.assert_allclose(
        place_along(line, np.array([0, 0.25, 0.5, 1.0])), [[0, 0], [100, 0], [100, 100], [100, 300]]
    )


@pytest.fixture(scope="module")
def porto_graph(tmp_path_factory):
    """REAL: the drive roads of the bundled Porto OSM extract cut to central Porto (as jobs/osm_context
    reads them), in the city's metric CRS."""
    from tests.transfertraj.registry_fixtures import BOX, REPO
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.osm_context import cut_osm_extract, read_osm_xml

    extract = tmp_path_factory.mktemp("porto") / "porto_box.osm"
    cut_osm_extract(REPO / "data" / "porto" / "porto_central.osm.bz2", extract, BOX)
    return RoadGraph.from_lines(read_osm_xml(extract, load_city("porto").crs).roads.geometry.to_numpy())


def whole_graph_path(graph: RoadGraph, s: int, t: int, limit: float):
    """The reference: dijkstra over the whole graph (what shortest_paths did before its ellipse search)."""
    from scipy.sparse.csgraph import dijkstra

    dist, pred = dijkstra(graph.lengths, indices=s, return_predecessors=True, limit=limit)
    if not np.isfinite(dist[t]) or dist[t] > limit:
        return None
    path = [t]
    while path[-1] != s:
        path.append(int(pred[path[-1]]))
    return path[::-1]


def test_the_ellipse_search_finds_the_whole_graph_paths_on_real_roads(porto_graph):
    """REAL graph, random node pairs: the same path (or the same refusal) as dijkstra over the whole graph,
    for limits that the first, small ellipse satisfies, that need the pair's own limit, and that refuse."""
    rng = np.random.default_rng(0)
    g = porto_graph
    a = rng.integers(g.n_nodes, size=300)
    b = g.tree.query(g.xy[a] + rng.normal(0, 400, size=(300, 2)))[1]  # partners a few hundred metres away
    straight = np.linalg.norm(g.xy[a] - g.xy[b], axis=1)
    limits = straight * rng.choice([1.05, 1.3, 2.0, 3.0, 5.0], size=300) + rng.choice([0.0, 200.0], size=300)
    found = shortest_paths(g, np.stack([a, b], 1), limits)

    def straight_nodes(s, t):
        return np.linalg.norm(g.xy[s] - g.xy[t])

    kinds = set()
    for (s, t, limit), path in zip(zip(a, b, limits), found):
        ref = whole_graph_path(g, int(s), int(t), float(limit))
        assert (path is None) == (ref is None)
        if ref is not None:
            assert path.tolist() == ref
            length = g.lengths[path[:-1], path[1:]].sum()
            kinds.add("a detour ellipse" if length <= SEARCH_DETOURS[-1] * straight_nodes(s, t) + 50 else "own limit")
        else:
            kinds.add("refused")
    assert kinds == {"a detour ellipse", "own limit", "refused"}


def test_the_porto_extract_gives_a_graph_that_routes_real_trips(porto_graph):
    """REAL: the bundled taxi trips that start in central Porto, projected to the city's metric CRS."""
    import pandas as pd
    from pyproj import Transformer

    from tests.transfertraj.registry_fixtures import BOX
    from transfertraj.core.city_config import load_city

    city = load_city("porto")
    graph = porto_graph
    assert graph.n_nodes > 1000
    to_m = Transformer.from_crs("EPSG:4326", city.crs, always_xy=True)
    data = load_features(generated_features(1, min_points=9, max_points=9, city="porto"), 0)
    trips = [np.array(json.loads(p), float) for p in pd.read_csv(city.raw.path, nrows=300)["POLYLINE"]]
    inside = [
        t[:17]
        for t in trips
        if len(t) >= 17
        and (BOX[0] < t[:17, 0]).all()
        and (t[:17, 0] < BOX[2]).all()
        and (BOX[1] < t[:17, 1]).all()
        and (t[:17, 1] < BOX[3]).all()
    ]
    assert len(inside) >= 3
    on_road = []
    for ll in inside:
        mx, my = to_m.transform(ll[:, 0], ll[:, 1])
        time = np.zeros((len(ll), 4), np.float32)
        time[:, 3] = np.arange(len(ll)) / 4.0  # 15 s sampling
        trip = replace(data, offsets=np.array([0, len(ll)]), mxy=np.stack([mx, my], 1), time=time)
        out = tr_road_path_interpolation(trip, [0], mu=8, graphs={"porto": graph})
        assert len(out) == 14 and np.isfinite(out[["pred_mx", "pred_my"]].to_numpy()).all()
        on_road.append(out["on_road"].mean())
    assert np.mean(on_road) > 0.5  # central Porto is all streets: most gaps find a path


def test_a_saved_graph_loads_as_the_same_graph(tmp_path, porto_graph):
    loaded = RoadGraph.load(porto_graph.save(tmp_path / "roads.npz"))
    np.testing.assert_array_equal(loaded.xy, porto_graph.xy)
    assert (loaded.lengths != porto_graph.lengths).nnz == 0
