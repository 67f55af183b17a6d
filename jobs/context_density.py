"""Per-point POI and road modalities in Spark, and the road lattice they are read from.

The per-point arithmetic is transfertraj.features.context (numpy), which the served model runs on its
request points too; this module builds the lattice (shapely, once per city) and applies the per-point
functions to DataFrames.

    from transfertraj.jobs.context_density import add_context, build_road_lattice
    points = points.transform(add_context, pois_df, grid_df, phi_m=city.phi_m,
                              categories_covered=city.osm.poi_categories_covered)

`points_df` needs `point_id` (long), `mx`, `my` (double, metres in the city's metric CRS); every input
column is passed through and four are added (P, R from transfertraj.features.taxonomy):

| column       | type            | meaning |
|--------------|-----------------|---------|
| poi          | array<float> P  | log1p(number of POIs of each category within phi), last = log1p(total) |
| poi_missing  | array<boolean> P| the source does not cover that category here (value is NaN, never 0) |
| road         | array<float> R  | log1p(metres of road of each class within phi) (8), min(d, cap)/cap with d the |
|              |                 | distance to the nearest road (1), one-hot class of the nearest road within cap (8) |
| road_missing | boolean         | no road data here (the road vector is NaN) |

How (measured in bench/context.py, chosen for >= 1 M points/s on 2 cores):
- POI counts are exact: every POI at Euclidean distance <= phi. A cell index over the lattice
  (features.context.PoiIndex, 10 m cells) holds per cell the counts of the POIs within phi of the whole
  cell, and lists the POIs near the disc's edge, which are measured per point (about 0.15 s per million
  points, one core). It replaced a KD-tree of each batch paired with one of the POIs (scipy
  `sparse_distance_matrix`), 3-4x slower, with the same counts (tests/features/test_context.py).
- Road lengths come from a precomputed lattice (the `context_grid` table, `lattice_m` = 5 m): at every
  lattice node the exact length of each road class inside the disc of radius phi (segments clipped to
  the circle analytically), and the distance to the nearest road (from road samples every 2 m). A point
  takes the bilinear interpolation of its 4 surrounding nodes. Computing per point instead (samples every
  5 m within phi) means 150+ pairs per point in central Porto, about 5x slower than all the rest.
  Tolerance (checked against shapely on real Porto points in tests/jobs/test_context_density.py):
  per point and class |error| <= ROAD_TOLERANCE_M (30 m) or 5 % of the exact length, whichever is
  larger; typical errors are below 1 m (the 99th percentile is ~8 m, at roads tangent to the circle).
  Nearest-road distance: |error| <= lattice_m * sqrt(2) + 1 m; its class is the nearest node's.
- Coverage: a lattice node is POI- (road-) covered when a POI (road) lies within ~coverage_m of it.
  Points elsewhere (outside the extract, e.g. across a river the extract stops at) get missing context,
  not zeros. A city without OSM gets missing context everywhere: `add_missing_context`.
- Python runs once per Arrow batch (mapInArrow), never per row; the context is broadcast once (the
  bytes of its cached NPZ, jobs.context_tables.context_npz) and unpacked, and the POI index built,
  once per Python worker (about 2 s).
"""

from __future__ import annotations

import functools
import io
import logging
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from transfertraj.features.context import (  # noqa: F401 (CityContext, RoadLattice, ...: re-exported)
    CONTEXT_COLUMNS,
    DIST_CAP_M,
    GRID_COLUMNS,
    POI_COLUMNS,
    CityContext,
    PoiIndex,
    RoadLattice,
    check_context,
    city_context,
    context_arrays,
    context_vectors,
    lattice_from_arrow,
    lattice_to_arrow,
    load_city_context,
    poi_counts,
    poi_index,
)
from transfertraj.features.mapped_context import map_context, unpack_context
from transfertraj.features.taxonomy import N_POI, N_ROAD, ROAD_CLASSES, TAXONOMY_VERSION, covered_mask

log = logging.getLogger(__name__)

