"""Read a city's OpenStreetMap context: drivable roads and POIs, in the city's metric CRS.

    from transfertraj.jobs.osm_context import read_osm_context
    ctx = read_osm_context(city, settings)     # OsmContext(roads=GeoDataFrame, pois=GeoDataFrame, ...)

Three kinds of source (city config `osm.kind`), one result:
- osm_xml: a local .osm / .osm.bz2 file, read with osmnx (graph_from_xml for roads, features_from_xml for POIs).
- overpass: downloaded from the Overpass API at the config's `osm.overpass_url` (never assumed) by the
  config's bbox or `osm.place`, through osmnx's own client: its rate limiting (the server's /status
  slots) and its response cache, kept under the data root (<home>/osm/overpass-cache: a download is made
  once and is offline afterwards; delete the folder to refresh), plus bounded retries with backoff of
  transient errors (HTTP 429 and 5xx, timeouts). Roads and POIs are then built by the osm_xml code.
- gis_extract: zipped shapefiles / GeoPackages of OSM lines and points (GDAL's OSM layout, `other_tags`
  holding the remaining tags as `"key"=>"value"` text), read with geopandas.
Cities with kind `none` have no context; callers mark it missing (see jobs/context_density.py).

Roads: one row per road segment (a graph edge between intersections for OSM XML, one OSM way for GIS
extracts, which carry no topology), with its `highway` value, road class and metric geometry.
POIs: one row per OSM feature that maps into the POI taxonomy (jobs/context_taxonomy.py); polygons and
lines are represented by their centroid.

To cut a small OSM XML extract (tests, demos): `cut_osm_extract(src, dst, bbox)`.
Writing the context tables: `python -m jobs.context_tables --city porto`.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import re
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from xml.sax import SAXParseException

import geopandas as gpd
import numpy as np
import pandas as pd

from transfertraj.core.city_config import CityConfig
from transfertraj.core.settings import Settings
from transfertraj.jobs.context_taxonomy import POI_TAG_KEYS, poi_category, road_class

log = logging.getLogger(__name__)

_OTHER_TAG = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')


class OsmSourceError(RuntimeError):
    """The city's OSM source is missing, unreadable or empty; the message names the file or query."""


@dataclass(frozen=True)
class OsmContext:
    roads: gpd.GeoDataFrame  # osm_id, highway, road_class, length_m, geometry (LineString, metric CRS)
    pois: gpd.GeoDataFrame  # osm_type, osm_id, category, tag_key, tag_value, name, geometry (Point, metric)
    crs: str
    source: str  # what was read: file path(s) or the Overpass query's cache file


# ---------------------------------------------------------------------------------------------- roads


def _roads_frame(gdf: gpd.GeoDataFrame, highway: pd.Series, osm_id: pd.Series, crs: str) -> gpd.GeoDataFrame:
    classes = highway.map(road_class)
    keep = classes.notna().to_numpy() & gdf.geometry.notna().to_numpy()
    out = gpd.GeoDataFrame(
        {
            "osm_id": pd.to_numeric(osm_id[keep], errors="coerce").astype("Int64").to_numpy(),
            "highway": highway[keep].map(lambda h: h[0] if isinstance(h, list) else h).astype(str).to_numpy(),
            "road_class": classes[keep].to_numpy(),
        },
        geometry=gdf.geometry[keep].to_crs(crs).to_numpy(),
        crs=crs,
    )
    out = out[out.geometry.geom_type.isin(["LineString", "MultiLineString"]) & ~out.geometry.is_empty]
    out["length_m"] = out.geometry.length
    return out.reset_index(drop=True)


def _parse_osm_xml(path: Path) -> dict:
    """The file as osmnx's Overpass-like JSON, parsed once (osmnx's own SAX handler).

    graph_from_xml and features_from_xml each parse the file twice (a whole ElementTree parse only to
    read the root's attributes, then SAX) and decompress a .bz2 each time: four parses of Porto's
    extract, about 40 of the 70 s its context took to read. The graph and the features are then made
    from this one answer by the functions those two call (osmnx 2.1, pinned; tests/jobs/test_osm_context.py
    compares the result with the two public functions)."""
    from xml.sax import parse as sax_parse

    from osmnx._osm_xml import _OSMContentHandler

    handler = _OSMContentHandler()
    with _open_xml(path) as f:
        sax_parse(f, handler)
    return handler.object


