"""Per-point POI counts and road densities from a city's context (road lattice + POIs), in numpy.

    ctx = city_context(pois, grid)                 # Arrow rows of context_pois / context_grid (one city)
    index = poi_index(ctx)                         # once per process (about 1 s for Porto)
    poi, poi_missing, road, road_missing = context_vectors(xy, ctx.lattice, index,
                                                           phi_m=100.0, category_missing=covered_mask(None))
    save_city_context(ctx, "porto.npz"); ctx = load_city_context("porto.npz")   # what a logged model carries

The vectors (P, R from transfertraj.features.taxonomy):

| column       | shape  | meaning |
|--------------|--------|---------|
| poi          | (n, P) | log1p(number of POIs of each category within phi), last = log1p(total); NaN where missing |
| poi_missing  | (n, P) | the source does not cover that category here |
| road         | (n, R) | log1p(metres of road per class within phi) (8), min(d, cap)/cap to the nearest road (1), |
|              |        | one-hot class of the nearest road within cap (8); NaN where missing |
| road_missing | (n,)   | no road data here |

POI counts are exact (every POI at Euclidean distance <= phi), read from a cell index (PoiIndex: counts
per cell for the POIs inside every point's disc, a distance test for those near its edge). Road lengths
are the bilinear interpolation of the 4 lattice nodes around the point; how the lattice is built and its
tolerance: jobs/context_density.py. The lattice is used at the precision the
Spark job broadcasts it with (float16 lengths and distances), so the compact form a model carries
(`save_city_context`, a compressed NPZ) holds exactly what the job used: no training/serving skew.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from transfertraj.features.taxonomy import N_POI, N_ROAD, POI_CATEGORIES, ROAD_CLASSES

DIST_CAP_M = 500.0  # nearest-road distance is capped (and scaled to [0, 1]) here

ROAD_M_COLUMNS = tuple(f"road_m_{c}" for c in ROAD_CLASSES)
GRID_COLUMNS = (
    "ix",
    "iy",
    "mx",
    "my",
    *ROAD_M_COLUMNS,
    "nearest_m",
    "nearest_class",
    "road_covered",
    "poi_covered",
    "lattice_m",
    "phi_m",
)
POI_COLUMNS = ("category", "mx", "my")
CONTEXT_COLUMNS = ("poi", "poi_missing", "road", "road_missing")
NPZ_FORMAT = "transfertraj-city-context-1"


@dataclass(frozen=True)
class RoadLattice:
    """Dense lattice arrays; node (iy, ix) sits at (x0 + ix * step, y0 + iy * step)."""

    x0: float
    y0: float
    step: float
    phi_m: float
    road_m: np.ndarray  # (NY, NX, n_classes) float: metres of road per class within phi of the node
    nearest_m: np.ndarray  # (NY, NX) float: distance to the nearest road, capped at DIST_CAP_M
    nearest_class: np.ndarray  # (NY, NX) int8: class index of the nearest road, -1 beyond the cap
    road_covered: np.ndarray  # (NY, NX) bool
    poi_covered: np.ndarray  # (NY, NX) bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.nearest_m.shape


@dataclass(frozen=True)
class CityContext:
    """One city's context as numpy: the road lattice and the POIs."""

    lattice: RoadLattice
    poi_xy: np.ndarray  # (n, 2) metres
    poi_category: np.ndarray  # (n,) index into POI_CATEGORIES
    taxonomy_version: str


# ------------------------------------------------------------------------------ Arrow <-> numpy


def lattice_to_arrow(lattice: RoadLattice) -> pa.Table:
    """One row per lattice node (the `context_grid` layout, without city and provenance columns)."""
    ny, nx = lattice.shape
    iy, ix = np.divmod(np.arange(ny * nx, dtype=np.int64), nx)
    cols = {
        "ix": pa.array(ix.astype(np.int32)),
        "iy": pa.array(iy.astype(np.int32)),
        "mx": pa.array(lattice.x0 + ix * lattice.step),
        "my": pa.array(lattice.y0 + iy * lattice.step),
        **{name: pa.array(lattice.road_m[..., c].ravel()) for c, name in enumerate(ROAD_M_COLUMNS)},
        "nearest_m": pa.array(lattice.nearest_m.ravel()),
        "nearest_class": pa.array(lattice.nearest_class.ravel()),
        "road_covered": pa.array(lattice.road_covered.ravel()),
        "poi_covered": pa.array(lattice.poi_covered.ravel()),
        "lattice_m": pa.array(np.full(ny * nx, lattice.step)),
        "phi_m": pa.array(np.full(ny * nx, lattice.phi_m)),
    }
    return pa.table(cols)