LATTICE_M = 5.0  # lattice spacing: the road-length interpolation error grows about linearly with it
ROAD_SAMPLE_M = 2.0  # road sample spacing for the nearest-road distance at lattice nodes
PIECE_M = 20.0  # roads are cut into straight pieces of at most this length before clipping to discs
COVERAGE_M = 250.0  # coverage cell; a node is covered when its cell or a neighbour holds data
ROAD_TOLERANCE_M = 30.0  # stated per-class tolerance of the road lengths (or 5 % of the exact length)
ROAD_TOLERANCE_REL = 0.05

CONTEXT_FIELDS = (
    T.StructField("poi", T.ArrayType(T.FloatType(), containsNull=True), nullable=False),
    T.StructField("poi_missing", T.ArrayType(T.BooleanType(), containsNull=False), nullable=False),
    T.StructField("road", T.ArrayType(T.FloatType(), containsNull=True), nullable=False),
    T.StructField("road_missing", T.BooleanType(), nullable=False),
)


# ----------------------------------------------------------------------------- the lattice (numpy)


def _pieces(geoms: np.ndarray, classes: np.ndarray, max_len: float):
    """Straight pieces (x1, y1, x2, y2, class) of at most max_len metres covering the lines exactly."""
    import shapely

    geoms = shapely.segmentize(shapely.line_merge(geoms), max_len)
    parts, part_index = shapely.get_parts(geoms, return_index=True)
    coords, coord_index = shapely.get_coordinates(parts, return_index=True)
    same = coord_index[1:] == coord_index[:-1]
    start, end = coords[:-1][same], coords[1:][same]
    cls = classes[part_index[coord_index[:-1][same]]]
    return start, end, cls


def chord_lengths(centres: np.ndarray, start: np.ndarray, end: np.ndarray, r: float) -> np.ndarray:
    """Length of each segment start->end inside the closed disc of radius r around each centre (row-wise)."""
    d = end - start
    f = start - centres
    a = np.einsum("ij,ij->i", d, d)
    b = 2.0 * np.einsum("ij,ij->i", f, d)
    c = np.einsum("ij,ij->i", f, f) - r * r
    disc = b * b - 4.0 * a * c
    ok = (disc > 0) & (a > 0)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    denom = np.where(ok, 2.0 * a, 1.0)
    t1 = np.clip((-b - sq) / denom, 0.0, 1.0)
    t2 = np.clip((-b + sq) / denom, 0.0, 1.0)
    return np.where(ok, (t2 - t1) * np.sqrt(a), 0.0)


