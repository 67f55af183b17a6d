"""One YAML file per city, validated on load.

    from transfertraj.core.city_config import load_city
    city = load_city("porto")            # searches Settings.city_dirs for porto.yaml
    city = load_city_file(Path("x.yaml"))

A bad file fails with `CityConfigError` naming the file and the field, e.g.
"config/cities/porto.yaml: bbox.min_lon: Input should be less than or equal to 180".
Relative paths in a city file are resolved against the folder of that file, never the working directory.
"""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from transfertraj.core.constants import CITY_NAME_PATTERN, MAX_POINTS, PHI_DEFAULT_M
from transfertraj.core.settings import Settings

RawFormat = Literal["porto_csv", "point_log"]
OsmKind = Literal["osm_xml", "gis_extract", "overpass", "none"]
CANONICAL_COLUMNS = ("vehicle_id", "timestamp", "lon", "lat", "trip_state")  # what a point_log maps
# A city is tens of km across: a box above this area is a typo (a degree for a tenth), one side below
# MIN_BBOX_SIDE_DEG (about 100 m) a point pasted twice. Greater Tokyo's box is about 15 000 km2.
MAX_BBOX_KM2 = 50_000
MIN_BBOX_SIDE_DEG = 0.001
# Licence texts that say nothing: the licence travels with the data and decides what may be done with it.
PLACEHOLDER_LICENCES = frozenset({"unknown", "none", "n/a", "na", "tbd", "todo", "?", "-", "licence", "license"})


def _city_name(value: str) -> str:
    if not re.fullmatch(CITY_NAME_PATTERN, value):
        raise ValueError(
            f"{value!r} must be 2-40 lower case letters, digits or _, starting with a letter "
            "(it names the city file, its table partitions and the model transfertraj-<name>)"
        )
    return value


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Lisbon)") from None
    return value


def _licence(value: str) -> str:
    if not value.strip() or value.strip().lower() in PLACEHOLDER_LICENCES:
        raise ValueError(
            f"{value!r} names no licence: say under which licence the raw data may be used, e.g. 'CC BY 4.0'"
        )
    return value


def _https_url(value: str) -> str:
    parts = urlsplit(value)
    loopback = parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")  # a local mirror
    if not (parts.scheme == "https" or loopback) or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError(
            f"{value!r} must be an https:// URL (or http:// on localhost), e.g. https://overpass-api.de/api"
        )
    if parts.username or parts.password:
        raise ValueError("a URL with a user name or password would write a secret into the city file")
    return value


# The rules of single values, stated once: the city file's fields and the onboard_city trigger use them.
Longitude = Annotated[float, Field(ge=-180, le=180)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
TimeZone = Annotated[str, AfterValidator(_time_zone)]
Licence = Annotated[str, AfterValidator(_licence)]
HttpsUrl = Annotated[str, Field(max_length=2000), AfterValidator(_https_url)]
CityName = Annotated[str, Field(json_schema_extra={"pattern": CITY_NAME_PATTERN}), AfterValidator(_city_name)]
SamplingInterval = Annotated[float, Field(gt=0, le=3600)]
PhiMetres = Annotated[float, Field(gt=0, le=2000)]


class CityConfigError(ValueError):
    """A city file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BBox(_Strict):
    """WGS-84 bounding box of the city's service area; points outside it split a trip."""

    min_lon: Longitude
    min_lat: Latitude
    max_lon: Longitude
    max_lat: Latitude

    @model_validator(mode="after")
    def _ordered(self) -> BBox:
        if self.min_lon >= self.max_lon:
            raise ValueError(f"min_lon {self.min_lon} must be below max_lon {self.max_lon}")
        if self.min_lat >= self.max_lat:
            raise ValueError(f"min_lat {self.min_lat} must be below max_lat {self.max_lat}")
        if self.max_lon - self.min_lon > 5 or self.max_lat - self.min_lat > 5:
            raise ValueError("a city box wider than 5 degrees is almost certainly a typo")
        if min(self.max_lon - self.min_lon, self.max_lat - self.min_lat) < MIN_BBOX_SIDE_DEG:
            raise ValueError(f"a side shorter than {MIN_BBOX_SIDE_DEG} degrees (about 100 m) is a point, not a city")
        if self.area_km2 > MAX_BBOX_KM2:
            raise ValueError(f"{self.area_km2:,.0f} km2 is above {MAX_BBOX_KM2:,} km2: a city box, not a region")
        if self.min_lon <= 0 <= self.max_lon and self.min_lat <= 0 <= self.max_lat:
            raise ValueError("the box holds (0, 0), where unset coordinates land (Null Island): give the city's box")
        return self

    @property
    def area_km2(self) -> float:
        """Approximate area (equirectangular at the box's mean latitude): enough to tell a city from a region."""
        mid = math.radians((self.min_lat + self.max_lat) / 2)
        return (self.max_lon - self.min_lon) * 111.32 * math.cos(mid) * (self.max_lat - self.min_lat) * 110.57

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.min_lon + self.max_lon) / 2, (self.min_lat + self.max_lat) / 2)