def lattice_from_arrow(table: pa.Table) -> RoadLattice:
    """Inverse of lattice_to_arrow (rows in any order); lengths kept as float16 to halve broadcast size."""
    if table.num_rows == 0:
        raise ValueError("the context grid is empty")
    col = {name: table.column(name).to_numpy() for name in GRID_COLUMNS}
    step = float(col["lattice_m"][0])
    phi = float(col["phi_m"][0])
    ix, iy = col["ix"].astype(np.int64), col["iy"].astype(np.int64)
    nx, ny = int(ix.max()) + 1, int(iy.max()) + 1
    if nx * ny != table.num_rows:
        raise ValueError(f"the context grid has {table.num_rows} rows for a {ny} x {nx} lattice (one city only?)")
    x0 = float(col["mx"][0] - ix[0] * step)
    y0 = float(col["my"][0] - iy[0] * step)

    def dense(values, dtype):
        out = np.empty((ny, nx), dtype=dtype)
        out[iy, ix] = values
        return out

    road_m = np.stack([dense(col[name], np.float16) for name in ROAD_M_COLUMNS], axis=-1)
    return RoadLattice(
        x0=x0,
        y0=y0,
        step=step,
        phi_m=phi,
        road_m=road_m,
        nearest_m=dense(col["nearest_m"], np.float16),
        nearest_class=dense(col["nearest_class"], np.int8),
        road_covered=dense(col["road_covered"], bool),
        poi_covered=dense(col["poi_covered"], bool),
    )


def city_context(pois: pa.Table, grid: pa.Table, taxonomy_version: str | None = None) -> CityContext:
    """One city's rows of context_pois (category, mx, my) and context_grid -> CityContext."""
    if grid.num_rows == 0:
        raise ValueError("the context grid has no rows for this city: build the context tables first")
    if taxonomy_version is None:
        taxonomy_version = str(grid.column("taxonomy_version")[0].as_py())
    lattice = lattice_from_arrow(grid)
    poi_xy = np.column_stack(
        [pois.column("mx").to_numpy().astype(np.float64), pois.column("my").to_numpy().astype(np.float64)]
    ).reshape(-1, 2)
    lookup = {c: i for i, c in enumerate(POI_CATEGORIES)}
    cats = pois.column("category").to_pylist()
    unknown = sorted(set(cats) - set(lookup))
    if unknown:
        raise ValueError(f"POIs with categories {unknown} outside the taxonomy {list(POI_CATEGORIES)}")
    poi_cat = np.fromiter((lookup[c] for c in cats), dtype=np.int64, count=len(cats))
    return CityContext(lattice, poi_xy, poi_cat, taxonomy_version)


def save_city_context(ctx: CityContext, path: str | Path) -> Path:
    """The context as one compressed NPZ, exact at the precision the Spark job uses (see module doc).

    Coverage masks are bit-packed; POI categories fit in int8. Porto's 5 M-node lattice is mostly
    zeros (no road within phi) and compresses to a few MB."""
    lat = ctx.lattice
    path = Path(path)
    np.savez_compressed(
        path,
        format=np.array(NPZ_FORMAT),
        taxonomy_version=np.array(ctx.taxonomy_version),
        origin_step_phi=np.array([lat.x0, lat.y0, lat.step, lat.phi_m], dtype=np.float64),
        shape=np.array(lat.shape, dtype=np.int64),
        road_m=lat.road_m.astype(np.float16),
        nearest_m=lat.nearest_m.astype(np.float16),
        nearest_class=lat.nearest_class.astype(np.int8),
        road_covered=np.packbits(lat.road_covered.ravel()),
        poi_covered=np.packbits(lat.poi_covered.ravel()),
        poi_xy=ctx.poi_xy.astype(np.float64),
        poi_category=ctx.poi_category.astype(np.int8),
    )
    return path