def _drivable_graph_edges(osm: dict, source, crs: str) -> gpd.GeoDataFrame:
    from osmnx.graph import _create_graph

    # = graph_from_xml(simplify=False, retain_all=True, bidirectional=False). simplify=False first:
    # osmnx's default simplification would merge a footway into the street it continues, leaving edges
    # whose class is a list. We drop non-drivable edges, then simplify with edge_attrs_differ=["highway"]
    # so every segment keeps one class. retain_all=True: an extract clipped at a box has many
    # disconnected pieces, and context is about what is near, not what is reachable.
    return _drivable_edges(_create_graph([osm], bidirectional=False), source, crs)


def _drivable_edges(G, source, crs: str) -> gpd.GeoDataFrame:
    """An unsimplified osmnx graph (all highways) -> one row per drivable segment, in the metric CRS."""
    import osmnx as ox

    drop = [
        (u, v, k)
        for u, v, k, d in G.edges(keys=True, data=True)
        if road_class(d.get("highway")) is None or str(d.get("area", "no")) == "yes"
    ]
    G.remove_edges_from(drop)
    G.remove_nodes_from([n for n, deg in dict(G.degree()).items() if deg == 0])
    if G.number_of_edges() == 0:
        raise OsmSourceError(f"{source}: no drivable roads (highway={{motorway..service}}) in this OSM source")
    G = ox.simplify_graph(G, edge_attrs_differ=["highway"])
    # A two-way street is two directed edges; the undirected graph counts its length once.
    edges = ox.graph_to_gdfs(ox.convert.to_undirected(G), nodes=False)
    osm_id = edges["osmid"].map(lambda v: v[0] if isinstance(v, list) else v)
    return _roads_frame(
        edges.reset_index(drop=True), edges["highway"].reset_index(drop=True), osm_id.reset_index(drop=True), crs
    )


# ----------------------------------------------------------------------------------------------- POIs


def _pois_frame(tags: pd.DataFrame, geometry: gpd.GeoSeries, osm_type, osm_id, crs: str) -> gpd.GeoDataFrame:
    """Categorise features by their tags; polygons and lines become their metric centroid."""
    records = tags.to_dict("records")
    categories = pd.Series([poi_category(r) for r in records], dtype=object)
    keep = categories.notna().to_numpy() & geometry.notna().to_numpy()

    def deciding_tag(rec: dict) -> tuple[str | None, str | None]:
        for key in POI_TAG_KEYS:
            value = rec.get(key)
            if isinstance(value, str) and value:
                return key, value
        return None, None

    decided = [deciding_tag(r) for r, k in zip(records, keep) if k]
    metric = geometry[keep].to_crs(crs)
    names = tags["name"] if "name" in tags else pd.Series([None] * len(tags))
    return gpd.GeoDataFrame(
        {
            "osm_type": np.asarray(osm_type)[keep],
            "osm_id": pd.to_numeric(pd.Series(np.asarray(osm_id)[keep]), errors="coerce").astype("Int64").to_numpy(),
            "category": categories[keep].to_numpy(),
            "tag_key": [k for k, _ in decided],
            "tag_value": [v for _, v in decided],
            "name": names[keep].astype(object).where(names[keep].notna(), None).to_numpy(),
        },
        geometry=metric.centroid.to_numpy(),
        crs=crs,
    ).reset_index(drop=True)


def _xml_pois(osm: dict, crs: str) -> gpd.GeoDataFrame:
    """= features_from_xml(tags=POI keys) on the parsed file; run it after the graph: it consumes `osm`."""
    from osmnx._errors import InsufficientResponseError
    from osmnx.features import _create_gdf
    from shapely.geometry import Polygon

    try:
        feats = _create_gdf([osm], Polygon(), {k: True for k in POI_TAG_KEYS})
    except InsufficientResponseError:
        feats = gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs="EPSG:4326")
    return _feature_pois(feats, crs)


