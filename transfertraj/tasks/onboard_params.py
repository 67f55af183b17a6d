"""What a person types when triggering onboard_city: one pydantic model, which also generates the DAG's Params.

    from transfertraj.tasks.onboard_params import airflow_params, onboard_config
    data = onboard_config({"city": "lisbon", "bbox": [-9.25, 38.69, -9.09, 38.80], "timezone": "Europe/Lisbon",
                           "raw_preset": "porto_csv", "raw_path": "lisbon/trips.csv", "licence": "CC BY 4.0",
                           "sampling_interval_s": 15}, settings)
    # -> {"name": "lisbon", "bbox": {...}, "raw": {"format": "porto_csv", "path": "<home>/incoming/lisbon/trips.csv"
    params = airflow_params()   # the onboard_city DAG's Params: types, ranges, enums, required-without-default

Why one model: the trigger form, the first task's check and the city file must not disagree, so every
rule is written once -- the value types of core.city_config (Longitude, TimeZone, Licence, ...) and the
fields below -- and the Airflow Params are generated from this model's JSON schema. The Params refuse at
trigger time what a JSON schema can see (a type, a range, an enum, a missing required field); the first
task validates the whole trigger with pydantic (unknown keys, files under the incoming folder, time zones,
then the city schema) and lists every problem, each named by its field. A bad trigger never improves on a
retry, so it fails once with all of them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
)

from transfertraj.core.city_config import (
    CANONICAL_COLUMNS,
    CityConfig,
    CityName,
    Cleaning,
    HttpsUrl,
    Licence,
    OsmKind,
    PhiMetres,
    QualityGate,
    RawFormat,
    SamplingInterval,
    TimeZone,
    osm_source_problems,
)
from transfertraj.core.constants import PHI_DEFAULT_M
from transfertraj.core.settings import Settings
from transfertraj.features.taxonomy import POI_CATEGORIES

# The raw formats of the public datasets, with their column mappings, so a trigger names one word.
RAW_PRESETS: dict[str, dict] = {
    "porto_csv": {"format": "porto_csv", "timestamp_format": "unix_s"},
    "cabspotting": {
        "format": "point_log",
        "timestamp_format": "unix_s",
        "trip_state_value": "1",
        "columns": {
            "vehicle_id": "cab_id",
            "timestamp": "timestamp",
            "lon": "lon",
            "lat": "lat",
            "trip_state": "occupied",
        },
    },
    "geolife": {
        "format": "point_log",
        "timestamp_format": "yyyy-MM-dd HH:mm:ss",
        "timestamp_timezone": "UTC",
        "columns": {"vehicle_id": "uid", "timestamp": "datetime", "lon": "lng", "lat": "lat"},
    },
}
MAX_CHAMPION_WAIT_S = 7 * 86400  # the sensor's own timeout: a week of waiting for the pretrain DAG
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # the same rule for the trigger form (JSON schema)


class OnboardParamsError(ValueError):
    """A trigger of onboard_city with parameters that cannot work; the message lists every problem."""


def _printable(value: str) -> str:
    """A NUL byte or a line break in a name or a path is a paste gone wrong; it would break a file or a log."""
    bad = CONTROL_CHARACTERS.search(value)
    if bad:
        raise ValueError(f"holds the control character {bad.group()!r} at position {bad.start()}: retype the value")
    return value


@dataclass(frozen=True)
class _JsonPattern:
    """Puts PRINTABLE_PATTERN into the JSON schema, so the trigger form refuses what _printable refuses."""

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        schema.setdefault("pattern", PRINTABLE_PATTERN)
        return schema


def _text(max_length: int, min_length: int = 0, base: Any = str):
    """A string of printable characters (base: a core.city_config string type whose rule applies too)."""
    return Annotated[
        base,
        StringConstraints(min_length=min_length, max_length=max_length),
        AfterValidator(_printable),
        _JsonPattern(),
    ]


def _incoming_file(value: str, info: ValidationInfo) -> str:
    """A raw or OSM file named by the trigger -> its resolved path, if it is a file under the incoming folder.

    Relative paths are relative to the incoming folder; symbolic links are resolved before the check, so a
    link cannot point the pipeline at the lake, the landing folder or anything else on the machine."""
    settings: Settings = (info.context or {}).get("settings") or Settings.load()
    root = settings.incoming.resolve()
    if ".." in PurePath(value).parts:
        raise ValueError(f"{value!r} holds '..': give the path under the incoming folder {root} without it")
    try:
        given = Path(value)
        full = (given if given.is_absolute() else settings.incoming / given).resolve()
    except (OSError, RuntimeError) as err:
        raise ValueError(f"{value!r} cannot be resolved ({err})") from None
    for folder, what in ((settings.lake, "the lake"), (settings.landing, "the landing folder")):
        if full.is_relative_to(folder.resolve()):
            raise ValueError(
                f"{value!r} is inside {what} ({folder}), which the pipeline writes; raw data goes under {root}"
            )
    if not full.is_relative_to(root):
        raise ValueError(f"{value!r} resolves to {full}, outside the incoming folder {root}: copy the file under it")
    if not full.is_file():
        raise ValueError(f"{full} is not a file (missing, or a folder): copy one raw file under {root} and name it")
    if full.stat().st_size == 0:
        raise ValueError(f"{full} is empty")
    return str(full)


Text = _text(200)
LongText = _text(2000)
ColumnName = _text(200, min_length=1)
ColumnPosition = Annotated[int, Field(ge=0, le=10_000)]
Datum = Literal["wgs84", "gcj02"]
IncomingFile = Annotated[_text(4096, min_length=1), AfterValidator(_incoming_file)]
PoiCategory = Literal[POI_CATEGORIES]  # type: ignore[valid-type]
Preset = Literal[tuple(RAW_PRESETS)]  # type: ignore[valid-type]


class OnboardTrigger(BaseModel):
    """The onboard_city trigger: the city config's fields, flat, plus the onboarding run's own knobs.

    Numbers and booleans are strict (the string "100" is not a count, True is not 1); every number has a range."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    city: Annotated[CityName, Field(description="the new city's name: lower case letters, digits, _ (2-40)")]
    description: LongText = ""
    bbox: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[min_lon, min_lat, max_lon, max_lat] in WGS-84 degrees, the city's service area",
        json_schema_extra={"items": {"type": "number", "minimum": -180, "maximum": 180}},
    )
    timezone: _text(64, base=TimeZone) = Field(description="IANA time zone of the city, e.g. Europe/Lisbon")
    raw_path: IncomingFile = Field(
        description="the raw GPS file, under <data root>/incoming (absolute, or relative to that folder)"
    )
    raw_preset: Preset | None = Field(None, description="a known format with its column mapping")
    raw_format: RawFormat | None = Field(None, description="without a preset: porto_csv or point_log")
    columns: dict[Literal[CANONICAL_COLUMNS], ColumnName | ColumnPosition] | None = Field(  # type: ignore[valid-type]
        None,
        description="point_log: canonical column -> file column (vehicle_id, timestamp, lon, lat[, trip_state]); "
        "with header false, 0-based positions",
    )
    timestamp_format: Text | None = Field(None, description="auto | unix_s | unix_ms | a Spark datetime pattern")
    timestamp_timezone: _text(64, base=TimeZone) | None = Field(None, description="zone of offset-less timestamps")
    trip_state_value: Text | None = Field(None, description="with a trip_state column: the state whose runs are trips")
    delimiter: Annotated[str, StringConstraints(min_length=1, max_length=1)] | None = Field(
        None, description="one character; default tab for .tsv files, else a comma"
    )
    header: bool = Field(True, description="false: the files have no header line, columns are given by position")
    datum: Datum = Field("wgs84", description="the raw coordinates' datum: gcj02 for Chinese sources (DiDi)")
    licence: _text(2000, base=Licence) = Field(description="licence of the raw data; it travels with the data")
    provenance: LongText = ""
    sampling_interval_s: SamplingInterval = Field(description="the raw data's usual seconds between fixes")
    phi_m: PhiMetres = PHI_DEFAULT_M
    osm_kind: OsmKind = Field("none", description="the OSM context: a local file, Overpass, or none")
    osm_path: IncomingFile | None = Field(None, description="osm_xml / gis_extract: the file under incoming")
    osm_points_path: IncomingFile | None = Field(None, description="gis_extract: the points file under incoming")
    overpass_url: _text(2000, base=HttpsUrl) | None = Field(None, description="overpass: the API to query (https)")
    osm_place: Text | None = Field(None, description="overpass: a place name instead of the bbox")
    osm_snapshot_date: date | None = Field(None, strict=False, description="the OSM data's date (YYYY-MM-DD)")
    poi_categories_covered: list[PoiCategory] | None = Field(None, description="the POI categories the source holds")
    cleaning: Cleaning = Field(Cleaning(), description="overrides of the cleaning rules (city config `cleaning`)")
    quality: QualityGate = Field(QualityGate(), description="quality gate overrides")
    max_dates: int = Field(3, ge=1, le=366, description="delivery dates to ingest for onboarding")
    n_shot: int = Field(100, ge=1, le=100_000, description="few-shot: fine-tune on N trajectories")
    epochs: int = Field(10, ge=1, le=1000, description="fine-tuning epochs")
    replace: bool = Field(False, description="replace a city of this name written by an earlier trigger")
    champion_wait_s: int = Field(
        6 * 3600, ge=0, le=MAX_CHAMPION_WAIT_S, description="how long to wait for the base model's champion"
    )