class RawSource(_Strict):
    r"""Where the city's raw GPS logs come from and how to read them. A tab-separated point log:

    raw:
      format: point_log
      path: ../data/samples/chengdu.tsv      # .tsv is read tab-separated, anything else comma-separated
      delimiter: "\t"                        # only to override that guess: ";" or "|" for other exports
      header: true                           # the first line names the columns
      columns: {vehicle_id: taxi, timestamp: time, lon: lng, lat: lat}
      timestamp_format: auto                 # 2014-01-31 23:00:00.739166, ...T...+08:00, ...Z, Unix s/ms/us/ns
      timestamp_timezone: Asia/Shanghai      # the zone of timestamps without an offset
      licence: "..."

    A file without a header line (DiDi's GAIA exports: `driver,order,1475337610,104.04,30.69`) names
    its columns by 0-based position, and every line is data:

      header: false
      columns: {vehicle_id: 0, timestamp: 2, lon: 3, lat: 4}     # column 1 (the order id) is not read

    Parquet files (`.parquet`) are read as Parquet: columns by name (by position with header: false),
    typed values (a timestamp column is an instant; numbers are read as written). Delimiter and
    compression options apply to the text files only.
    """

    format: RawFormat
    path: Path  # the bundled sample (or a delivery folder); relative to the city file
    # Canonical column -> column name in the file. porto_csv needs none (its header is fixed);
    # point_log needs vehicle_id, timestamp, lon, lat and may name trip_state (e.g. SF 'occupied').
    # With header: false the values are 0-based positions (ints), read as the columns `_c0`, `_c1`, ...
    columns: dict[str, str | int] = Field(default_factory=dict)
    trip_state_value: str | None = None  # with a trip_state column: the state whose runs are trips (SF: "1")
    timestamp_format: str = "auto"  # auto | unix_s | unix_ms | unix_us | unix_ns | a Spark datetime pattern
    timestamp_timezone: TimeZone = "UTC"  # zone of timestamps written as text without an offset
    compression: Literal["none", "gzip", "auto"] = "auto"
    delimiter: str | None = None  # one character; None: tab for .tsv(.gz) files, else ','
    header: bool = True  # the first line of each file names its columns; false: columns by position
    licence: Licence
    provenance: str = ""
    # Real deliveries too large for the repository: glob patterns under the datasets root
    # (Settings.datasets, TRANSFERTRAJ_DATASETS), landed by `transfertraj land --city X --datasets`.
    datasets: list[str] = Field(default_factory=list)

    @property
    def file_columns(self) -> dict[str, str]:
        """Canonical column -> the column as the files are read: its header name, or `_c<position>`
        (Spark's own name for a column of a headerless file) with header: false."""
        return {canon: positional_column(col) if isinstance(col, int) else col for canon, col in self.columns.items()}

    def delimiter_for(self, file_name: str) -> str:
        """The field delimiter of one landed file: the configured one, else by extension."""
        if self.delimiter is not None:
            return self.delimiter
        return "\t" if file_name.lower().removesuffix(".gz").endswith(".tsv") else ","

    @model_validator(mode="after")
    def _columns(self) -> RawSource:
        if self.delimiter is not None and (len(self.delimiter) != 1 or self.delimiter in '"\r\n'):
            raise ValueError(
                f"delimiter {self.delimiter!r} must be one character other than a quote or a line break "
                "(e.g. ',', ';', '|' or \"\\t\" for tab); leave it out to go by the file extension"
            )
        positions = [c for c in self.columns.values() if isinstance(c, int)]
        if not self.header and self.format == "porto_csv":
            raise ValueError("header: false needs format point_log (porto_csv files have their fixed header)")
        if not self.header and len(positions) != len(self.columns):
            raise ValueError(
                "with header: false every column is a 0-based position, e.g. {vehicle_id: 0, timestamp: 1, lon: 2, lat: 3}"
            )
        if self.header and positions:
            raise ValueError("columns by position (numbers) need header: false; with a header name the columns")
        if any(p < 0 for p in positions) or len(set(positions)) != len(positions):
            raise ValueError(f"column positions {sorted(positions)} must be distinct and 0 or more")
        if self.format == "porto_csv" and self.columns:
            raise ValueError("porto_csv has a fixed header (TRIP_ID, TIMESTAMP, POLYLINE, ...): give no columns")
        if self.format == "point_log":
            missing = {"vehicle_id", "timestamp", "lon", "lat"} - set(self.columns)
            if missing:
                raise ValueError(f"point_log needs a column mapping for {sorted(missing)}")
            unknown = set(self.columns) - set(CANONICAL_COLUMNS)
            if unknown:
                raise ValueError(f"unknown canonical columns {sorted(unknown)}; known: {list(CANONICAL_COLUMNS)}")
            if any(isinstance(name, str) and not name.strip() for name in self.columns.values()):
                raise ValueError("columns: every canonical column needs a file column name, not an empty one")
            by_name: dict[str, list[str]] = {}
            for canonical, name in self.columns.items():
                by_name.setdefault(name, []).append(canonical)
            shared = {name: c for name, c in by_name.items() if len(c) > 1}
            if shared:
                raise ValueError(
                    "columns: "
                    + "; ".join(f"{' and '.join(c)} both map to file column {n!r}" for n, c in shared.items())
                    + " (each canonical column reads its own file column)"
                )
        if self.trip_state_value is not None and "trip_state" not in self.columns:
            raise ValueError("trip_state_value needs a trip_state column in columns (the state it is compared with)")
        return self