def _feature_pois(feats: gpd.GeoDataFrame, crs: str) -> gpd.GeoDataFrame:
    """osmnx features (indexed by element, id) -> one row per categorised POI."""
    if feats.empty:
        return _pois_frame(pd.DataFrame({"name": []}), gpd.GeoSeries([], crs="EPSG:4326"), [], [], crs)
    index = feats.index.to_frame(index=False)
    tags = pd.DataFrame({k: feats[k].to_numpy() if k in feats else None for k in (*POI_TAG_KEYS, "name")})
    return _pois_frame(tags, feats.geometry.reset_index(drop=True), index["element"], index["id"], crs)


# ------------------------------------------------------------------------------------------ readers


def _require_file(path: Path | None, what: str) -> Path:
    if path is None:
        raise OsmSourceError(f"no {what} configured")
    path = Path(path)
    if not path.is_file():
        raise OsmSourceError(f"OSM source file not found: {path} ({what})")
    return path


def read_osm_xml(path: Path, crs: str) -> OsmContext:
    """Roads and POIs from one OSM XML file (.osm, .osm.bz2 or .osm.gz)."""
    path = _require_file(path, "OSM XML file")
    log.info("reading OSM XML %s", path)
    try:
        osm = _parse_osm_xml(path)
    except (SAXParseException, EOFError, OSError) as err:
        raise OsmSourceError(f"{path}: not valid OSM XML: {err}") from None
    roads = _drivable_graph_edges(osm, path, crs)
    pois = _xml_pois(osm, crs)  # last: osmnx's feature builder takes the parsed elements apart
    log.info("%s: %d road segments, %d POIs", path.name, len(roads), len(pois))
    return OsmContext(roads=roads, pois=pois, crs=crs, source=str(path))


def parse_other_tags(text: object) -> dict[str, str]:
    """GDAL's `other_tags` text ('"k"=>"v","k2"=>"v2"') as a dict; a pair cut off at the end is dropped."""
    if not isinstance(text, str):
        return {}
    return {k: v.replace('\\"', '"') for k, v in _OTHER_TAG.findall(text)}


def _read_gis(path: Path) -> gpd.GeoDataFrame:
    uri = f"zip://{path}" if path.suffix == ".zip" else str(path)
    try:
        return gpd.read_file(uri)
    except Exception as err:  # pyogrio raises its own DataSourceError; name the file either way
        raise OsmSourceError(f"{path}: cannot read as a GIS extract: {err}") from None


def read_gis_extract(lines_path: Path, points_path: Path, crs: str) -> OsmContext:
    """Roads from an OSM lines layer (column `highway`), POIs from an OSM points layer (`other_tags`)."""
    lines_path = _require_file(lines_path, "GIS extract lines file")
    points_path = _require_file(points_path, "GIS extract points file")
    lines = _read_gis(lines_path)
    if "highway" not in lines:
        raise OsmSourceError(f"{lines_path}: no `highway` column; is this an OSM lines layer?")
    line_tags = lines.get("other_tags", pd.Series([None] * len(lines))).map(parse_other_tags)
    not_area = line_tags.map(lambda t: t.get("area") != "yes").to_numpy()
    lines = lines[not_area].reset_index(drop=True)
    roads = _roads_frame(lines, lines["highway"], lines.get("osm_id", pd.Series([None] * len(lines))), crs)

    points = _read_gis(points_path)
    other = points.get("other_tags", pd.Series([None] * len(points))).map(parse_other_tags)
    tags = pd.DataFrame(
        {k: [t.get(k) for t in other] for k in POI_TAG_KEYS}
        | {"name": points["name"].to_numpy() if "name" in points else None}
    )
    pois = _pois_frame(
        tags, points.geometry, ["node"] * len(points), points.get("osm_id", pd.Series([None] * len(points))), crs
    )
    log.info("%s + %s: %d road segments, %d POIs", lines_path.name, points_path.name, len(roads), len(pois))
    return OsmContext(roads=roads, pois=pois, crs=crs, source=f"{lines_path} + {points_path}")


# -------------------------------------------------------------------------------------------- overpass