def load_city_context(path: str | Path) -> CityContext:
    """Inverse of save_city_context."""
    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != NPZ_FORMAT:
            raise ValueError(f"{path} is not a {NPZ_FORMAT} file (format {z['format']})")
        x0, y0, step, phi = (float(v) for v in z["origin_step_phi"])
        ny, nx = (int(v) for v in z["shape"])

        def unpack(name):
            return np.unpackbits(z[name], count=ny * nx).astype(bool).reshape(ny, nx)

        lattice = RoadLattice(
            x0=x0,
            y0=y0,
            step=step,
            phi_m=phi,
            road_m=z["road_m"],
            nearest_m=z["nearest_m"],
            nearest_class=z["nearest_class"],
            road_covered=unpack("road_covered"),
            poi_covered=unpack("poi_covered"),
        )
        return CityContext(lattice, z["poi_xy"], z["poi_category"].astype(np.int64), str(z["taxonomy_version"]))


def check_context(ctx: CityContext, *, phi_m: float, taxonomy_version: str) -> None:
    """Refuse a context built with another taxonomy or another phi than the features ask for."""
    if ctx.taxonomy_version != taxonomy_version:
        raise ValueError(
            f"the context tables were built with taxonomy {ctx.taxonomy_version}, this code is "
            f"{taxonomy_version}: rebuild them (python -m jobs.context_tables --city ...)"
        )
    if abs(ctx.lattice.phi_m - phi_m) > 1e-9:
        raise ValueError(f"the context grid was built with phi={ctx.lattice.phi_m} m, not {phi_m} m: rebuild it")


POI_CELL_M = 10.0  # cell of the POI index: smaller = fewer POIs measured per point, more memory
_EDGE_MARGIN_M = 1e-3  # cells are widened by this before classifying, so rounding never misplaces a POI


@dataclass(frozen=True)
class PoiIndex:
    """Exact POI counts within phi, per cell of a grid over the lattice's extent.

    For each cell, the POIs within phi of every point of the cell are counted once (`inner`); the POIs
    within phi of some points of the cell only (a ring about cell * sqrt(2) wide at the disc's edge)
    are listed (`edge_*`, CSR by cell) and measured per point with the same distance the KD-tree
    computes, sqrt(dx * dx + dy * dy) <= phi. The result equals a KD-tree pair search (tested), at a
    fraction of its cost: a point reads one row of counts and measures the few POIs of its ring."""

    x0: float
    y0: float
    cell: float
    phi_m: float
    shape: tuple[int, int]  # (cells in y, cells in x)
    inner: (
        np.ndarray
    )  # (cy * cx, P - 1) uint16 (uint32 from 65,536 POIs): POIs of each category within phi of the whole cell
    indptr: np.ndarray  # (cy * cx + 1,) int64: cell c's ring POIs are edge_*[indptr[c]:indptr[c + 1]]
    edge_x: np.ndarray  # (m,) float64: the ring POIs of every cell in turn (a POI is in many rings)
    edge_y: np.ndarray  # (m,) float64
    edge_cat: np.ndarray  # (m,) int64


