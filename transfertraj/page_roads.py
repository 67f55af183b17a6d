"""The roads a trip page draws: the city's road geometry cut to the trips' box, small enough to inline.

    view = MetricView.around(fc, city.crs, margin_m=300)          # the page's extent, in the city's CRS
    roads = model_roads(settings, served, "porto", view)         # what a loaded pyfunc saw (see below)
    roads = lake_roads(settings, "porto", view, version=4)       # lines of context_roads v4, or None
    roads = lattice_roads(ctx, view, "context_porto.npz")         # the road lattice a model carries

Two sources, the best available first (`model_roads` picks):

- `lake_roads`: the LineStrings of the `context_roads` table (OSM roads in the city's metric CRS, what
  the context job built the densities from), read with feature_store.reader (delta-rs, no JVM), clipped
  to the view and simplified to half a pixel (Douglas-Peucker, shapely), so the page's size follows the
  view, not the city (central Porto, 4.7 km wide: ~100 kB of roads). For a model's page, at the version
  the model's features were built from (the registered model records it), never the latest: an OSM
  refresh after training would draw roads the model never saw.
- `lattice_roads`: a registered model carries no road lines, only the road lattice its features read
  (transfertraj.features.context: per 5 m node, the distance to the nearest road). Nodes with a road
  within one lattice step are the roads, drawn as a small transparent PNG (Pillow) over the view:
  what the model saw, available wherever the model is, with no lake.

Everything is in the city's metric CRS (the lattice's and the roads table's), so the page projects the
trip points with the same CRS (pyproj) and nothing is warped between the layers.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np

PIXELS = 960  # the page's map width; simplification and raster resolution are sized for it


@dataclass(frozen=True)
class MetricView:
    """The page's extent in a metric CRS, and the projection of WGS-84 points into it."""

    crs: str
    x0: float
    y0: float
    x1: float
    y1: float

    @staticmethod
    def transformer(crs: str):
        from pyproj import Transformer

        return Transformer.from_crs("EPSG:4326", crs, always_xy=True)

    def project(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.transformer(self.crs).transform(np.asarray(lon, float), np.asarray(lat, float))
        return np.asarray(x), np.asarray(y)

    @classmethod
    def around(cls, fc: dict, crs: str, margin_m: float = 300.0, min_span_m: float = 1000.0) -> MetricView:
        """The box of every coordinate of the collection, plus a margin, at least min_span_m wide and high."""
        coords = []
        for f in fc["features"]:
            g = f["geometry"]
            coords += [g["coordinates"]] if g["type"] == "Point" else g["coordinates"]
        if not coords:
            raise ValueError("the collection has no coordinates to draw")
        lon, lat = np.array(coords, float).T
        x, y = cls.transformer(crs).transform(lon, lat)
        cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
        hw = max((x.max() - x.min()) / 2 + margin_m, min_span_m / 2)
        hh = max((y.max() - y.min()) / 2 + margin_m, min_span_m / 2)
        return cls(crs, cx - hw, cy - hh, cx + hw, cy + hh)

    @property
    def metres_per_pixel(self) -> float:
        return (self.x1 - self.x0) / PIXELS


@dataclass(frozen=True)
class PageRoads:
    """Road lines (class, (n, 2) metric coordinates) or a raster (PNG bytes over the view), and where from."""

    source: str
    lines: list[tuple[str, np.ndarray]] = field(default_factory=list)
    raster_png: bytes | None = None
    raster_extent: tuple[float, float, float, float] | None = None  # left, top, width, height (metres)

    @property
    def raster_data_uri(self) -> str | None:
        if self.raster_png is None:
            return None
        return "data:image/png;base64," + base64.b64encode(self.raster_png).decode("ascii")


def clip_simplify(geoms, view: MetricView, classes) -> list[tuple[str, np.ndarray]]:
    """Shapely LineStrings (metric) -> the parts inside the view, simplified to half a pixel."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    classes = np.asarray(classes, dtype=object)
    box = shapely.box(view.x0, view.y0, view.x1, view.y1)
    inside = shapely.intersects(geoms, box)
    clipped = shapely.clip_by_rect(geoms[inside], view.x0, view.y0, view.x1, view.y1)
    simple = shapely.simplify(clipped, view.metres_per_pixel / 2, preserve_topology=False)
    parts, index = shapely.get_parts(simple, return_index=True)
    out = []
    for part, i in zip(parts, index):
        if part.geom_type != "LineString" or part.is_empty:
            continue
        xy = shapely.get_coordinates(part)
        if len(xy) >= 2:
            out.append((str(classes[inside][i]), xy))
    return out


def lake_roads(settings, city: str, view: MetricView, version: int | None = None) -> PageRoads | None:
    """The city's road lines from the lake's context_roads table at `version` (None: the latest); None
    when the table, the city or that version (vacuumed, another data root) is absent."""
    import shapely

    from transfertraj.feature_store.reader import TableNotFound, read_table

    try:
        table, version = read_table(
            settings, "context_roads", city=city, version=version, columns=["road_class", "geometry_wkb"]
        )
    except (TableNotFound, ValueError):
        return None
    if table.num_rows == 0:
        return None
    geoms = shapely.from_wkb(table.column("geometry_wkb").to_numpy(zero_copy_only=False))
    lines = clip_simplify(geoms, view, table.column("road_class").to_pylist())
    return PageRoads(source=f"OpenStreetMap roads of the lake's context_roads table (version {version})", lines=lines)


def pinned_roads_version(spec: dict, city: str) -> int | None:
    """The context_roads version a registered model's features were built from (its serving.json), or None
    for a model that does not record one."""
    version = spec.get("cities", {}).get(city, {}).get("context_versions", {}).get("context_roads")
    return None if version is None else int(version)


def model_roads(settings, served, city: str, view: MetricView) -> PageRoads | None:
    """The roads for a page of a loaded model's answers (`served`: serving.TransferTrajModel): the lake's
    context_roads at the version the model pinned, else the road lattice the model carries; never the
    latest roads of the lake, which may postdate the model."""
    pinned = pinned_roads_version(served.spec, city)
    roads = None if pinned is None else lake_roads(settings, city, view, version=pinned)
    ctx, _ = served.contexts.get(city, (None, None))
    if roads is None and ctx is not None:
        roads = lattice_roads(ctx, view, f"context_{city}.npz")
    return roads


def lattice_roads(ctx, view: MetricView, name: str = "the model's context") -> PageRoads | None:
    """The road lattice of a CityContext as a PNG over the view: nodes with a road within one step."""
    from PIL import Image

    lat = ctx.lattice
    ny, nx = lat.shape
    ix0 = max(int(np.floor((view.x0 - lat.x0) / lat.step)), 0)
    ix1 = min(int(np.ceil((view.x1 - lat.x0) / lat.step)) + 1, nx)
    iy0 = max(int(np.floor((view.y0 - lat.y0) / lat.step)), 0)
    iy1 = min(int(np.ceil((view.y1 - lat.y0) / lat.step)) + 1, ny)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    near = np.asarray(lat.nearest_m[iy0:iy1, ix0:ix1], dtype=np.float32)
    road = (near <= lat.step) & lat.road_covered[iy0:iy1, ix0:ix1]
    if not road.any():
        return None
    # full view raster (nodes outside the lattice stay empty), north up
    w = int(round((view.x1 - view.x0) / lat.step))
    h = int(round((view.y1 - view.y0) / lat.step))
    canvas = np.zeros((h, w), bool)
    ox = int(round((lat.x0 + ix0 * lat.step - view.x0) / lat.step))
    oy = int(round((lat.y0 + iy0 * lat.step - view.y0) / lat.step))
    ys, xs = np.nonzero(road)
    keep = (xs + ox >= 0) & (xs + ox < w) & (ys + oy >= 0) & (ys + oy < h)
    canvas[ys[keep] + oy, xs[keep] + ox] = True
    canvas = canvas[::-1]
    top = view.y0 + h * lat.step
    f = max(int(np.ceil(w / (2 * PIXELS))), 1)  # a wide view: pool to at most twice the page's pixels
    if f > 1:
        h2, w2 = -(-h // f), -(-w // f)
        padded = np.zeros((h2 * f, w2 * f), bool)
        padded[:h, :w] = canvas
        canvas = padded.reshape(h2, f, w2, f).any(axis=(1, 3))
    rgba = np.zeros((*canvas.shape, 4), np.uint8)
    rgba[canvas] = (150, 150, 150, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    return PageRoads(
        source=f"road lattice carried by the model ({name}: nodes every {lat.step:g} m with a road within "
        f"{lat.step:g} m)",
        raster_png=buf.getvalue(),
        raster_extent=(view.x0, top, canvas.shape[1] * f * lat.step, canvas.shape[0] * f * lat.step),
    )