def positional_column(position: int) -> str:
    """The name a headerless file's column is read under (Spark's `_c0`, `_c1`, ...)."""
    return f"_c{position}"


class OsmSource(_Strict):
    """The city's OpenStreetMap context: a local file, Overpass, or none (spatial + temporal only)."""

    kind: OsmKind
    path: Path | None = None  # osm_xml: one .osm/.osm.bz2; gis_extract: lines file (points in points_path)
    points_path: Path | None = None
    place: str | None = None  # overpass by place name (else by bbox)
    snapshot_date: date | None = None
    # overpass: the API's base URL (osmnx appends /interpreter and /status), e.g. your own instance or the
    # public https://overpass-api.de/api; never assumed, so no job sends a city's queries anywhere unasked.
    overpass_url: HttpsUrl | None = None
    # POI categories this source really covers; the others are marked missing, never zero.
    poi_categories_covered: list[str] | None = None
    licence: str = "(c) OpenStreetMap contributors, ODbL 1.0"

    @model_validator(mode="after")
    def _paths(self) -> OsmSource:
        for problem in osm_source_problems(self.kind, {f: getattr(self, f) for f in OSM_NEEDS}):
            raise ValueError(problem)
        return self


# Per OSM source field: what it is, and the kinds that need it (the others would drop it without a word).
OSM_NEEDS = {
    "path": ("the OSM file", ("osm_xml", "gis_extract")),
    "points_path": ("the OSM points file for POIs", ("gis_extract",)),
    "overpass_url": (
        "the Overpass API to query, https://... (the public https://overpass-api.de/api only when you "
        "mean it: it rate-limits)",
        ("overpass",),
    ),
    "place": ("a place name to query instead of the bbox", ()),
}
_OSM_READS = {"overpass": ("place",)}  # optional fields a kind reads


def osm_source_problems(kind: str, given: dict) -> list[str]:
    """The OSM fields a kind needs but lacks, and those given to a kind that would not read them."""
    problems = []
    for field, (what, kinds) in OSM_NEEDS.items():
        if kind in kinds and given.get(field) is None:
            problems.append(f"{field}: kind {kind} needs {field}, {what}")
        elif given.get(field) is not None and kind not in kinds and field not in _OSM_READS.get(kind, ()):
            problems.append(f"{field}: kind {kind} does not read {field}: set the kind that uses it, or leave it out")
    return problems


class Cleaning(_Strict):
    max_speed_kmh: float = Field(default=150, gt=0, le=1000)
    gap_split_s: float = Field(default=300, gt=0, le=86400)  # a time gap longer than this starts a new trip
    stay_split_s: float = Field(default=300, gt=0, le=86400)  # a stay this long splits the trip (see flag_stays)
    stay_radius_m: float = Field(default=100, gt=0, le=10_000)  # ... if it spans at most this
    stay_max_speed_kmh: float = Field(default=3, gt=0, le=100)  # ... and every fix in it is reached slower than this
    min_vehicle_speed_kmh: float = Field(default=0, ge=0, le=200)  # trips slower on average are not vehicle trips
    long_trips: Literal["window", "drop"] = "window"  # cut trips above max_points into windows