def poi_index(ctx: CityContext, cell_m: float = POI_CELL_M) -> PoiIndex | None:
    """The POI index of the city (None without POIs); build once per process, query per batch (~1 s)."""
    if not len(ctx.poi_xy):
        return None
    lat, n_cat = ctx.lattice, len(POI_CATEGORIES)
    ny, nx = lat.shape
    cx = int(np.floor((nx - 1) * lat.step / cell_m)) + 1
    cy = int(np.floor((ny - 1) * lat.step / cell_m)) + 1
    phi, eps = lat.phi_m, _EDGE_MARGIN_M
    reach = int(np.ceil(phi / cell_m)) + 1
    offsets = np.arange(-reach, reach + 1)
    inner = np.zeros((cy * cx, n_cat), dtype=np.uint16 if len(ctx.poi_xy) < 2**16 else np.uint32)
    edge_cells, edge_pois = [], []
    for lo in range(0, len(ctx.poi_xy), 2000):  # bounded memory: 2,000 POIs x the cells around each
        xy, cat = ctx.poi_xy[lo : lo + 2000], ctx.poi_category[lo : lo + 2000]
        pi = np.floor((xy[:, 0] - lat.x0) / cell_m).astype(np.int64)
        pj = np.floor((xy[:, 1] - lat.y0) / cell_m).astype(np.int64)
        i = (pi[:, None, None] + offsets[None, None, :]).repeat(len(offsets), 1)
        j = (pj[:, None, None] + offsets[None, :, None]).repeat(len(offsets), 2)
        p = np.broadcast_to(np.arange(len(xy))[:, None, None], i.shape)
        ok = (i >= 0) & (i < cx) & (j >= 0) & (j < cy)
        i, j, p = i[ok], j[ok], p[ok]
        left, bottom = lat.x0 + i * cell_m - eps, lat.y0 + j * cell_m - eps
        right, top = left + cell_m + 2 * eps, bottom + cell_m + 2 * eps
        px, py = xy[p, 0], xy[p, 1]
        near = np.hypot(
            np.maximum(np.maximum(left - px, px - right), 0.0), np.maximum(np.maximum(bottom - py, py - top), 0.0)
        )
        far = np.hypot(np.maximum(px - left, right - px), np.maximum(py - bottom, top - py))
        whole = far <= phi - eps
        ring = (near <= phi + eps) & ~whole
        np.add.at(inner, (j[whole] * cx + i[whole], cat[p[whole]]), 1)
        edge_cells.append(j[ring] * cx + i[ring])
        edge_pois.append(lo + p[ring])
    cells, pois = np.concatenate(edge_cells), np.concatenate(edge_pois)
    order = np.argsort(cells, kind="stable")
    indptr = np.zeros(cy * cx + 1, dtype=np.int64)
    np.cumsum(np.bincount(cells, minlength=cy * cx), out=indptr[1:])
    pois = pois[order]
    return PoiIndex(
        x0=lat.x0,
        y0=lat.y0,
        cell=float(cell_m),
        phi_m=phi,
        shape=(cy, cx),
        inner=inner,
        indptr=indptr,
        edge_x=np.ascontiguousarray(ctx.poi_xy[pois, 0], dtype=np.float64),
        edge_y=np.ascontiguousarray(ctx.poi_xy[pois, 1], dtype=np.float64),
        edge_cat=ctx.poi_category[pois].astype(np.int64),
    )


poi_tree = poi_index  # the name the serving code knows it by (it was a KD-tree before the index)


# ---------------------------------------------------------------------------------- per point


