"""What a person types when triggering onboard_city -> a city config dict, with every problem listed at once.

    from transfertraj.tasks.onboard_params import onboard_config
    data = onboard_config({"city": "lisbon", "bbox": [-9.25, 38.69, -9.09, 38.80], "raw_preset": "porto_csv",
                           "raw_path": "incoming/lisbon/trips.csv", "licence": "CC BY 4.0"}, settings)
    # -> {"name": "lisbon", "bbox": {...}, "raw": {"format": "porto_csv", "path": "/data/incoming/...", ...}, ...}

The DAG's typed params already refuse a malformed name or box at trigger time; this is the check of
what a schema cannot see (files inside the data root and present, a known raw format, a licence), and
the city schema (core.city_config.parse_city) checks the result. A bad trigger never improves on a
retry, so the error lists every problem, not the first.
"""

from __future__ import annotations

import re
from pathlib import Path

from transfertraj.core.constants import CITY_NAME_PATTERN, PHI_DEFAULT_M
from transfertraj.core.settings import Settings

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


class OnboardParamsError(ValueError):
    """A trigger of onboard_city with parameters that cannot work; the message lists every problem."""


def _inside(root: Path, value: str | None, what: str, problems: list[str]) -> Path | None:
    """`value` (absolute, or relative to the data root) resolved, if it exists inside the root; else a problem."""
    if not value:
        return None
    path = Path(value).expanduser()
    path = (root / path) if not path.is_absolute() else path
    path = path.resolve()
    if not path.is_relative_to(root.resolve()):
        problems.append(f"{what}: {value} is outside the data root {root} (put deliveries under it)")
        return None
    if not path.exists():
        problems.append(f"{what}: {path} does not exist")
        return None
    return path


def onboard_config(params: dict, settings: Settings) -> dict:
    """Trigger params -> a city config dict (not yet validated by the city schema). Raises with all problems."""
    problems: list[str] = []
    name = str(params.get("city") or "")
    if not re.match(CITY_NAME_PATTERN, name):
        problems.append(f"city: {name!r} must match {CITY_NAME_PATTERN} (lower case, digits, underscores)")
    bbox = params.get("bbox")
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        problems.append(f"bbox: {bbox!r} must be four numbers [min_lon, min_lat, max_lon, max_lat]")
        bbox = None
    preset = params.get("raw_preset") or ""
    if preset and preset not in RAW_PRESETS:
        problems.append(f"raw_preset: {preset!r} is not one of {sorted(RAW_PRESETS)}")
    raw = dict(RAW_PRESETS.get(preset, {}))
    for key in ("raw_format", "timestamp_format", "timestamp_timezone", "trip_state_value"):
        if params.get(key):
            raw[key.removeprefix("raw_")] = params[key]
    if params.get("columns"):
        raw["columns"] = dict(params["columns"])
    if "format" not in raw:
        problems.append("raw_format: give raw_format (porto_csv | point_log) or a raw_preset")
    raw_path = _inside(settings.home, params.get("raw_path"), "raw_path", problems)
    if not params.get("raw_path"):
        problems.append("raw_path: the raw GPS file is required (a path inside the data root)")
    if not str(params.get("licence") or "").strip():
        problems.append("licence: say under which licence the raw data may be used (it travels with the data)")
    osm_kind = params.get("osm_kind") or "none"
    osm: dict = {"kind": osm_kind}
    if osm_kind in ("osm_xml", "gis_extract"):
        p = _inside(settings.home, params.get("osm_path"), "osm_path", problems)
        if not params.get("osm_path"):
            problems.append(f"osm_path: osm_kind {osm_kind} needs a file inside the data root")
        osm["path"] = str(p) if p else None
        if osm_kind == "gis_extract":
            pp = _inside(settings.home, params.get("osm_points_path"), "osm_points_path", problems)
            osm["points_path"] = str(pp) if pp else None
    if params.get("osm_snapshot_date"):
        osm["snapshot_date"] = params["osm_snapshot_date"]
    if params.get("poi_categories_covered"):
        osm["poi_categories_covered"] = list(params["poi_categories_covered"])
    if problems:
        raise OnboardParamsError("onboard_city: bad parameters:\n  " + "\n  ".join(problems))
    return {
        "name": name,
        "description": str(params.get("description") or f"{name}: onboarded with the onboard_city DAG"),
        "bbox": dict(zip(("min_lon", "min_lat", "max_lon", "max_lat"), bbox)),
        "timezone": params.get("timezone"),
        "raw": {
            **raw,
            "path": str(raw_path),
            "licence": params["licence"],
            "provenance": str(params.get("provenance") or ""),
        },
        "osm": {k: v for k, v in osm.items() if v is not None},
        "sampling_interval_s": params.get("sampling_interval_s"),
        "phi_m": params.get("phi_m", PHI_DEFAULT_M),
        "cleaning": dict(params.get("cleaning") or {}),
        "quality": dict(params.get("quality") or {}),
    }