OVERPASS_TIMEOUT_S = 180  # per request (osmnx's requests_timeout; also the query's [timeout:...])
OVERPASS_RETRIES = 4  # transient failures retried per request: HTTP 429 and 5xx, timeouts, dropped connections
OVERPASS_BACKOFF_S = 5.0  # the first retry's wait, doubled for each next one; a Retry-After header wins
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def overpass_cache_folder(settings: Settings) -> Path:
    """osmnx's response cache (one JSON file per query) under the data root: a city's download is made
    once, and a rerun, a retry or a second machine sharing the data root reads it offline."""
    return settings.home / "osm" / "overpass-cache"


def _retry_transient(retries: int, backoff_s: float):
    """A requests response hook that sends a request again while the answer is a transient HTTP error.
    osmnx retries 429 and 504 itself, but after a fixed 55 s and without end, and not a 500/502/503;
    this answers first, with a bounded exponential backoff, and hands osmnx the last answer."""

    def hook(response, *args, **send_kwargs):
        for attempt in range(retries):
            if response.status_code not in TRANSIENT_STATUS:
                break
            after = response.headers.get("Retry-After", "")
            wait = float(after) if after.isdigit() else backoff_s * 2**attempt
            log.warning(
                "Overpass answered %s %s: retry %d/%d in %.1f s", response.status_code, response.reason,
                attempt + 1, retries, wait,
            )  # fmt: skip
            time.sleep(wait)
            request, adapter = response.request, response.connection
            response.close()
            response = adapter.send(request, **send_kwargs)
        return response

    return hook


@contextmanager
def overpass_client(url: str, cache_folder: Path, *, snapshot_date: date | None = None,
                    timeout_s: float = OVERPASS_TIMEOUT_S, retries: int = OVERPASS_RETRIES,
                    backoff_s: float = OVERPASS_BACKOFF_S, rate_limit: bool = True):  # fmt: skip
    """osmnx's own Overpass client (its rate limiting by the server's /status slots, its response cache)
    pointed at `url`, with retries of transient errors; osmnx's settings are restored on exit."""
    import osmnx as ox

    names = ("overpass_url", "requests_timeout", "overpass_rate_limit", "use_cache", "cache_folder",
             "requests_kwargs", "overpass_settings")  # fmt: skip
    saved = {n: getattr(ox.settings, n) for n in names}
    when = f'[date:"{snapshot_date.isoformat()}T00:00:00Z"]' if snapshot_date else ""
    try:
        ox.settings.overpass_url = url.rstrip("/")
        ox.settings.requests_timeout = timeout_s
        ox.settings.overpass_rate_limit = rate_limit
        ox.settings.use_cache = True
        ox.settings.cache_folder = str(cache_folder)
        ox.settings.requests_kwargs = {"hooks": {"response": [_retry_transient(retries, backoff_s)]}}
        ox.settings.overpass_settings = "[out:json][timeout:{timeout}]{maxsize}" + when
        yield ox
    finally:
        for n, v in saved.items():
            setattr(ox.settings, n, v)