# OsmSource field -> the trigger field that fills it.
OSM_TRIGGER_FIELDS = {
    "path": "osm_path",
    "points_path": "osm_points_path",
    "overpass_url": "overpass_url",
    "place": "osm_place",
    "snapshot_date": "osm_snapshot_date",
    "poi_categories_covered": "poi_categories_covered",
}


def _renamed(problem: str, names: dict[str, str]) -> str:
    """'field: message' with the field named as the trigger names it."""
    field, _, message = problem.partition(": ")
    return f"{names.get(field, field)}: {message}"


# A city config field -> the trigger field that fills it, for naming a city-schema error by what was typed.
def _trigger_field(loc: tuple, message: str = "") -> str:
    """The trigger field behind a city-schema error; a rule across raw fields names its field first."""
    head, rest = (loc[0], loc[1:]) if loc else ("", ())
    if head == "name":
        return "city"
    if head == "bbox":
        return ".".join(["bbox", *map(str, rest)])
    if head == "raw":
        if not rest:
            first = re.split(r"[\s:]", message.removeprefix("Value error, "), maxsplit=1)[0]
            return first if first in OnboardTrigger.model_fields else "columns"
        return {"path": "raw_path", "format": "raw_format"}.get(str(rest[0]), ".".join(map(str, rest)))
    if head == "osm":
        return OSM_TRIGGER_FIELDS.get(str(rest[0]), f"osm_{rest[0]}") if rest else "osm_kind"
    return ".".join(map(str, loc)) or "(trigger)"


