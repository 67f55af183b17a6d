"""Reading OSM sources: GIS extract (San Francisco), Overpass (download mocked), failure modes."""

from __future__ import annotations

import pytest

from transfertraj.core.city_config import load_city, parse_city
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


def test_overpass_downloads_once_into_the_cache_and_reads_like_xml(settings, monkeypatch, tmp_path):
    from dataclasses import replace

    settings = replace(settings, cache=tmp_path / "cache")
    calls = []

    def fake_download(query, dest, *, place=None):
        calls.append(query)
        dest.write_text(TINY_OSM)
        return dest

    monkeypatch.setattr(osm_context, "download_overpass_xml", fake_download)
    porto = load_city("porto", settings).model_dump()
    porto["osm"] = {
        "kind": "overpass",
        "overpass_url": "https://overpass.example.org/api",
        "snapshot_date": "2024-06-01",
    }
    city = parse_city(porto)
    first = read_osm_context(city, settings)
    second = read_osm_context(city, settings)
    assert len(calls) == 1  # the second read comes from the cache
    assert '[date:"2024-06-01T00:00:00Z"]' in calls[0] and "(41.12,-8.7,41.197,-8.52)" in calls[0]
    assert first.source == second.source and first.source.startswith(str(tmp_path / "cache" / "osm"))
    assert first.roads["road_class"].tolist() == ["residential"]


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
