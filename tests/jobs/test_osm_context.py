"""Reading OSM sources: GIS extract (San Francisco), Overpass (a local test server), failure modes."""

from __future__ import annotations

import pytest

from transfertraj.core.city_config import CityConfigError, load_city, parse_city
from transfertraj.jobs import osm_context
from transfertraj.jobs.context_taxonomy import POI_CATEGORIES, covered_mask, poi_category, road_class
from transfertraj.jobs.osm_context import OsmSourceError, parse_other_tags, read_osm_context, read_osm_xml

TINY_OSM = """<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6">
  <node id="1" lat="41.1500" lon="-8.6100"/>
  <node id="2" lat="41.1500" lon="-8.6090"/>
  <node id="3" lat="41.1510" lon="-8.6090"/>
  <node id="4" lat="41.1505" lon="-8.6095"><tag k="amenity" v="cafe"/></node>
  <node id="5" lat="41.1506" lon="-8.6096"><tag k="amenity" v="bench"/></node>
  <node id="6" lat="41.1507" lon="-8.6097"><tag k="shop" v="bakery"/></node>
  <way id="10"><nd ref="1"/><nd ref="2"/><tag k="highway" v="residential"/></way>
  <way id="11"><nd ref="2"/><nd ref="3"/><tag k="highway" v="footway"/></way>
</osm>
"""


def test_taxonomy_rules():
    assert poi_category({"amenity": "cafe"}) == "food"
    assert poi_category({"amenity": "bench"}) is None  # street furniture is not a POI
    assert poi_category({"shop": "bakery", "name": "x"}) == "shop"
    assert poi_category({"amenity": "pharmacy", "shop": "chemist"}) == "health"
    assert poi_category({"public_transport": "platform"}) == "transport"
    assert poi_category({"amenity": "something_new"}) == "other"
    assert poi_category({"name": "no POI key"}) is None
    assert [road_class(h) for h in ("primary_link", "living_street", "footway", "unclassified", None)] == [
        "primary", "residential", None, "other", None,
    ]  # fmt: skip
    assert covered_mask(None) == [False] * (len(POI_CATEGORIES) + 1)
    with pytest.raises(ValueError, match="unknown POI categories \\['shops'\\]"):
        covered_mask(["shops"])


def test_other_tags_parsing_drops_a_pair_cut_off_by_the_format():
    assert parse_other_tags('"amenity"=>"cafe","name:en"=>"A \\"b\\"","opening_hou') == {
        "amenity": "cafe",
        "name:en": 'A "b"',
    }
    assert parse_other_tags(None) == {}


def test_gis_extract_of_san_francisco(settings):
    sf = load_city("sanfrancisco", settings)
    ctx = read_osm_context(sf, settings)
    assert ctx.crs == "EPSG:32610" and ctx.pois.crs == ctx.roads.crs
    km = ctx.roads.groupby("road_class")["length_m"].sum() / 1000
    assert 200 < km["residential"] < 240  # data README: residential 221 km (footways are not roads)
    counts = ctx.pois["category"].value_counts()
    assert counts["food"] > 1500 and counts["parking"] > 1000
    assert counts.get("shop", 0) < 50  # the shapefile cut shop tags off: SF's config marks shop missing
    assert set(sf.osm.poi_categories_covered) == set(POI_CATEGORIES) - {"shop", "leisure_tourism"}
    x0, y0, x1, y1 = ctx.roads.total_bounds
    assert 540_000 < x0 < x1 < 560_000 and 4_170_000 < y0 < y1 < 4_190_000  # metres, UTM 10N


def test_osm_xml_keeps_drivable_roads_and_categorised_pois(tmp_path):
    path = tmp_path / "tiny.osm"
    path.write_text(TINY_OSM)
    ctx = read_osm_xml(path, "EPSG:32629")
    assert ctx.roads["road_class"].tolist() == ["residential"]  # the footway is not a road
    assert ctx.roads["length_m"].iloc[0] == pytest.approx(84, abs=2)  # 0.001 deg of longitude at 41.15 N
    assert sorted(ctx.pois["category"]) == ["food", "shop"]  # the bench is dropped


# The TINY_OSM elements as an Overpass JSON answer (the test server gives it to every query).
TINY_JSON = {
    "version": 0.6,
    "elements": [
        {"type": "node", "id": 1, "lat": 41.1500, "lon": -8.6100},
        {"type": "node", "id": 2, "lat": 41.1500, "lon": -8.6090},
        {"type": "node", "id": 3, "lat": 41.1510, "lon": -8.6090},
        {"type": "node", "id": 4, "lat": 41.1505, "lon": -8.6095, "tags": {"amenity": "cafe"}},
        {"type": "node", "id": 5, "lat": 41.1506, "lon": -8.6096, "tags": {"amenity": "bench"}},
        {"type": "node", "id": 6, "lat": 41.1507, "lon": -8.6097, "tags": {"shop": "bakery"}},
        {"type": "way", "id": 10, "nodes": [1, 2], "tags": {"highway": "residential"}},
        {"type": "way", "id": 11, "nodes": [2, 3], "tags": {"highway": "footway"}},
    ],
}


