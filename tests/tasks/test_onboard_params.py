"""Trigger params of onboard_city -> a city config dict; a bad trigger lists every problem at once."""

import pytest

from transfertraj.core.constants import PHI_DEFAULT_M
from transfertraj.core.settings import Settings
from transfertraj.tasks.onboard_params import RAW_PRESETS, OnboardParamsError, onboard_config


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "incoming").mkdir()
    (tmp_path / "incoming" / "trips.csv").write_text("TRIP_ID,POLYLINE\n")
    return Settings.load(home=tmp_path)


def params(**over):
    base = {
        "city": "lisbon",
        "bbox": [-9.25, 38.69, -9.09, 38.80],
        "timezone": "Europe/Lisbon",
        "raw_path": "incoming/trips.csv",
        "raw_preset": "porto_csv",
        "licence": "CC BY 4.0",
    }
    return {**base, **over}


def test_a_good_trigger_becomes_a_city_config(settings):
    data = onboard_config(params(), settings)
    assert data["name"] == "lisbon"
    assert data["bbox"] == {"min_lon": -9.25, "min_lat": 38.69, "max_lon": -9.09, "max_lat": 38.80}
    assert data["raw"] == {
        "format": "porto_csv",
        "timestamp_format": "unix_s",
        "path": str((settings.home / "incoming" / "trips.csv").resolve()),  # relative to the data root
        "licence": "CC BY 4.0",
        "provenance": "",
    }
    assert data["osm"] == {"kind": "none"} and data["phi_m"] == PHI_DEFAULT_M


def test_given_fields_override_the_preset(settings):
    columns = {"vehicle_id": "car", "timestamp": "t", "lon": "x", "lat": "y"}
    data = onboard_config(params(raw_preset="geolife", timestamp_format="unix_ms", columns=columns), settings)
    assert data["raw"]["format"] == "point_log" and data["raw"]["timestamp_format"] == "unix_ms"
    assert data["raw"]["columns"] == columns and data["raw"]["timestamp_timezone"] == "UTC"
    assert RAW_PRESETS["geolife"]["timestamp_format"] == "yyyy-MM-dd HH:mm:ss"  # the preset is not changed


def test_every_problem_is_listed_at_once(settings):
    bad = {"city": "Bad Name", "bbox": [1, 2, 3], "raw_preset": "nope", "licence": " ", "osm_kind": "osm_xml"}
    with pytest.raises(OnboardParamsError) as err:
        onboard_config(bad, settings)
    message = str(err.value)
    for field in ("city:", "bbox:", "raw_preset:", "raw_format:", "raw_path:", "licence:", "osm_path:"):
        assert f"\n  {field}" in message, field


def test_files_must_exist_inside_the_data_root(settings, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "trips.csv"
    outside.write_text("")
    with pytest.raises(OnboardParamsError, match="outside the data root"):
        onboard_config(params(raw_path=str(outside)), settings)
    with pytest.raises(OnboardParamsError, match="osm_path: .*missing.osm does not exist"):
        onboard_config(params(osm_kind="osm_xml", osm_path="incoming/missing.osm"), settings)