def _coverage(
    xy: np.ndarray, x0: float, y0: float, nx: int, ny: int, step: float, cell: float, kx: np.ndarray, ky: np.ndarray
) -> np.ndarray:
    """Coverage at nodes (ky, kx) of the full nx x ny lattice at (x0, y0): cells stay aligned to the full
    lattice's origin, so a windowed lattice holds the same values as the whole one at the same nodes."""
    from scipy.ndimage import binary_dilation

    cx = int(np.ceil(nx * step / cell)) + 1
    cy = int(np.ceil(ny * step / cell)) + 1
    occupied = np.zeros((cy, cx), dtype=bool)
    if len(xy):
        ix = np.clip(((xy[:, 0] - x0) // cell).astype(int), 0, cx - 1)
        iy = np.clip(((xy[:, 1] - y0) // cell).astype(int), 0, cy - 1)
        occupied[iy, ix] = True
    occupied = binary_dilation(occupied, structure=np.ones((3, 3), bool))
    node_cx = ((kx * step) // cell).astype(int)
    node_cy = ((ky * step) // cell).astype(int)
    return occupied[np.ix_(node_cy, node_cx)]


def _window(x0: float, y0: float, nx: int, ny: int, step: float, extent) -> tuple[np.ndarray, np.ndarray]:
    """Node indices (kx, ky) of the full lattice inside `extent` (minx, miny, maxx, maxy, metres) plus
    one node on each side, so a point anywhere in the extent has its four surrounding nodes."""
    if extent is None:
        return np.arange(nx), np.arange(ny)
    minx, miny, maxx, maxy = extent
    kx0, kx1 = max(0, int(np.floor((minx - x0) / step)) - 1), min(nx - 1, int(np.ceil((maxx - x0) / step)) + 1)
    ky0, ky1 = max(0, int(np.floor((miny - y0) / step)) - 1), min(ny - 1, int(np.ceil((maxy - y0) / step)) + 1)
    if kx0 > kx1 or ky0 > ky1:
        raise ValueError(f"the extent {extent} does not overlap the roads and POIs (lattice from {x0}, {y0})")
    return np.arange(kx0, kx1 + 1), np.arange(ky0, ky1 + 1)


def build_road_lattice(
    road_geoms: np.ndarray,
    road_classes: np.ndarray,
    poi_xy: np.ndarray,
    *,
    phi_m: float,
    lattice_m: float = LATTICE_M,
    coverage_m: float = COVERAGE_M,
    chunk_nodes: int = 20_000,
    extent: tuple[float, float, float, float] | None = None,
) -> RoadLattice:
    """The lattice over the roads' and POIs' extent plus phi. road_geoms: shapely lines in metres;
    road_classes: index into ROAD_CLASSES per line; poi_xy: (n, 2) metres.

    extent (minx, miny, maxx, maxy, metres): build only the nodes inside it (plus one on each side),
    e.g. the city's box, outside which cleaning drops every point. An extract reaches further than the
    box (San Francisco's lists a dozen Bay ferry terminals up to 35 km away: 36 M nodes for the 1.2 M
    inside the box). The nodes kept are those of the whole lattice, with the same values (the roads
    and POIs outside the extent still count where they lie within phi)."""
    import shapely
    from scipy.spatial import cKDTree

    road_geoms = np.asarray(road_geoms, dtype=object)
    road_classes = np.asarray(road_classes, dtype=np.int64)
    poi_xy = np.asarray(poi_xy, dtype=float).reshape(-1, 2)
    if len(road_geoms) == 0:
        raise ValueError("no roads to build a lattice from")
    minx, miny, maxx, maxy = shapely.total_bounds(road_geoms)
    if len(poi_xy):
        minx, miny = min(minx, poi_xy[:, 0].min()), min(miny, poi_xy[:, 1].min())
        maxx, maxy = max(maxx, poi_xy[:, 0].max()), max(maxy, poi_xy[:, 1].max())
    x0 = np.floor((minx - phi_m) / lattice_m) * lattice_m
    y0 = np.floor((miny - phi_m) / lattice_m) * lattice_m
    nx = int(np.ceil((maxx + phi_m - x0) / lattice_m)) + 1
    ny = int(np.ceil((maxy + phi_m - y0) / lattice_m)) + 1
    kx, ky = _window(x0, y0, nx, ny, lattice_m, extent)
    gx, gy = np.meshgrid(x0 + lattice_m * kx, y0 + lattice_m * ky)
    nodes = np.column_stack([gx.ravel(), gy.ravel()])

    start, end, piece_class = _pieces(road_geoms, road_classes, PIECE_M)
    mid_tree = cKDTree((start + end) / 2.0)
    half = np.sqrt(((end - start) ** 2).sum(1)).max() / 2.0
    n_cls = len(ROAD_CLASSES)
    road_m = np.zeros((len(nodes), n_cls), dtype=np.float32)
    for lo in range(0, len(nodes), chunk_nodes):
        block = nodes[lo : lo + chunk_nodes]
        # every piece with a point inside the disc has its midpoint within phi + half its length
        pairs = cKDTree(block).sparse_distance_matrix(mid_tree, phi_m + half + 1e-6, output_type="ndarray")
        i, j = pairs["i"], pairs["j"]
        length = chord_lengths(block[i], start[j], end[j], phi_m)
        road_m[lo : lo + len(block)] = np.bincount(
            i * n_cls + piece_class[j], weights=length, minlength=len(block) * n_cls
        ).reshape(len(block), n_cls)

    # nearest road from samples every ROAD_SAMPLE_M (error <= half the spacing)
    seg_len = np.sqrt(((end - start) ** 2).sum(1))
    n_s = np.maximum(1, np.ceil(seg_len / ROAD_SAMPLE_M).astype(np.int64))
    seg = np.repeat(np.arange(len(start)), n_s)
    k = np.arange(n_s.sum()) - np.repeat(np.cumsum(n_s) - n_s, n_s)
    frac = ((k + 0.5) / n_s[seg])[:, None]
    samples = start[seg] + frac * (end[seg] - start[seg])
    dist, idx = cKDTree(samples).query(nodes, k=1, distance_upper_bound=DIST_CAP_M)
    far = ~np.isfinite(dist)
    nearest_class = np.where(far, -1, piece_class[seg[np.minimum(idx, len(seg) - 1)]]).astype(np.int8)
    nearest_m = np.where(far, DIST_CAP_M, dist).astype(np.float32)

    shape = (len(ky), len(kx))
    return RoadLattice(
        x0=float(x0 + lattice_m * kx[0]),
        y0=float(y0 + lattice_m * ky[0]),
        step=float(lattice_m),
        phi_m=float(phi_m),
        road_m=road_m.reshape(*shape, n_cls),
        nearest_m=nearest_m.reshape(shape),
        nearest_class=nearest_class.reshape(shape),
        road_covered=_coverage(samples, x0, y0, nx, ny, lattice_m, coverage_m, kx, ky),
        poi_covered=_coverage(poi_xy, x0, y0, nx, ny, lattice_m, coverage_m, kx, ky),
    )


# ------------------------------------------------------------------------------------ Spark side


_WORKER_CACHE: dict[str, tuple] = {}


class SharedContext(NamedTuple):
    """A city's context for the Python workers (broadcast_context): the folder they map it from where they
    can see it, its NPZ's bytes broadcast for those that cannot, and the name it is cached by."""

    bc: Broadcast
    token: str
    folder: str | None = None


def broadcast_context(spark: SparkSession, context: CityContext | Path, *, phi_m: float) -> SharedContext:
    """Check a city's context against phi and the taxonomy, and share it once with every Arrow worker.

    A CityContext (load_context) is broadcast as is. The path of its NPZ (jobs.context_tables.context_npz)
    is unpacked once beside it (features.mapped_context: uncompressed arrays and the POI index), which the
    workers map in milliseconds (worker_context); its compressed bytes are broadcast too (25 MB for Porto,
    read by a worker only if the folder is not on its machine: a worker that inflates them and builds the
    index spends about 2 s)."""
    if isinstance(context, CityContext):
        check_context(context, phi_m=phi_m, taxonomy_version=TAXONOMY_VERSION)
        return SharedContext(spark.sparkContext.broadcast(context), uuid.uuid4().hex)
    folder = unpack_context(context)
    check_context(map_context(folder)[0], phi_m=phi_m, taxonomy_version=TAXONOMY_VERSION)
    return SharedContext(spark.sparkContext.broadcast(Path(context).read_bytes()), uuid.uuid4().hex, str(folder))


def worker_context(shared: SharedContext) -> tuple[CityContext, PoiIndex | None]:
    """(the CityContext, its POI index) inside a Python worker, once per worker: mapped from the shared
    folder where this machine has it, else unpacked from the broadcast bytes and indexed here."""
    cached = _WORKER_CACHE.get(shared.token)
    if cached is None:
        try:
            cached = map_context(shared.folder) if shared.folder else None
        except FileNotFoundError:  # an executor that does not see the driver's cache folder
            cached = None
        if cached is None:
            value = shared.bc.value
            ctx = load_city_context(io.BytesIO(value)) if isinstance(value, bytes) else value
            cached = (ctx, poi_index(ctx))
        _WORKER_CACHE.clear()  # one context per worker at a time: keep memory flat across cities
        _WORKER_CACHE[shared.token] = cached
    return cached


def _context_batches(batches, *, shared, phi_m, category_missing, x_col, y_col):
    ctx, index = worker_context(shared)
    for batch in batches:
        xy = np.column_stack(
            [batch.column(x_col).to_numpy(zero_copy_only=False), batch.column(y_col).to_numpy(zero_copy_only=False)]
        ).astype(np.float64)
        poi, poi_missing, road, road_missing = context_vectors(
            xy, ctx.lattice, index, phi_m=phi_m, category_missing=category_missing
        )
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, *context_arrays(poi, poi_missing, road, road_missing)],
            names=[*batch.schema.names, *CONTEXT_COLUMNS],
        )


def _output_schema(points_df: DataFrame) -> T.StructType:
    clash = set(CONTEXT_COLUMNS) & set(points_df.columns)
    if clash:
        raise ValueError(f"points already have context columns {sorted(clash)}")
    return T.StructType([*points_df.schema.fields, *CONTEXT_FIELDS])


def collect_city_arrow(df: DataFrame, city: str, columns: list[str]) -> pa.Table:
    """One city's rows of a city-partitioned table as Arrow on the driver, without the JVM holding them.

    toArrow() gathers every row in the driver JVM's heap first; a city's 5 m road lattice (millions of
    rows) ran a 4g driver out of heap. Local files are read by pyarrow straight from the snapshot's file
    list (`inputFiles()`, the `city=<name>/` partition), and the row count is checked against Spark's.
    Other file systems (s3a:// on a cluster) go through toArrow()."""
    import pyarrow.parquet as pq

    files = [f for f in df.inputFiles() if f"/city={city}/" in f]
    if not files or not all(f.startswith("file:") for f in files):
        return df.select(*columns).toArrow()
    table = pa.concat_tables(pq.read_table(f[len("file:") :], columns=columns) for f in files)
    expected = df.count()
    if table.num_rows != expected:
        raise ValueError(
            f"read {table.num_rows} rows of {city} from its files, Spark counts {expected}: "
            "the table uses a feature this reader does not apply (deletion vectors?)"
        )
    return table


def load_context(pois_df: DataFrame, grid_df: DataFrame) -> CityContext:
    """Collect one city's POIs (category, mx, my) and lattice to the driver as numpy."""
    first = grid_df.select("taxonomy_version", "city").limit(1).collect()
    if not first:
        raise ValueError("the context grid has no rows for this city: build the context tables first")
    taxonomy_version, city = first[0]
    grid = collect_city_arrow(grid_df, city, list(GRID_COLUMNS))
    return city_context(pois_df.select(*POI_COLUMNS).toArrow(), grid, taxonomy_version)


def add_context(
    points_df: DataFrame,
    pois_df: DataFrame,
    grid_df: DataFrame,
    *,
    phi_m: float,
    categories_covered: list[str] | None = None,
    x_col: str = "mx",
    y_col: str = "my",
) -> DataFrame:
    """Add poi, poi_missing, road, road_missing to every point (see the module docstring).

    pois_df and grid_df are one city's rows of the context_pois and context_grid tables; they are
    collected and broadcast here (central Porto's grid is ~5 M nodes, ~100 MB as float16)."""
    return add_loaded_context(
        points_df,
        load_context(pois_df, grid_df),
        phi_m=phi_m,
        categories_covered=categories_covered,
        x_col=x_col,
        y_col=y_col,
    )


def add_loaded_context(
    points_df: DataFrame,
    context: CityContext | Path,
    *,
    phi_m: float,
    categories_covered: list[str] | None = None,
    x_col: str = "mx",
    y_col: str = "my",
) -> DataFrame:
    """add_context with the context already collected: a CityContext (load_context), or the path of its
    NPZ (jobs.context_tables.context_npz; see broadcast_context)."""
    schema = _output_schema(points_df)
    fn = functools.partial(
        _context_batches,
        shared=broadcast_context(points_df.sparkSession, context, phi_m=phi_m),
        phi_m=float(phi_m),
        category_missing=covered_mask(categories_covered),
        x_col=x_col,
        y_col=y_col,
    )
    return points_df.mapInArrow(fn, schema)


def add_missing_context(points_df: DataFrame) -> DataFrame:
    """The same columns for a city without OSM: every value NaN, every mask True (built-in functions)."""
    _output_schema(points_df)
    nan = F.lit(float("nan")).cast("float")
    return (
        points_df.withColumn("poi", F.array_repeat(nan, N_POI))
        .withColumn("poi_missing", F.array_repeat(F.lit(True), N_POI))
        .withColumn("road", F.array_repeat(nan, N_ROAD))
        .withColumn("road_missing", F.lit(True))
    )