@pytest.fixture
def overpass_server():
    """A local Overpass stand-in: /api/status says a slot is free; the first query gets HTTP 429, every
    later one TINY_JSON. It records the requests it was sent."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code, body: bytes, kind: str):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            seen.append(("GET", self.path))
            status = "Connected as: 1\nCurrent time: 2026-01-01T00:00:00Z\nAnnounced endpoint: none\n"
            self._send(200, (status + "Rate limit: 2\n2 slots available now.\n").encode(), "text/plain")

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen.append(("POST", self.path + " " + body))
            if sum(m == "POST" for m, _ in seen) == 1:
                self._send(429, b"rate limited", "text/plain")
            else:
                self._send(200, json.dumps(TINY_JSON).encode(), "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api", seen
    server.shutdown()
    server.server_close()


def test_overpass_retries_a_429_uses_the_configured_url_and_caches(settings, overpass_server, tmp_path, caplog):
    """osmnx's client against a local server (no network): the 429 is retried, only the city's own
    endpoint is asked, and a second read is answered from the cache under the data root."""
    from dataclasses import replace

    settings = replace(settings, home=tmp_path / "home")
    url, seen = overpass_server
    porto = load_city("porto", settings).model_dump()
    porto["osm"] = {"kind": "overpass", "overpass_url": url, "snapshot_date": "2024-06-01"}
    city = parse_city(porto)
    import osmnx as ox

    public = ox.settings.overpass_url
    with caplog.at_level("WARNING", logger="transfertraj.jobs.osm_context"):
        first = osm_context.read_overpass(city, settings, backoff_s=0.05)
    posts = [p for m, p in seen if m == "POST"]
    assert len(posts) == 3  # roads: 429, then the retry; POIs: one
    assert "Overpass answered 429" in caplog.text  # our retry, not osmnx's fixed 55 s pause
    assert ox.settings.overpass_url == public  # osmnx's settings are restored
    assert all(p.startswith("/api/interpreter data=") for p in posts)  # the configured endpoint, nothing else
    assert "date%3A%222024-06-01T00%3A00%3A00Z%22" in posts[0]  # the snapshot date is in the query
    assert ("GET", "/api/status") in seen  # osmnx's rate limiting asked the server for a slot
    assert first.roads["road_class"].tolist() == ["residential"]  # built like the osm_xml roads
    assert sorted(first.pois["category"]) == ["food", "shop"]
    assert list((tmp_path / "home" / "osm" / "overpass-cache").glob("*.json"))

    before = len(seen)
    second = read_osm_context(city, settings)
    assert len(seen) == before  # answered from the cache: not one request
    assert second.roads.equals(first.roads) and second.source == first.source


def test_overpass_needs_its_endpoint_named(settings):
    porto = load_city("porto", settings)
    with pytest.raises(CityConfigError, match="kind overpass needs overpass_url"):  # the city file refuses it
        parse_city({**porto.model_dump(), "osm": {"kind": "overpass"}})
    unchecked = porto.model_copy(
        update={"osm": porto.osm.model_copy(update={"kind": "overpass", "overpass_url": None})}
    )
    with pytest.raises(OsmSourceError, match="osm.overpass_url is not set"):  # and the job never guesses one
        read_osm_context(unchecked, settings)


def test_missing_osm_file_names_the_file(settings, tmp_path):
    porto = load_city("porto", settings)
    missing = tmp_path / "nope.osm.bz2"
    city = porto.model_copy(update={"osm": porto.osm.model_copy(update={"path": missing})})
    with pytest.raises(OsmSourceError, match=f"OSM source file not found: {missing}"):
        read_osm_context(city, settings)
    sf = load_city("sanfrancisco", settings)
    city = sf.model_copy(update={"osm": sf.osm.model_copy(update={"points_path": missing})})
    with pytest.raises(OsmSourceError, match="nope.osm.bz2 \\(GIS extract points file\\)"):
        read_osm_context(city, settings)


def test_city_without_osm_has_no_context(settings):
    assert read_osm_context(load_city("beijing", settings), settings) is None


def test_osm_xml_parsed_once_gives_what_osmnx_public_readers_give(tmp_path):
    """read_osm_xml parses the file once and builds the graph and the features from that one answer;
    the result must be what osmnx's graph_from_xml and features_from_xml give, on real Porto OSM."""
    from pathlib import Path

    import osmnx as ox
    from geopandas.testing import assert_geodataframe_equal

    from transfertraj.jobs.context_taxonomy import POI_TAG_KEYS

    src = Path(__file__).resolve().parents[2] / "data" / "porto" / "porto_central.osm.bz2"
    path = osm_context.cut_osm_extract(src, tmp_path / "baixa.osm", (-8.618, 41.143, -8.606, 41.151))
    crs = "EPSG:32629"
    ctx = read_osm_xml(path, crs)
    G = ox.graph_from_xml(path, simplify=False, retain_all=True, bidirectional=False)
    roads = osm_context._drivable_edges(G, path, crs)
    pois = osm_context._feature_pois(ox.features_from_xml(path, tags={k: True for k in POI_TAG_KEYS}), crs)
    assert len(ctx.roads) > 100 and len(ctx.pois) > 100  # a real piece of the city
    assert_geodataframe_equal(ctx.roads, roads)
    assert_geodataframe_equal(ctx.pois, pois)