def _with_retries(what: str, fn, *, retries: int, backoff_s: float):
    """fn() again after a timeout or a dropped connection (raised, so no response hook sees them); the
    requests already answered come from osmnx's cache, so a retry repeats only the one that failed."""
    import requests

    for attempt in range(retries + 1):
        try:
            return fn()
        except (requests.Timeout, requests.ConnectionError) as err:
            if attempt == retries:
                raise
            wait = backoff_s * 2**attempt
            log.warning("%s: %s; retry %d/%d in %.1f s", what, err, attempt + 1, retries, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _place_bbox(place: str) -> tuple[float, float, float, float]:
    import osmnx as ox

    west, south, east, north = ox.geocode_to_gdf(place).total_bounds
    return float(west), float(south), float(east), float(north)


def read_overpass(
    city: CityConfig, settings: Settings, *, retries: int = OVERPASS_RETRIES, backoff_s: float = OVERPASS_BACKOFF_S
) -> OsmContext:
    """Roads and POIs of the city's bbox (or `osm.place`) from the Overpass API at `osm.overpass_url`,
    through osmnx; answers cached under the data root (overpass_cache_folder), so this downloads once."""
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    url = city.osm.overpass_url
    if not url:
        raise OsmSourceError(
            f"{city.name}: osm.kind is overpass but osm.overpass_url is not set: name the endpoint in the city "
            "file (your own instance, or the public https://overpass-api.de/api within its usage policy)"
        )
    b = city.bbox
    bbox = _place_bbox(city.osm.place) if city.osm.place else (b.min_lon, b.min_lat, b.max_lon, b.max_lat)
    cache = overpass_cache_folder(settings)
    log.info("OSM for %s from Overpass at %s (cache %s)", city.name, url, cache)
    try:
        with overpass_client(url, cache, snapshot_date=city.osm.snapshot_date, retries=retries, backoff_s=backoff_s):
            import osmnx as ox

            G = _with_retries(
                f"{city.name} roads",
                lambda: ox.graph_from_bbox(bbox, custom_filter='["highway"]', simplify=False, retain_all=True),
                retries=retries,
                backoff_s=backoff_s,
            )
            try:
                feats = _with_retries(
                    f"{city.name} POIs",
                    lambda: ox.features_from_bbox(bbox, tags={k: True for k in POI_TAG_KEYS}),
                    retries=retries,
                    backoff_s=backoff_s,
                )
            except InsufficientResponseError:
                feats = gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs="EPSG:4326")
    except (ResponseStatusCodeError, InsufficientResponseError, OSError) as err:
        raise OsmSourceError(f"Overpass download for {city.name} from {url} failed ({err})") from None
    source = f"overpass {url} bbox {bbox}"
    roads, pois = _drivable_edges(G, source, city.crs), _feature_pois(feats, city.crs)
    log.info("%s: %d road segments, %d POIs", source, len(roads), len(pois))
    return OsmContext(roads=roads, pois=pois, crs=city.crs, source=source)


def read_osm_context(city: CityConfig, settings: Settings) -> OsmContext | None:
    """The city's roads and POIs per its config; None for a city without OSM (kind `none`)."""
    kind = city.osm.kind
    if kind == "none":
        return None
    if kind == "osm_xml":
        return read_osm_xml(city.osm.path, city.crs)
    if kind == "gis_extract":
        return read_gis_extract(city.osm.path, city.osm.points_path, city.crs)
    if kind == "overpass":
        return read_overpass(city, settings)
    raise OsmSourceError(f"unknown OSM source kind '{kind}'")


# --------------------------------------------------------------------------------------------- extracts


def _open_xml(path: Path):
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def cut_osm_extract(src: Path, dst: Path, bbox: tuple[float, float, float, float]) -> Path:
    """Write the part of an OSM XML file inside (min_lon, min_lat, max_lon, max_lat) as a new file.

    Ways are cut to their nodes inside plus one node on either side (so a road crossing the edge keeps
    its crossing segment); a way that leaves and re-enters becomes several ways. Relations are left out."""
    src = _require_file(src, "OSM XML file")
    west, south, east, north = bbox
    with _open_xml(src) as f:
        root = ET.parse(f).getroot()
    inside = {
        n.get("id")
        for n in root.iter("node")
        if west <= float(n.get("lon")) <= east and south <= float(n.get("lat")) <= north
    }
    ways = []
    for way in root.iter("way"):
        refs = [nd.get("ref") for nd in way.iter("nd")]
        near = [
            any(r in inside for r in refs[max(0, i - 1) : i + 2]) for i in range(len(refs))
        ]  # inside or next to a node inside
        runs, run = [], []
        for ref, keep in zip(refs, near):
            if keep:
                run.append(ref)
            elif run:
                runs.append(run)
                run = []
        runs += [run] if run else []
        for k, run in enumerate(r for r in runs if len(r) >= 2):
            piece = ET.Element("way", {**way.attrib, "id": way.get("id") if k == 0 else f"-{way.get('id')}{k}"})
            piece.extend(ET.Element("nd", {"ref": ref}) for ref in run)
            piece.extend(way.iter("tag"))
            ways.append(piece)
    needed = inside | {nd.get("ref") for w in ways for nd in w.iter("nd")}
    out = ET.Element("osm", {"version": "0.6", "generator": "transfertraj cut_osm_extract"})
    ET.SubElement(out, "bounds", {"minlat": str(south), "minlon": str(west), "maxlat": str(north), "maxlon": str(east)})
    out.extend(n for n in root.iter("node") if n.get("id") in needed)
    out.extend(ways)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(out).write(dst, encoding="utf-8", xml_declaration=True)
    return dst