class QualityGate(_Strict):
    max_rejected_share: float = Field(default=0.2, ge=0, le=1)
    min_trajectories: int = Field(default=1, ge=0, le=10_000_000)


class CityConfig(_Strict):
    name: CityName
    description: str = ""
    bbox: BBox
    timezone: TimeZone
    metric_crs: str = "auto"  # 'auto' = UTM zone of the bbox centre, or e.g. 'EPSG:32629'
    # The datum of the raw coordinates: gcj02 for Chinese sources (DiDi; the paper's Chengdu and Xi'an),
    # converted to WGS-84 at ingestion and serving (transfertraj/features/datum.py). bbox is WGS-84 either way.
    datum: Literal["wgs84", "gcj02"] = "wgs84"
    raw: RawSource
    osm: OsmSource
    sampling_interval_s: SamplingInterval
    min_points: int = Field(default=5, ge=2, le=10 * MAX_POINTS)
    max_points: int = Field(default=MAX_POINTS, ge=3, le=10 * MAX_POINTS)
    phi_m: PhiMetres = PHI_DEFAULT_M
    cleaning: Cleaning = Cleaning()
    quality: QualityGate = QualityGate()
    source_file: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _points(self) -> CityConfig:
        if self.min_points > self.max_points:
            raise ValueError(f"min_points {self.min_points} is above max_points {self.max_points}")
        return self

    @property
    def crs(self) -> str:
        """The metric CRS: explicit, or the UTM zone of the bbox centre."""
        if self.metric_crs != "auto":
            return self.metric_crs
        lon, lat = self.bbox.centre
        zone = int(math.floor((lon + 180) / 6)) + 1
        return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"

    @property
    def has_osm(self) -> bool:
        return self.osm.kind != "none"


def _resolve(base: Path, path: Path | None) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _format_errors(source: Path | str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{source}: {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_city(data: dict, source: Path | str = "<dict>") -> CityConfig:
    """Validate a dict as a city config; paths stay as given."""
    if not isinstance(data, dict):
        raise CityConfigError(f"{source}: a city file must be a YAML mapping, got {type(data).__name__}")
    try:
        return CityConfig.model_validate(data)
    except ValidationError as err:
        raise CityConfigError(_format_errors(source, err)) from None


def load_city_file(path: Path) -> CityConfig:
    """Read and validate one city file; relative paths inside it resolve against its folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CityConfigError(f"{path}: no such city file") from None
    except yaml.YAMLError as err:
        raise CityConfigError(f"{path}: not valid YAML: {err}") from None
    city = parse_city(data, path)
    if city.name != path.stem:
        raise CityConfigError(f"{path}: name: '{city.name}' must match the file name '{path.stem}'")
    base = path.resolve().parent
    raw = city.raw.model_copy(update={"path": _resolve(base, city.raw.path)})
    osm = city.osm.model_copy(
        update={"path": _resolve(base, city.osm.path), "points_path": _resolve(base, city.osm.points_path)}
    )
    return city.model_copy(update={"raw": raw, "osm": osm, "source_file": path.resolve()})


def city_file(name: str, settings: Settings | None = None) -> Path:
    """The first `<name>.yaml` on the city search path."""
    settings = settings or Settings.load()
    for folder in settings.city_dirs:
        candidate = Path(folder) / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(list_cities(settings))) or "none"
    searched = ", ".join(str(d) for d in settings.city_dirs)
    raise CityConfigError(f"no city named '{name}' (searched {searched}; known: {known})")


def load_city(name: str, settings: Settings | None = None) -> CityConfig:
    return load_city_file(city_file(name, settings))


def list_cities(settings: Settings | None = None) -> dict[str, Path]:
    """name -> file, earlier folders on the search path winning."""
    settings = settings or Settings.load()
    found: dict[str, Path] = {}
    for folder in settings.city_dirs:
        for f in sorted(Path(folder).glob("*.yaml")) if Path(folder).is_dir() else []:
            found.setdefault(f.stem, f)
    return found


def city_to_yaml(city: CityConfig) -> str:
    """Serialize a validated config (paths as strings) for writing a new city file."""
    return yaml.safe_dump(city.model_dump(mode="json", exclude_none=True), sort_keys=False)
