"""Road-path interpolation for TR: the hidden points placed along the shortest drive path between their
kept neighbours, instead of on the straight line.

    from transfertraj.model.road_paths import RoadGraph, road_graph, tr_road_path_interpolation
    graph, version = road_graph(settings, "porto")         # the lake's context_roads, cached per city/version
    graph = RoadGraph.from_lines(lines)                    # or from LineStrings (metres, the city's CRS)
    graph.save("roads_porto.npz"); RoadGraph.load("roads_porto.npz")   # what a registered model carries
    recovered = tr_road_path_interpolation(data, rows, mu=8, graphs={"porto": graph})
    # DataFrame: row, point, pred_mx, pred_my, on_road (False where it fell back to the straight line)

A taxi between two observed points 2 minutes apart drove along streets, not across blocks: where the
straight line cuts a corner, the shortest path on the drive graph goes round it. The baseline is naive
on purpose (the issue's measured version: nearest node, shortest path by length, placed by time), so it
says what the map alone gives before any learning:
- the graph has a node at every vertex of every road LineString of `context_roads` (jobs/context_tables
  writes them in the city's metric CRS, the same CRS as the features' metric positions), edges between
  consecutive vertices weighted by their length, undirected (the context's roads are; one-way streets
  are not modelled);
- each kept neighbour snaps to its nearest node (scipy cKDTree); the path runs observed point -> its
  node -> shortest path -> the other node -> observed point;
- each hidden point sits at the fraction of the path length equal to its fraction of the time between
  the neighbours (minutes since start; like `baselines.tr_linear_interpolation(by="time")` it reads the
  hidden points' timestamps, equal timestamps fall back to the point index);
- it falls back to the straight line when a neighbour is more than `max_snap_m` from any node, both snap
  to the same node, or no path joins them within `detour` times the straight distance.
Shortest paths come from scipy.sparse.csgraph.dijkstra on the nodes that such a path can pass through
(an ellipse round the two nodes, `shortest_paths`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from transfertraj.model.baselines import tr_kept
from transfertraj.model.trajectory_data import TrajectoryData

MAX_SNAP_M = 100.0  # a GPS fix farther than this from every road vertex is off the map (or the extract)
DETOUR = 3.0  # a shortest path longer than this times the straight distance (+ 2 snaps) is not the route
GRAPH_FORMAT = "transfertraj-road-graph-1"  # RoadGraph.save / load
SEARCH_DETOURS = (1.35, 2.0)  # ellipses searched before a pair's own limit (shortest_paths)


@dataclass(frozen=True)
class RoadGraph:
    """A drive graph: node positions (metres, the city's metric CRS) and a symmetric sparse length matrix."""

    xy: np.ndarray  # (V, 2) float64
    lengths: object  # scipy.sparse.csr_matrix (V, V), metres
    tree: object  # scipy.spatial.cKDTree over xy

    @classmethod
    def from_lines(cls, lines, *, merge_m: float = 0.01) -> RoadGraph:
        """Graph of LineStrings (shapely, or (n, 2) coordinate arrays). Vertices closer than `merge_m`
        are one node: two roads meeting at an OSM node share its projected coordinates."""
        import shapely
        from scipy.spatial import cKDTree

        coords = [
            np.asarray(shapely.get_coordinates(g) if hasattr(g, "geom_type") else g, dtype=np.float64)[:, :2]
            for g in lines
        ]
        coords = [c for c in coords if len(c) >= 2]
        if not coords:
            raise ValueError("no road LineStrings with two or more vertices")
        pts = np.concatenate(coords)  # (P, 2) every vertex of every line
        same_line = np.ones(len(pts) - 1, bool)  # (P-1,) vertex i and i+1 belong to one line
        same_line[np.cumsum([len(c) for c in coords])[:-1] - 1] = False
        keys = np.round(pts / merge_m).astype(np.int64)
        _, first, node = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        node = node.ravel()  # (P,) node of each vertex
        xy = pts[first]  # (V, 2)
        a, b = node[:-1][same_line], node[1:][same_line]
        w = np.linalg.norm(xy[a] - xy[b], axis=1)
        keep = a != b
        a, b, w = a[keep], b[keep], np.maximum(w[keep], 1e-6)  # csgraph reads an explicit 0 as "no edge"
        return cls(xy=xy, lengths=_symmetric_shortest(a, b, w, len(xy)), tree=cKDTree(xy))

    @property
    def n_nodes(self) -> int:
        return len(self.xy)

    def save(self, path) -> Path:
        """The graph as a compressed NPZ (nodes and each edge once): what a registered model carries, so
        serving builds the same graph without the lake (`load`)."""
        from scipy.sparse import triu

        upper = triu(self.lengths, k=1).tocoo()
        path = Path(path)
        np.savez_compressed(path, format=np.array(GRAPH_FORMAT), xy=self.xy, a=upper.row, b=upper.col, w=upper.data)
        return path

    @classmethod
    def load(cls, path) -> RoadGraph:
        """Inverse of `save`: the same nodes, the same lengths."""
        from scipy.spatial import cKDTree

        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != GRAPH_FORMAT:
                raise ValueError(f"{path} is not a {GRAPH_FORMAT} file (format {z['format']})")
            xy = z["xy"]
            return cls(xy=xy, lengths=_symmetric_shortest(z["a"], z["b"], z["w"], len(xy)), tree=cKDTree(xy))

    @cached_property
    def components(self) -> np.ndarray:
        """(V,) connected component of each node (two nodes of different ones have no path)."""
        from scipy.sparse.csgraph import connected_components

        return connected_components(self.lengths, directed=False)[1]

    @cached_property
    def ellipses(self) -> _EllipseIndex:
        """The cell index shortest_paths searches, built on first use (once per graph)."""
        return _EllipseIndex(self)


def _symmetric_shortest(a, b, w, n):
    """Symmetric csr matrix keeping the shortest of parallel edges (coo -> csr would add them up)."""
    from scipy.sparse import csr_matrix

    i, j = np.concatenate([a, b]), np.concatenate([b, a])
    ww = np.concatenate([w, w])
    order = np.lexsort((ww, j, i))
    i, j, ww = i[order], j[order], ww[order]
    first = np.ones(len(i), bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return csr_matrix((ww[first], (i[first], j[first])), shape=(n, n))


class _EllipseIndex:
    """Where to look for a path: the graph's nodes bucketed in square cells, and the subgraph of the nodes
    inside an ellipse.

    Why an ellipse: an edge is as long as the straight line between its ends, so every node of a path of
    length <= limit between nodes a and b has |p - a| + |p - b| <= limit. Dijkstra on the nodes inside that
    ellipse finds the same shortest path as on the whole city graph whenever one within the limit exists,
    and explores a few hundred nodes instead of every node within `limit` of a (the whole-graph version,
    64 sources per call, spent most of its time on dense (64, V) arrays)."""

    def __init__(self, graph: RoadGraph, cell_m: float = 250.0):
        self.graph, self.cell_m = graph, cell_m
        self.low = graph.xy.min(axis=0)
        ij = np.floor((graph.xy - self.low) / cell_m).astype(np.int64)  # (V, 2) cell of each node
        self.shape = ij.max(axis=0) + 1  # (nx, ny)
        key = ij[:, 1] * self.shape[0] + ij[:, 0]
        self.order = np.argsort(key, kind="stable")  # nodes by cell, row by row
        self.start = np.searchsorted(key[self.order], np.arange(self.shape[0] * self.shape[1] + 1))
        self.local = np.full(graph.n_nodes, -1, np.int64)  # node -> its index in the current subgraph

    def nodes(self, a: np.ndarray, b: np.ndarray, limit: float) -> np.ndarray:
        """Sorted nodes p with |p - a| + |p - b| <= limit."""
        (ax, ay), (bx, by) = a.tolist(), b.tolist()  # scalars: plain floats cost less than numpy's per call
        semi_major, focal = limit / 2, math.hypot(bx - ax, by - ay) / 2
        semi_minor = math.sqrt(max(semi_major**2 - focal**2, 0.0))
        cos, sin = ((bx - ax) / (2 * focal), (by - ay) / (2 * focal)) if focal > 0 else (1.0, 0.0)
        half_x = math.hypot(semi_major * cos, semi_minor * sin)  # the ellipse's bounding box
        half_y = math.hypot(semi_major * sin, semi_minor * cos)
        (cx, cy), (nx, ny) = ((ax + bx) / 2 - self.low[0], (ay + by) / 2 - self.low[1]), self.shape.tolist()
        x0, x1 = (min(max(int(math.floor(v / self.cell_m)), 0), nx - 1) for v in (cx - half_x, cx + half_x))
        y0, y1 = (min(max(int(math.floor(v / self.cell_m)), 0), ny - 1) for v in (cy - half_y, cy + half_y))
        rows = np.arange(y0, y1 + 1) * nx
        candidates = self.order[_ranges(self.start[rows + x0], self.start[rows + x1 + 1])]
        p = self.graph.xy[candidates]
        inside = np.hypot(p[:, 0] - ax, p[:, 1] - ay) + np.hypot(p[:, 0] - bx, p[:, 1] - by) <= limit
        return np.sort(candidates[inside])

    def subgraph(self, nodes: np.ndarray):
        """The length matrix restricted to `nodes` (sorted), in their order."""
        from scipy.sparse import csr_matrix

        lengths = self.graph.lengths
        at = _ranges(lengths.indptr[nodes], lengths.indptr[nodes + 1])  # the rows' stored edges
        self.local[nodes] = np.arange(len(nodes))
        to = self.local[lengths.indices[at]]
        self.local[nodes] = -1
        keep = to >= 0
        row = np.repeat(np.arange(len(nodes)), np.diff(lengths.indptr)[nodes])[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=len(nodes)))])
        return csr_matrix((lengths.data[at][keep], to[keep], indptr), shape=(len(nodes), len(nodes)))

    def path(self, s: int, t: int, limit: float) -> np.ndarray | None:
        """Shortest path s -> t (node sequence) if it is at most `limit` long, else None."""
        from scipy.sparse.csgraph import dijkstra

        nodes = self.nodes(self.graph.xy[s], self.graph.xy[t], limit)
        ls, lt = np.searchsorted(nodes, [s, t])
        if max(ls, lt) >= len(nodes) or nodes[ls] != s or nodes[lt] != t:  # a limit shorter than the straight line
            return None
        dist, pred = dijkstra(self.subgraph(nodes), indices=int(ls), return_predecessors=True, limit=limit)
        if not np.isfinite(dist[lt]) or dist[lt] > limit:
            return None
        path = [int(lt)]
        while path[-1] != ls:
            path.append(int(pred[path[-1]]))
        return nodes[path[::-1]]


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The concatenated integer ranges starts[i]..ends[i]-1."""
    n = ends - starts
    return np.repeat(starts - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(n.sum())


def shortest_paths(graph: RoadGraph, pairs: np.ndarray, limits: np.ndarray) -> list[np.ndarray | None]:
    """Node sequences of the shortest paths of (source, target) node pairs, None where the target is
    farther than that pair's limit (metres along the roads) or unreachable.

    Each pair searches growing ellipses, SEARCH_DETOURS times the straight line (half of Porto's TR paths
    are within 1.16 of it, 90 % within 1.5), then its own limit, and stops at the first that holds a path:
    a path found within a smaller limit is the shortest overall, so the answer is the same as one search
    with the pair's limit. Nodes of different connected components have no path: not searched."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    limits = np.asarray(limits, dtype=np.float64).reshape(-1)
    index, component = graph.ellipses, graph.components
    out: list[np.ndarray | None] = [None] * len(pairs)
    for p, ((s, t), limit) in enumerate(zip(pairs.tolist(), limits.tolist())):
        if component[s] != component[t]:
            continue
        straight = float(np.linalg.norm(graph.xy[s] - graph.xy[t]))
        for bound in [*(r * straight + 50.0 for r in SEARCH_DETOURS), limit]:
            out[p] = index.path(s, t, min(bound, limit))
            if out[p] is not None or bound >= limit:
                break
    return out