def interpolate(lattice: RoadLattice, x: np.ndarray, y: np.ndarray):
    """Bilinear road lengths and distance, nearest-node class and coverage; outside = not covered.

    Nodes are gathered by flat index (one row gather per corner), the arithmetic is the bilinear form
    w00 * a00 + w10 * a10 + w01 * a01 + w11 * a11 in float64 from the float16 lattice (float32 where
    mapped, features.mapped_context: the same values, so the same result)."""
    ny, nx = lattice.shape
    fx = (x - lattice.x0) / lattice.step
    fy = (y - lattice.y0) / lattice.step
    inside = (fx >= 0) & (fy >= 0) & (fx <= nx - 1) & (fy <= ny - 1)
    ix = np.clip(np.floor(fx).astype(np.int64), 0, nx - 2)
    iy = np.clip(np.floor(fy).astype(np.int64), 0, ny - 2)
    ax = np.clip(fx - ix, 0.0, 1.0)[:, None]
    ay = np.clip(fy - iy, 0.0, 1.0)[:, None]
    w00, w10, w01, w11 = (1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay
    k00 = iy * nx + ix
    k01 = k00 + nx

    def bilinear(a):  # np.take: a row gather 7 times faster than a[k] (numpy 2.4), the same values
        a2 = a.reshape(ny * nx, -1)
        corner = lambda k: np.take(a2, k, axis=0)  # noqa: E731
        return corner(k00) * w00 + corner(k00 + 1) * w10 + corner(k01) * w01 + corner(k01 + 1) * w11

    lengths = bilinear(lattice.road_m)
    dist = bilinear(lattice.nearest_m)[:, 0]
    jx = np.clip(np.rint(fx).astype(np.int64), 0, nx - 1)
    jy = np.clip(np.rint(fy).astype(np.int64), 0, ny - 1)
    node = jy * nx + jx
    cls = np.take(lattice.nearest_class.reshape(-1), node)
    road_ok = inside & np.take(lattice.road_covered.reshape(-1), node)
    poi_ok = inside & np.take(lattice.poi_covered.reshape(-1), node)
    return lengths, dist, cls, road_ok, poi_ok


def poi_counts(xy: np.ndarray, index: PoiIndex | None, phi_m: float) -> np.ndarray:
    """(n, n_categories) exact counts of POIs within phi (distance <= phi) of each point (see PoiIndex).

    Points outside the lattice's extent count 0 (their context is missing anyway)."""
    n, n_cat = len(xy), len(POI_CATEGORIES)
    if n == 0 or index is None:
        return np.zeros((n, n_cat), dtype=np.int64)
    if abs(index.phi_m - phi_m) > 1e-9:
        raise ValueError(f"the POI index was built for phi={index.phi_m} m, not {phi_m} m")
    cy, cx = index.shape
    i = np.floor((xy[:, 0] - index.x0) / index.cell)
    j = np.floor((xy[:, 1] - index.y0) / index.cell)
    on = (i >= 0) & (i < cx) & (j >= 0) & (j < cy)
    cell = np.where(on, j * cx + i, 0).astype(np.int64)
    counts = np.take(index.inner, cell, axis=0).astype(np.int64)  # np.take: see interpolate
    counts[~on] = 0
    start = np.take(index.indptr, cell)
    k = np.where(on, np.take(index.indptr, cell + 1) - start, 0)
    point = np.repeat(np.arange(n), k)
    pos = np.arange(len(point)) + np.repeat(start - (np.cumsum(k) - k), k)
    dx = np.take(index.edge_x, pos) - np.take(np.ascontiguousarray(xy[:, 0]), point)
    dy = np.take(index.edge_y, pos) - np.take(np.ascontiguousarray(xy[:, 1]), point)
    hit = np.sqrt(dx * dx + dy * dy) <= phi_m
    cats = np.take(index.edge_cat, np.compress(hit, pos))
    counts += np.bincount(np.compress(hit, point) * n_cat + cats, minlength=n * n_cat).reshape(n, n_cat)
    return counts


def context_vectors(xy, lattice: RoadLattice, index, poi_category=None, *, phi_m, category_missing):
    """poi (n, P), poi_missing (n, P), road (n, R), road_missing (n,) for points xy (n, 2) in metres.

    `index`: poi_index(ctx), built once; `poi_category` is unused (the index holds the categories) and
    kept for the callers that pass it."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    n = len(xy)
    counts = poi_counts(xy, index, phi_m)
    lengths, dist, cls, road_ok, poi_ok = interpolate(lattice, xy[:, 0], xy[:, 1])

    poi = np.empty((n, N_POI), dtype=np.float32)
    poi[:, :-1] = np.log1p(counts)
    poi[:, -1] = np.log1p(counts.sum(1))
    poi_missing = np.asarray(category_missing, dtype=bool)[None, :] | ~poi_ok[:, None]
    poi[poi_missing] = np.nan

    n_cls = len(ROAD_CLASSES)
    road = np.zeros((n, N_ROAD), dtype=np.float32)
    road[:, :n_cls] = np.log1p(np.maximum(lengths, 0.0))
    road[:, n_cls] = np.minimum(dist, DIST_CAP_M) / DIST_CAP_M
    has_nearest = cls >= 0
    road[np.flatnonzero(has_nearest), n_cls + 1 + cls[has_nearest]] = 1.0
    road[~road_ok] = np.nan
    return poi, poi_missing, road, ~road_ok


def missing_context_vectors(n: int):
    """The same four arrays for a city without OSM: every value NaN, every mask True."""
    return (
        np.full((n, N_POI), np.nan, dtype=np.float32),
        np.ones((n, N_POI), dtype=bool),
        np.full((n, N_ROAD), np.nan, dtype=np.float32),
        np.ones(n, dtype=bool),
    )


def list_array(values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """(n, width) -> a list<value_type> column of n rows of `width` values."""
    n, width = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=value_type))


def context_arrays(poi, poi_missing, road, road_missing) -> list[pa.Array]:
    """The four context vectors as the Arrow columns of CONTEXT_COLUMNS."""
    return [
        list_array(poi, pa.float32()),
        list_array(poi_missing, pa.bool_()),
        list_array(road, pa.float32()),
        pa.array(road_missing),
    ]