def _shown(field: str) -> str:
    return field if field.isprintable() else repr(field)


def _model_at(loc: tuple) -> type[BaseModel]:
    """The model whose keys an error at `loc` is about (the trigger, or a nested cleaning/quality)."""
    model: type[BaseModel] = OnboardTrigger
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        if info is None or not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
            break
        model = info.annotation
    return model


def _messages(err: ValidationError, name=lambda loc, message: ".".join(map(str, loc))) -> list[str]:
    problems = []
    for e in err.errors():
        field = _shown(name(e["loc"], e["msg"]) or "(trigger)")
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            known = list(_model_at(e["loc"]).model_fields)
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            problems.append(f"{field}: unknown key{hint}")
        else:
            message = e["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {message.removeprefix(field + ': ')}")
    return problems


def parse_trigger(params: dict, settings: Settings) -> OnboardTrigger:
    """The trigger's params validated; raises OnboardParamsError listing every problem by field."""
    if not isinstance(params, dict):
        raise OnboardParamsError(f"onboard_city: the trigger must be a mapping of params, got {type(params).__name__}")
    try:
        return OnboardTrigger.model_validate(params, context={"settings": settings})
    except ValidationError as err:
        raise OnboardParamsError("onboard_city: bad parameters:\n  " + "\n  ".join(_messages(err))) from None