def place_along(polyline: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """(k, 2) points at `fractions` (0..1) of the polyline's length (linear in length along it)."""
    seg = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return np.repeat(polyline[:1], len(fractions), axis=0)
    at = np.clip(fractions, 0.0, 1.0) * s[-1]
    return np.stack([np.interp(at, s, polyline[:, 0]), np.interp(at, s, polyline[:, 1])], axis=1)


@dataclass(frozen=True)
class RoadPlacements:
    """Every hidden point of TR(mu), placed on the road path and on the straight line (same fraction)."""

    row: np.ndarray  # (K,) int64 row of data
    point: np.ndarray  # (K,) int64 index in the trajectory
    road: np.ndarray  # (K, 2) float64 metres, city CRS: along the road path (the line where none was found)
    line: np.ndarray  # (K, 2) float64 metres, city CRS: along the straight line
    on_road: np.ndarray  # (K,) bool


def road_placements(
    data: TrajectoryData,
    rows,
    *,
    mu: int,
    graphs: dict[str, RoadGraph],
    max_snap_m: float = MAX_SNAP_M,
    detour: float = DETOUR,
) -> RoadPlacements:
    """The hidden points of TR(mu) on `rows`, trajectory by trajectory, each in point order. A city without
    a graph in `graphs` gets the straight line everywhere (on_road False)."""
    segs = []  # (row, a, b, hidden indices, fractions)
    for row in rows:
        row = int(row)
        lo, hi = data.offsets[row], data.offsets[row + 1]
        n = hi - lo
        kept = np.flatnonzero(tr_kept(n, mu))
        axis = data.time[lo:hi, 3].astype(np.float64)
        if np.any(np.diff(axis[kept]) <= 0):
            axis = np.arange(n, dtype=np.float64)  # duplicate timestamps: no time order to follow
        for a, b in zip(kept[:-1], kept[1:]):
            if b - a > 1:
                hidden = np.arange(a + 1, b)
                segs.append((row, a, b, hidden, (axis[hidden] - axis[a]) / (axis[b] - axis[a])))
    if not segs:
        empty = np.zeros((0, 2))
        return RoadPlacements(np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty, np.zeros(0, bool))
    seg_row = np.array([s[0] for s in segs], dtype=np.int64)
    pa = data.mxy[data.offsets[seg_row] + np.array([s[1] for s in segs])]  # (S, 2) kept neighbour before
    pb = data.mxy[data.offsets[seg_row] + np.array([s[2] for s in segs])]  # (S, 2) ... and after
    paths: list[np.ndarray | None] = [None] * len(segs)
    for city in np.unique(data.city[seg_row]):
        graph = graphs.get(str(city))
        if graph is None:
            continue
        sel = np.flatnonzero(data.city[seg_row] == city)
        da, na = graph.tree.query(pa[sel])
        db, nb = graph.tree.query(pb[sel])
        ok = (da <= max_snap_m) & (db <= max_snap_m) & (na != nb)
        straight = np.linalg.norm(pb[sel] - pa[sel], axis=1)
        limits = detour * straight + 2 * max_snap_m
        found = shortest_paths(graph, np.stack([na[ok], nb[ok]], axis=1), limits[ok])
        for i, nodes in zip(sel[ok], found):
            if nodes is not None:
                paths[i] = np.concatenate([pa[i : i + 1], graph.xy[nodes], pb[i : i + 1]])
    road = np.concatenate(
        [place_along(p if p is not None else np.stack([a, b]), s[4]) for p, a, b, s in zip(paths, pa, pb, segs)]
    )
    counts = [len(s[3]) for s in segs]
    on_road = np.repeat([p is not None for p in paths], counts)
    frac = np.clip(np.concatenate([s[4] for s in segs]), 0.0, 1.0)[:, None]
    a, b = np.repeat(pa, counts, axis=0), np.repeat(pb, counts, axis=0)
    line = np.where(on_road[:, None], a + frac * (b - a), road)  # off the road: the very same points
    return RoadPlacements(
        row=np.repeat(seg_row, counts),
        point=np.concatenate([s[3] for s in segs]).astype(np.int64),
        road=road,
        line=line,
        on_road=on_road,
    )


def tr_road_path_interpolation(
    data: TrajectoryData,
    rows,
    *,
    mu: int,
    graphs: dict[str, RoadGraph],
    max_snap_m: float = MAX_SNAP_M,
    detour: float = DETOUR,
) -> pd.DataFrame:
    """Every hidden point of TR(mu) placed along the road path between its kept neighbours.

    Returns one row per hidden point: row, point, pred_mx, pred_my, on_road. A city without a graph in
    `graphs` gets the straight line everywhere (on_road False)."""
    placed = road_placements(data, rows, mu=mu, graphs=graphs, max_snap_m=max_snap_m, detour=detour)
    return pd.DataFrame(
        {
            "row": placed.row,
            "point": placed.point,
            "pred_mx": placed.road[:, 0],
            "pred_my": placed.road[:, 1],
            "on_road": placed.on_road,
        }
    )


# ----------------------------------------------------------------------------------------- the lake's roads

_GRAPHS: dict[tuple[str, str, int], RoadGraph] = {}


def road_graph(settings, city: str, version: int | None = None) -> tuple[RoadGraph | None, int | None]:
    """(drive graph of a city's `context_roads` rows, the table version read), latest version or
    `version`, built once per (table, city, version) in a process; graph None when the city has no
    roads in the lake (no OSM source)."""
    import shapely

    from transfertraj.feature_store.reader import TableNotFound, open_table, read_table
    from transfertraj.feature_store.tables import table_path

    path = table_path(settings, "context_roads")
    try:
        read = open_table(path, version).version()
    except TableNotFound:
        return None, None
    key = (path, city, read)
    if key not in _GRAPHS:
        table, _ = read_table(settings, "context_roads", city=city, version=read, columns=["geometry_wkb"])
        if table.num_rows == 0:
            return None, read
        wkb = table.column("geometry_wkb").to_numpy(zero_copy_only=False)
        _GRAPHS[key] = RoadGraph.from_lines(shapely.from_wkb(wkb))
    return _GRAPHS[key], read
