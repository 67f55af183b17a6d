"""Trigger params of onboard_city -> a city config dict; every hostile trigger is refused naming its field.

Pure validation (pydantic, a temporary data root), no Spark, no Airflow run: the table below runs in about
a second. docs/onboarding.md prints the same table (class, example, message) for users.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from transfertraj.core.constants import PHI_DEFAULT_M
from transfertraj.core.settings import Settings
from transfertraj.tasks.onboard_params import (
    RAW_PRESETS,
    OnboardParamsError,
    OnboardTrigger,
    airflow_params,
    onboard_config,
    trigger_schema,
)

POINTS_HEADER = "taxi,time,lng,lat,busy\n"


@pytest.fixture
def settings(tmp_path, tmp_path_factory):
    """A data root with deliveries under incoming/ and the traps a hostile trigger points at."""
    inc = tmp_path / "incoming"
    (inc / "lisbon").mkdir(parents=True)
    (inc / "lisbon" / "trips.csv").write_text("TRIP_ID,POLYLINE\n1,[]\n")
    (inc / "lisbon" / "points.csv").write_text(POINTS_HEADER + "7,1372636800,-9.1,38.7,1\n")
    (inc / "lisbon" / "empty.csv").write_text("")
    (inc / "lisbon" / "map.osm").write_text("<osm/>")
    (inc / "lisbon" / "alias.csv").symlink_to(inc / "lisbon" / "trips.csv")  # a link inside: fine
    outside = tmp_path_factory.mktemp("elsewhere") / "trips.csv"
    outside.write_text("TRIP_ID,POLYLINE\n")
    (inc / "lisbon" / "escape.csv").symlink_to(outside)  # a link out of incoming
    (tmp_path / "lake" / "silver").mkdir(parents=True)
    (tmp_path / "lake" / "silver" / "part-0.csv").write_text("x\n")
    (inc / "lisbon" / "lake_link").symlink_to(tmp_path / "lake")
    (tmp_path / "landing" / "lisbon" / "2013-07-01").mkdir(parents=True)
    (tmp_path / "landing" / "lisbon" / "2013-07-01" / "trips.csv").write_text("x\n")
    return Settings.load(home=tmp_path)


def params(**over):
    base = {
        "city": "lisbon",
        "bbox": [-9.25, 38.69, -9.09, 38.80],
        "timezone": "Europe/Lisbon",
        "raw_path": "lisbon/trips.csv",
        "raw_preset": "porto_csv",
        "licence": "CC BY 4.0",
        "sampling_interval_s": 15,
    }
    return {**base, **over}


def point_log(**over):
    columns = {"vehicle_id": "taxi", "timestamp": "time", "lon": "lng", "lat": "lat"}
    return params(
        **{"raw_preset": None, "raw_format": "point_log", "raw_path": "lisbon/points.csv", "columns": columns, **over}
    )


def without(key):
    p = params()
    del p[key]
    return p


# (class, id, trigger, the field the message must name). Absolute paths are written as {home}/...
HOSTILE = [
    # -- the six accepted before (issue #17) ------------------------------------------------------------
    ("missing bbox", "bbox-absent", without("bbox"), "bbox"),
    ("missing bbox", "null-island", params(bbox=[0, 0, 0.1, 0.1]), "bbox"),
    ("raw path in the lake", "lake-abs", params(raw_path="{home}/lake/silver/part-0.csv"), "raw_path"),
    ("raw path in the lake", "lake-link", params(raw_path="lisbon/lake_link/silver/part-0.csv"), "raw_path"),
    (
        "duplicated columns",
        "lon=lat",
        point_log(columns={"vehicle_id": "taxi", "timestamp": "time", "lon": "lat", "lat": "lat"}),
        "columns",
    ),
    (
        "duplicated columns",
        "ts=vehicle",
        point_log(columns={"vehicle_id": "taxi", "timestamp": "taxi", "lon": "lng", "lat": "lat"}),
        "columns",
    ),
    ("huge number", "n_shot-1e12", params(n_shot=10**12), "n_shot"),
    ("misspelt key", "n_shots", params(n_shots=100), "n_shots"),
    ("misspelt key", "sampling_intervall_s", params(sampling_intervall_s=15), "sampling_intervall_s"),
    ("misspelt key", "cleaning.max_sped_kmh", params(cleaning={"max_sped_kmh": 100}), "cleaning.max_sped_kmh"),
    ("overpass url", "overpass-no-url", params(osm_kind="overpass"), "overpass_url"),
    (
        "overpass url",
        "overpass-url-misspelt",
        params(osm_kind="overpass", overpass_uri="https://o.example/api"),
        "overpass_uri",
    ),
    ("NUL byte", "nul-city", params(city="lis\x00bon"), "city"),
    ("NUL byte", "nul-path", params(raw_path="lisbon/trips\x00.csv"), "raw_path"),
    ("NUL byte", "nul-licence", params(licence="CC BY\x00 4.0"), "licence"),
    ("NUL byte", "nul-timezone", params(timezone="Europe/Lis\x00bon"), "timezone"),
    (
        "NUL byte",
        "nul-column",
        point_log(columns={"vehicle_id": "taxi\x00", "timestamp": "time", "lon": "lng", "lat": "lat"}),
        "columns.vehicle_id",
    ),
    ("NUL byte", "nul-key", {**params(), "ci\x00ty": "x"}, "'ci\\x00ty'"),
    # -- required fields have no default ---------------------------------------------------------------
    ("missing required", "city", without("city"), "city"),
    ("missing required", "timezone", without("timezone"), "timezone"),
    ("missing required", "raw_path", without("raw_path"), "raw_path"),
    ("missing required", "licence", without("licence"), "licence"),
    ("missing required", "sampling_interval_s", without("sampling_interval_s"), "sampling_interval_s"),
    # -- bbox ------------------------------------------------------------------------------------------
    ("bad bbox", "three-numbers", params(bbox=[-9.25, 38.69, -9.09]), "bbox"),
    ("bad bbox", "five-numbers", params(bbox=[-9.25, 38.69, -9.09, 38.8, 1]), "bbox"),
    ("bad bbox", "a-string", params(bbox="-9.25,38.69,-9.09,38.80"), "bbox"),
    ("bad bbox", "strings-inside", params(bbox=["-9.25", "38.69", "-9.09", "38.80"]), "bbox.0"),
    ("bad bbox", "lon-out-of-range", params(bbox=[-200, 38.69, -9.09, 38.80]), "bbox.min_lon"),
    ("bad bbox", "lat-out-of-range", params(bbox=[-9.25, -91, -9.09, 38.80]), "bbox.min_lat"),
    ("bad bbox", "min-above-max", params(bbox=[-9.09, 38.69, -9.25, 38.80]), "bbox"),
    ("bad bbox", "degenerate", params(bbox=[-9.25, 38.69, -9.25, 38.80]), "bbox"),
    ("bad bbox", "a-point", params(bbox=[-9.25, 38.69, -9.2499, 38.6901]), "bbox"),
    ("bad bbox", "a-region", params(bbox=[-9.0, 37.0, -6.0, 41.5]), "bbox"),
    ("NaN / inf", "bbox-nan", params(bbox=[math.nan, 38.69, -9.09, 38.80]), "bbox.0"),
    ("NaN / inf", "bbox-inf", params(bbox=[-9.25, 38.69, math.inf, 38.80]), "bbox.2"),
    # -- paths -----------------------------------------------------------------------------------------
    ("bad path", "dot-dot", params(raw_path="lisbon/../lisbon/trips.csv"), "raw_path"),
    ("bad path", "dot-dot-escape", params(raw_path="../lake/silver/part-0.csv"), "raw_path"),
    ("bad path", "absolute-outside", params(raw_path="/etc/passwd"), "raw_path"),
    ("bad path", "symlink-escape", params(raw_path="lisbon/escape.csv"), "raw_path"),
    ("bad path", "landing", params(raw_path="{home}/landing/lisbon/2013-07-01/trips.csv"), "raw_path"),
    ("bad path", "missing", params(raw_path="lisbon/nope.csv"), "raw_path"),
    ("bad path", "a-folder", params(raw_path="lisbon"), "raw_path"),
    ("bad path", "empty-file", params(raw_path="lisbon/empty.csv"), "raw_path"),
    ("bad path", "empty-string", params(raw_path=""), "raw_path"),
    ("bad path", "newline", params(raw_path="lisbon/trips.csv\n"), "raw_path"),
    ("bad path", "too-long", params(raw_path="a/" * 2500), "raw_path"),
    ("bad path", "osm-outside", params(osm_kind="osm_xml", osm_path="/etc/hosts"), "osm_path"),
    # -- columns and formats ---------------------------------------------------------------------------
    (
        "bad columns",
        "unknown-canonical",
        point_log(columns={"vehicle_id": "taxi", "timestamp": "time", "lon": "lng", "lat": "lat", "speed": "v"}),
        "columns.speed",
    ),
    (
        "bad columns",
        "missing-lat",
        point_log(columns={"vehicle_id": "taxi", "timestamp": "time", "lon": "lng"}),
        "columns",
    ),
    (
        "bad columns",
        "empty-name",
        point_log(columns={"vehicle_id": "", "timestamp": "time", "lon": "lng", "lat": "lat"}),
        "columns.vehicle_id",
    ),
    ("bad columns", "columns-for-porto", params(columns={"vehicle_id": "TAXI_ID"}), "columns"),
    ("bad columns", "a-list", point_log(columns=["taxi", "time", "lng", "lat"]), "columns"),
    ("bad columns", "state-value-no-column", point_log(trip_state_value="1"), "trip_state_value"),
    ("bad format", "no-format", params(raw_preset=None), "raw_format"),
    ("bad format", "two-character-delimiter", point_log(delimiter=";;"), "delimiter"),
    ("bad format", "quote-delimiter", point_log(delimiter='"'), "delimiter"),
    ("bad format", "unknown-preset", params(raw_preset="gpx"), "raw_preset"),
    ("bad format", "unknown-format", params(raw_format="gpx"), "raw_format"),
    # -- wrong types and numbers out of range ----------------------------------------------------------
    ("wrong type", "n_shot-string", params(n_shot="100"), "n_shot"),
    ("wrong type", "n_shot-bool", params(n_shot=True), "n_shot"),
    ("wrong type", "n_shot-float", params(n_shot=1.5), "n_shot"),
    ("wrong type", "replace-string", params(replace="yes"), "replace"),
    ("wrong type", "interval-string", params(sampling_interval_s="15"), "sampling_interval_s"),
    ("wrong type", "cleaning-a-number", params(cleaning=3), "cleaning"),
    ("out of range", "n_shot-zero", params(n_shot=0), "n_shot"),
    ("out of range", "n_shot-negative", params(n_shot=-5), "n_shot"),
    ("out of range", "epochs-zero", params(epochs=0), "epochs"),
    ("out of range", "epochs-million", params(epochs=10**6), "epochs"),
    ("out of range", "max_dates-zero", params(max_dates=0), "max_dates"),
    ("out of range", "max_dates-10000", params(max_dates=10_000), "max_dates"),
    ("out of range", "interval-zero", params(sampling_interval_s=0), "sampling_interval_s"),
    ("out of range", "interval-a-day", params(sampling_interval_s=86400), "sampling_interval_s"),
    ("out of range", "phi-zero", params(phi_m=0), "phi_m"),
    ("out of range", "phi-huge", params(phi_m=1e9), "phi_m"),
    ("out of range", "wait-negative", params(champion_wait_s=-1), "champion_wait_s"),
    ("out of range", "wait-a-year", params(champion_wait_s=365 * 86400), "champion_wait_s"),
    ("out of range", "share-above-1", params(quality={"max_rejected_share": 1.5}), "quality.max_rejected_share"),
    ("out of range", "min-trajectories-negative", params(quality={"min_trajectories": -1}), "quality.min_trajectories"),
    ("NaN / inf", "interval-nan", params(sampling_interval_s=math.nan), "sampling_interval_s"),
    ("NaN / inf", "interval-inf", params(sampling_interval_s=math.inf), "sampling_interval_s"),
    ("NaN / inf", "speed-inf", params(cleaning={"max_speed_kmh": math.inf}), "cleaning.max_speed_kmh"),
    ("NaN / inf", "phi-nan", params(phi_m=math.nan), "phi_m"),
    # -- names, time zones, licences, unknown keys -----------------------------------------------------
    ("bad name", "upper-case", params(city="Lisbon"), "city"),
    ("bad name", "unicode", params(city="lisboa_é"), "city"),
    ("bad name", "empty", params(city=""), "city"),
    ("bad name", "too-long", params(city="a" * 41), "city"),
    ("bad name", "path-like", params(city="../porto"), "city"),
    ("control character", "description-escape", params(description="Lisbon \x1b[31mred"), "description"),
    ("bad time zone", "mars", params(timezone="Mars/Olympus"), "timezone"),
    ("bad time zone", "empty", params(timezone=""), "timezone"),
    ("bad time zone", "lower-case", params(timezone="europe/lisbon"), "timezone"),
    ("bad time zone", "a-path", params(timezone="../../etc/passwd"), "timezone"),
    ("bad time zone", "an-offset", params(timezone="+01:00"), "timezone"),
    ("bad time zone", "raw-timestamps", params(timestamp_timezone="CEST"), "timestamp_timezone"),
    ("bad licence", "empty", params(licence=""), "licence"),
    ("bad licence", "blank", params(licence="   "), "licence"),
    ("bad licence", "unknown", params(licence="unknown"), "licence"),
    ("bad licence", "n/a", params(licence="N/A"), "licence"),
    ("bad licence", "line-break", params(licence="CC BY\n4.0"), "licence"),
    ("unknown key", "foo", params(foo=1), "foo"),
    ("unknown key", "city-config-spelling", params(name="lisbon"), "name"),
    ("unknown key", "nested-quality", params(quality={"min_trajectory": 2}), "quality.min_trajectory"),
    # -- OSM sources -----------------------------------------------------------------------------------
    ("overpass url", "http", params(osm_kind="overpass", overpass_url="http://overpass.example/api"), "overpass_url"),
    ("overpass url", "not-a-url", params(osm_kind="overpass", overpass_url="overpass-api.de"), "overpass_url"),
    (
        "overpass url",
        "with-password",
        params(osm_kind="overpass", overpass_url="https://me:secret@o.example/api"),
        "overpass_url",
    ),
    ("overpass url", "url-for-kind-none", params(overpass_url="https://o.example/api"), "overpass_url"),
    ("bad OSM source", "path-for-kind-none", params(osm_path="lisbon/map.osm"), "osm_path"),
    ("bad OSM source", "osm_xml-no-path", params(osm_kind="osm_xml"), "osm_path"),
    ("bad OSM source", "gis-no-points", params(osm_kind="gis_extract", osm_path="lisbon/map.osm"), "osm_points_path"),
    ("bad OSM source", "unknown-kind", params(osm_kind="shapefile"), "osm_kind"),
    (
        "bad OSM source",
        "unknown-poi-category",
        params(poi_categories_covered=["food", "bars"]),
        "poi_categories_covered.1",
    ),
    ("bad OSM source", "bad-snapshot-date", params(osm_snapshot_date="yesterday"), "osm_snapshot_date"),
]


def _fill(value, home):
    if isinstance(value, str):
        return value.replace("{home}", str(home))
    if isinstance(value, dict):
        return {k: _fill(v, home) for k, v in value.items()}
    return value


def test_the_table_is_large_and_covers_the_issue():
    assert len(HOSTILE) >= 60
    assert len({(c, i) for c, i, _, _ in HOSTILE}) == len(HOSTILE)  # ids unique within a class


@pytest.mark.parametrize("klass, case, trigger, field", HOSTILE, ids=[f"{c}:{i}" for c, i, _, _ in HOSTILE])
def test_a_hostile_trigger_is_refused_naming_its_field(settings, klass, case, trigger, field):
    with pytest.raises(OnboardParamsError) as err:
        onboard_config(_fill(trigger, settings.home), settings)
    lines = str(err.value).splitlines()
    assert lines[0] == "onboard_city: bad parameters:"
    named = [ln.strip() for ln in lines[1:] if ln.strip().startswith((f"{field}:", f"{field}."))]
    assert named, f"{klass}/{case}: no line names {field!r} in:\n{err.value}"


def test_the_misspelt_key_gets_a_hint(settings):
    with pytest.raises(OnboardParamsError, match=r"n_shots: unknown key; did you mean 'n_shot'\?"):
        onboard_config(params(n_shots=5), settings)
    with pytest.raises(OnboardParamsError, match=r"foo: unknown key; known keys: city, description, bbox"):
        onboard_config(params(foo=5), settings)


def test_a_nul_byte_is_named_not_a_crash(settings):
    with pytest.raises(OnboardParamsError, match=r"raw_path: holds the control character '\\x00' at position 12"):
        onboard_config(params(raw_path="lisbon/trips\x00.csv"), settings)


def test_a_good_trigger_becomes_a_city_config(settings):
    data = onboard_config(params(), settings)
    assert data["name"] == "lisbon"
    assert data["bbox"] == {"min_lon": -9.25, "min_lat": 38.69, "max_lon": -9.09, "max_lat": 38.80}
    assert data["raw"] == {
        "format": "porto_csv",
        "timestamp_format": "unix_s",
        "path": str((settings.incoming / "lisbon" / "trips.csv").resolve()),  # relative to incoming/
        "licence": "CC BY 4.0",
        "provenance": "",
    }
    assert data["osm"] == {"kind": "none"} and data["phi_m"] == PHI_DEFAULT_M


@pytest.mark.parametrize(
    "trigger",
    [
        point_log(description="Lisboa — São Jorge, 30 taxis", timestamp_timezone="Europe/Lisbon", delimiter="\t"),
        point_log(
            columns={"vehicle_id": "taxi", "timestamp": "time", "lon": "lng", "lat": "lat", "trip_state": "busy"},
            trip_state_value="1",
        ),
        params(raw_path="{home}/incoming/lisbon/alias.csv"),  # absolute, and a link that stays inside
        params(osm_kind="overpass", overpass_url="https://overpass.example.org/api", osm_snapshot_date="2024-06-01"),
        params(osm_kind="osm_xml", osm_path="lisbon/map.osm", poi_categories_covered=["food", "shop"]),
        params(n_shot=1, epochs=1, max_dates=1, champion_wait_s=0, replace=True, cleaning={"max_speed_kmh": 120}),
    ],
    ids=["unicode-description", "trip-state", "absolute-link-inside", "overpass", "osm-file", "knobs"],
)
def test_good_triggers_are_accepted(settings, trigger):
    data = onboard_config(_fill(trigger, settings.home), settings)
    assert data["raw"]["path"].startswith(str(settings.incoming.resolve()))


def test_a_headerless_gcj02_delivery_is_onboardable(settings):
    """Columns by position with header false, and the datum, reach the city config (jobs/ reads both)."""
    columns = {"vehicle_id": 0, "timestamp": 2, "lon": 3, "lat": 4}
    data = onboard_config(point_log(columns=columns, header=False, datum="gcj02", timestamp_format="unix_ns"), settings)
    assert data["raw"]["columns"] == columns and data["raw"]["header"] is False and data["datum"] == "gcj02"
    with pytest.raises(OnboardParamsError, match="datum"):
        onboard_config(point_log(datum="bd09"), settings)
    with pytest.raises(OnboardParamsError, match="header: false"):
        onboard_config(point_log(columns=columns), settings)  # positions need header false


def test_the_overpass_url_is_kept(settings):
    url = "https://overpass.example.org/api"
    assert onboard_config(params(osm_kind="overpass", overpass_url=url), settings)["osm"] == {
        "kind": "overpass",
        "overpass_url": url,
    }


def test_given_fields_override_the_preset(settings):
    columns = {"vehicle_id": "taxi", "timestamp": "time", "lon": "lng", "lat": "lat"}
    data = onboard_config(
        params(raw_preset="geolife", raw_path="lisbon/points.csv", timestamp_format="unix_ms", columns=columns),
        settings,
    )
    assert data["raw"]["format"] == "point_log" and data["raw"]["timestamp_format"] == "unix_ms"
    assert data["raw"]["columns"] == columns and data["raw"]["timestamp_timezone"] == "UTC"
    assert RAW_PRESETS["geolife"]["timestamp_format"] == "yyyy-MM-dd HH:mm:ss"  # the preset is not changed


def test_every_problem_is_listed_at_once(settings):
    bad = {"city": "Bad Name", "bbox": [1, 2, 3], "raw_preset": "nope", "licence": " ", "n_shot": 0}
    with pytest.raises(OnboardParamsError) as err:
        onboard_config(bad, settings)
    message = str(err.value)
    for field in ("city:", "bbox:", "raw_preset:", "raw_path:", "licence:", "timezone:", "n_shot:"):
        assert f"\n  {field}" in message, field


# ------------------------------------------------------------------------------ the generated Params


def test_the_params_schema_comes_from_the_model():
    props, required = trigger_schema()
    assert list(props) == list(OnboardTrigger.model_fields)
    assert set(required) == {"city", "bbox", "timezone", "raw_path", "licence", "sampling_interval_s"}
    assert "default" not in props["bbox"] and props["bbox"]["minItems"] == props["bbox"]["maxItems"] == 4
    assert props["n_shot"]["maximum"] == OnboardTrigger.model_fields["n_shot"].metadata[1].le
    assert props["raw_preset"]["enum"] == [*RAW_PRESETS, None]
    assert props["cleaning"]["additionalProperties"] is False  # nested models inlined, strict


def test_the_airflow_params_refuse_at_trigger_time():
    from airflow.sdk.exceptions import ParamValidationError

    p = airflow_params()
    assert not p["bbox"].has_value and not p["licence"].has_value  # no default to fall back on
    for name, value in [
        ("bbox", None),
        ("bbox", [1, 2, 3]),
        ("bbox", [-200, 38.69, -9.09, 38.8]),
        ("n_shot", 10**12),
        ("description", "a\x00b"),
        ("osm_kind", "shapefile"),
        ("cleaning", {"max_sped_kmh": 1}),
        ("raw_preset", "gpx"),
    ]:
        with pytest.raises(ParamValidationError):
            p[name].resolve(value)
    assert p["raw_preset"].resolve(None) is None and p["n_shot"].resolve(5) == 5
    assert p["bbox"].resolve([-9.25, 38.69, -9.09, 38.8]) == [-9.25, 38.69, -9.09, 38.8]


# ------------------------------------------------------------------------------ docs/onboarding.md

DOC = Path(__file__).resolve().parents[2] / "docs" / "onboarding.md"


def test_the_docs_trigger_is_accepted(tmp_path):
    conf = json.loads(re.search(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1))
    settings = Settings.load(home=tmp_path)
    for key in ("raw_path", "osm_path"):
        (settings.incoming / conf[key]).parent.mkdir(parents=True, exist_ok=True)
        (settings.incoming / conf[key]).write_text("stand-in for the example's file\n")
    data = onboard_config(conf, settings)
    assert data["raw"]["columns"]["trip_state"] == "status" and data["osm"]["kind"] == "osm_xml"


def test_the_docs_table_shows_every_class():
    rows = [ln for ln in DOC.read_text(encoding="utf-8").splitlines() if ln.startswith("| ") and "` |" in ln]
    assert len(rows) >= 60
    for klass in {c for c, _, _, _ in HOSTILE}:
        assert any(r.startswith(f"| {klass} |") for r in rows), klass