def city_dict(trigger: OnboardTrigger) -> dict:
    """A validated trigger -> the city config it describes (the preset filled in, given fields winning)."""
    raw: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else v) for k, v in RAW_PRESETS.get(trigger.raw_preset or "", {}).items()
    }
    if trigger.raw_format is not None:
        raw["format"] = trigger.raw_format
    if trigger.columns is not None:
        raw["columns"] = dict(trigger.columns)
    for key in ("timestamp_format", "timestamp_timezone", "trip_state_value", "delimiter"):
        if getattr(trigger, key) is not None:
            raw[key] = getattr(trigger, key)
    if not trigger.header:
        raw["header"] = False
    raw.update(path=trigger.raw_path, licence=trigger.licence, provenance=trigger.provenance)
    osm: dict[str, Any] = {"kind": trigger.osm_kind}
    for key, field in OSM_TRIGGER_FIELDS.items():
        value = getattr(trigger, field)
        if value is not None:
            osm[key] = value.isoformat() if isinstance(value, date) else value
    return {
        "name": trigger.city,
        "description": trigger.description or f"{trigger.city}: onboarded with the onboard_city DAG",
        "bbox": dict(zip(("min_lon", "min_lat", "max_lon", "max_lat"), trigger.bbox, strict=True)),
        "timezone": trigger.timezone,
        "raw": raw,
        "osm": osm,
        "sampling_interval_s": trigger.sampling_interval_s,
        "phi_m": trigger.phi_m,
        "datum": trigger.datum,
        "cleaning": trigger.cleaning.model_dump(),
        "quality": trigger.quality.model_dump(),
    }


def onboard_config(params: dict, settings: Settings) -> dict:
    """Trigger params -> a city config dict that CityConfig accepts. Raises OnboardParamsError naming each field."""
    trigger = parse_trigger(params, settings)
    data = city_dict(trigger)
    given = {key: getattr(trigger, field) for key, field in OSM_TRIGGER_FIELDS.items()}
    problems = [_renamed(p, OSM_TRIGGER_FIELDS) for p in osm_source_problems(trigger.osm_kind, given)]
    if "format" not in data["raw"]:
        problems.append(
            f"raw_format: give raw_format (porto_csv | point_log) or a raw_preset ({' | '.join(RAW_PRESETS)})"
        )
    if problems:
        raise OnboardParamsError("onboard_city: bad parameters:\n  " + "\n  ".join(problems))
    try:
        CityConfig.model_validate(data)
    except ValidationError as err:
        raise OnboardParamsError(
            "onboard_city: bad parameters:\n  " + "\n  ".join(_messages(err, _trigger_field))
        ) from None
    return data


# ---------------------------------------------------------------------------------------- Airflow Params


def _inline(node: Any, defs: dict) -> Any:
    """The JSON schema with every $ref replaced by its definition and pydantic's titles dropped."""
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _inline({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    return {k: _inline(v, defs) for k, v in node.items() if k != "title"}


def _nullable(prop: dict) -> dict:
    """anyOf [X, null] -> X with "null" among its types (the form the Airflow trigger form draws)."""
    branches = prop.get("anyOf", [])
    kept = [b for b in branches if b != {"type": "null"}]
    if len(branches) != 2 or len(kept) != 1 or "type" not in kept[0]:
        return prop
    merged = {**kept[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    merged["type"] = [kept[0]["type"], "null"]
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    return merged


def trigger_schema() -> tuple[dict[str, dict], list[str]]:
    """Each trigger field's JSON schema (self-contained), and the required fields, from OnboardTrigger."""
    schema = OnboardTrigger.model_json_schema()
    defs = schema.get("$defs", {})
    props = {name: _nullable(_inline(prop, defs)) for name, prop in schema["properties"].items()}
    return props, list(schema.get("required", []))


def airflow_params() -> dict:
    """The onboard_city DAG's Params: one per trigger field; a required field has no default to fall back on."""
    from airflow.sdk import Param

    props, _ = trigger_schema()
    params = {}
    for name, prop in props.items():
        prop = dict(prop)
        description = prop.pop("description", None)
        if "default" in prop:
            params[name] = Param(prop.pop("default"), description=description, **prop)
        else:
            params[name] = Param(description=description, **prop)
    return params
