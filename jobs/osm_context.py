"""Read a city's OpenStreetMap context: drivable roads and POIs, in the city's metric CRS.

    from transfertraj.jobs.osm_context import read_osm_context
    ctx = read_osm_context(city, settings)     # OsmContext(roads=GeoDataFrame, pois=GeoDataFrame, ...)

Three kinds of source (city config `osm.kind`), one result:
- osm_xml: a local .osm / .osm.bz2 file, read with osmnx (graph_from_xml for roads, features_from_xml for POIs).
- overpass: the same XML downloaded once from the Overpass API (by the config's bbox, or by `osm.place`)
  into <cache>/osm/ and then read by exactly the osm_xml code (so a download is reproducible and offline
  afterwards; delete the cached file to refresh it).
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
import hashlib
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from transfertraj.core.city_config import CityConfig
from transfertraj.core.settings import Settings
from transfertraj.jobs.context_taxonomy import POI_TAG_KEYS, poi_category, road_class

log = logging.getLogger(__name__)

OVERPASS_URL = "https://overpass-api.de/api/interpreter"
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


def _drivable_graph_edges(path: Path, crs: str) -> gpd.GeoDataFrame:
    import osmnx as ox

    # simplify=False first: osmnx's default simplification would merge a footway into the street it
    # continues, leaving edges whose class is a list. We drop non-drivable edges, then simplify with
    # edge_attrs_differ=["highway"] so every segment keeps one class. retain_all=True: an extract clipped
    # at a box has many disconnected pieces, and context is about what is near, not what is reachable.
    G = ox.graph_from_xml(path, simplify=False, retain_all=True, bidirectional=False)
    drop = [
        (u, v, k)
        for u, v, k, d in G.edges(keys=True, data=True)
        if road_class(d.get("highway")) is None or str(d.get("area", "no")) == "yes"
    ]
    G.remove_edges_from(drop)
    G.remove_nodes_from([n for n, deg in dict(G.degree()).items() if deg == 0])
    if G.number_of_edges() == 0:
        raise OsmSourceError(f"{path}: no drivable roads (highway={{motorway..service}}) in this OSM file")
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


def _xml_pois(path: Path, crs: str) -> gpd.GeoDataFrame:
    import osmnx as ox
    from osmnx._errors import InsufficientResponseError

    try:
        feats = ox.features_from_xml(path, tags={k: True for k in POI_TAG_KEYS})
    except InsufficientResponseError:
        feats = gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs="EPSG:4326")
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
        roads = _drivable_graph_edges(path, crs)
        pois = _xml_pois(path, crs)
    except ET.ParseError as err:
        raise OsmSourceError(f"{path}: not valid OSM XML: {err}") from None
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


def overpass_query(bbox: tuple[float, float, float, float], snapshot_date: date | None = None) -> str:
    """Overpass QL for the drivable-road candidates and POI features in (min_lon, min_lat, max_lon, max_lat)."""
    west, south, east, north = bbox
    box = f"({south},{west},{north},{east})"
    when = f'[date:"{snapshot_date.isoformat()}T00:00:00Z"]' if snapshot_date else ""
    parts = [f'way["highway"]{box};'] + [f'nwr["{k}"]{box};' for k in POI_TAG_KEYS]
    return f"[out:xml][timeout:300]{when};(" + "".join(parts) + ");(._;>;);out body;"


def download_overpass_xml(query: str, dest: Path, *, place: str | None = None) -> Path:
    """POST the query to Overpass and save the OSM XML answer to `dest` (written whole, then renamed)."""
    import requests

    response = requests.post(OVERPASS_URL, data={"data": query}, timeout=600)
    response.raise_for_status()
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(response.content)
    tmp.replace(dest)
    return dest


def _place_bbox(place: str) -> tuple[float, float, float, float]:
    import osmnx as ox

    west, south, east, north = ox.geocode_to_gdf(place).total_bounds
    return float(west), float(south), float(east), float(north)


def overpass_cache_file(city: CityConfig, settings: Settings) -> tuple[Path, str]:
    """Where the city's Overpass download is cached, and the query that fills it."""
    b = city.bbox
    bbox = _place_bbox(city.osm.place) if city.osm.place else (b.min_lon, b.min_lat, b.max_lon, b.max_lat)
    query = overpass_query(bbox, city.osm.snapshot_date)
    key = hashlib.sha256(query.encode()).hexdigest()[:12]
    return settings.cache / "osm" / f"{city.name}-{key}.osm", query


def read_overpass(city: CityConfig, settings: Settings) -> OsmContext:
    """Download once into the cache, then read with the osm_xml code path."""
    dest, query = overpass_cache_file(city, settings)
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading OSM for %s from Overpass into %s", city.name, dest)
        try:
            download_overpass_xml(query, dest, place=city.osm.place)
        except Exception as err:
            raise OsmSourceError(f"Overpass download for {city.name} failed ({err}); query: {query}") from None
    return read_osm_xml(dest, city.crs)


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
