import pytest
import yaml

from transfertraj.core.city_config import (
    CityConfigError,
    city_to_yaml,
    list_cities,
    load_city,
    load_city_file,
    parse_city,
)
from transfertraj.core.settings import BUNDLED_CITY_DIR, Settings


def _porto_dict() -> dict:
    return yaml.safe_load((BUNDLED_CITY_DIR / "porto.yaml").read_text())


def test_bundled_cities_validate_and_point_at_bundled_data():
    settings = Settings.load()
    names = set(list_cities(settings))
    assert {"porto", "beijing", "sanfrancisco"} <= names
    for name in ("porto", "beijing", "sanfrancisco"):
        city = load_city(name, settings)
        assert city.raw.path.is_file(), city.raw.path
        assert city.raw.licence
        if city.has_osm:
            assert city.osm.path.is_file()


def test_metric_crs_derived_from_centre():
    assert load_city("porto").crs == "EPSG:32629"
    assert load_city("beijing").crs == "EPSG:32650"
    assert load_city("sanfrancisco").crs == "EPSG:32610"


def test_beijing_has_no_osm_and_non_commercial_licence():
    city = load_city("beijing")
    assert not city.has_osm
    assert "non-commercial" in city.raw.licence


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["bbox"].update(min_lon=200), "bbox.min_lon"),
        (lambda d: d["bbox"].update(min_lon=-8.0), "bbox"),  # min above max
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone"),
        (lambda d: d.update(sampling_interval_s=0), "sampling_interval_s"),
        (lambda d: d.update(name="Porto City"), "name"),
        (lambda d: d.update(min_points=200), "(top level)"),
        (lambda d: d["raw"].update(format="gpx"), "raw.format"),
        (lambda d: d.update(phi_metres=100), "phi_metres"),  # unknown field, a typo
        (lambda d: d["osm"].pop("path"), "osm"),
    ],
)
def test_bad_field_is_named(mutate, field):
    data = _porto_dict()
    mutate(data)
    with pytest.raises(CityConfigError) as err:
        parse_city(data, "porto.yaml")
    assert f"porto.yaml: {field}" in str(err.value)


def test_point_log_needs_column_mapping():
    data = yaml.safe_load((BUNDLED_CITY_DIR / "beijing.yaml").read_text())
    del data["raw"]["columns"]["lon"]
    with pytest.raises(CityConfigError, match=r"raw: .*\['lon'\]"):
        parse_city(data, "beijing.yaml")


def test_relative_paths_resolve_against_the_file(tmp_path):
    data = _porto_dict()
    data["raw"]["path"] = "raw/trips.csv"
    f = tmp_path / "porto.yaml"
    f.write_text(yaml.safe_dump(data))
    assert load_city_file(f).raw.path == tmp_path / "raw" / "trips.csv"


def test_name_must_match_file(tmp_path):
    f = tmp_path / "lisbon.yaml"
    f.write_text(yaml.safe_dump(_porto_dict()))
    with pytest.raises(CityConfigError, match="must match the file name"):
        load_city_file(f)


def test_unknown_city_lists_known_ones():
    with pytest.raises(CityConfigError, match="known: .*porto"):
        load_city("atlantis")


def test_round_trip_through_yaml(tmp_path):
    city = parse_city(_porto_dict())
    again = parse_city(yaml.safe_load(city_to_yaml(city)))
    assert again == city


def test_invalid_yaml_names_the_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("name: [unclosed")
    with pytest.raises(CityConfigError, match="broken.yaml: not valid YAML"):
        load_city_file(f)


def _point_log_raw(**extra) -> dict:
    cols = {"vehicle_id": "taxi", "timestamp": "time", "lon": "lng", "lat": "lat"}
    return {"format": "point_log", "path": "x.tsv", "licence": "t", "columns": cols, **extra}


@pytest.mark.parametrize(
    "extra, name, expected",
    [
        ({}, "fleet.tsv", "\t"),
        ({}, "fleet.TSV.gz", "\t"),
        ({}, "fleet.csv", ","),
        ({}, "fleet.txt", ","),
        ({"delimiter": ";"}, "fleet.csv", ";"),
        ({"delimiter": "\t"}, "fleet.txt", "\t"),
    ],
)
def test_delimiter_by_extension_unless_set(extra, name, expected):
    city = parse_city({**_porto_dict(), "raw": _point_log_raw(**extra)})
    assert city.raw.delimiter_for(name) == expected
    assert city.raw.header is True


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"delimiter": ";;"}, "must be one character"),
        ({"delimiter": '"'}, "must be one character"),
        ({"header": False}, "with header: false every column is a 0-based position"),
        ({"columns": {"vehicle_id": 0, "timestamp": 1, "lon": 2, "lat": 3}}, "by position .*need header: false"),
        ({"header": False, "columns": {"vehicle_id": 0, "timestamp": 0, "lon": 2, "lat": 3}}, "must be distinct"),
        ({"datum": "bd09"}, "Input should be 'wgs84' or 'gcj02'"),
    ],
)
def test_bad_reading_options_name_the_field(extra, message):
    field = "datum" if "datum" in extra else "raw"
    raw = {k: v for k, v in extra.items() if k != "datum"}
    with pytest.raises(CityConfigError, match=f"{field}: .*{message}"):
        parse_city(
            {**_porto_dict(), **({"datum": extra["datum"]} if "datum" in extra else {}), "raw": _point_log_raw(**raw)}
        )


def test_headerless_columns_by_position_and_the_datum():
    """The documented mapping of a headerless file: 0-based positions, read as Spark's _c0, _c1, ..."""
    raw = _point_log_raw(header=False, columns={"vehicle_id": 0, "timestamp": 2, "lon": 3, "lat": 4})
    city = parse_city({**_porto_dict(), "datum": "gcj02", "raw": raw})
    assert city.raw.file_columns == {"vehicle_id": "_c0", "timestamp": "_c2", "lon": "_c3", "lat": "_c4"}
    assert city.datum == "gcj02"
    assert parse_city(yaml.safe_load(city_to_yaml(city))) == city
    named = parse_city({**_porto_dict(), "raw": _point_log_raw()})
    assert named.datum == "wgs84" and named.raw.file_columns["lon"] == "lng"
