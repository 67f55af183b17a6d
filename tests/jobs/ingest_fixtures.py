"""Helpers shared by the ingestion tests: test cities and landing a file as a delivery."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from transfertraj.core.city_config import CityConfig, load_city_file, parse_city
from transfertraj.core.settings import BUNDLED_CITY_DIR

BAD_INPUTS = Path(__file__).resolve().parent.parent / "data" / "bad_inputs"


def porto_like(name: str = "porto", **overrides) -> CityConfig:
    """The bundled Porto config (resolved paths), with overrides and a permissive quality gate."""
    city = load_city_file(BUNDLED_CITY_DIR / "porto.yaml")
    data = city.model_dump(mode="json", exclude_none=True)
    data["name"] = name
    data["quality"] = {"max_rejected_share": 1.0, "min_trajectories": 0}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return parse_city(data)


def point_log_city(name: str = "pointlog", **overrides) -> CityConfig:
    data = porto_like(name).model_dump(mode="json", exclude_none=True)
    data["raw"] = {
        "format": "point_log",
        "path": "unused.csv",
        "columns": {"vehicle_id": "vehicle_id", "timestamp": "timestamp", "lon": "lon", "lat": "lat"},
        "timestamp_format": "auto",
        "licence": "test data",
    }
    data.update(overrides)
    return parse_city(data)


def land(settings, city: str, date: str, *files: Path) -> Path:
    folder = settings.landing / city / date
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


def data_lines(path: Path) -> int:
    """Rows in a file, counted independently of Spark: physical lines minus the header line."""
    raw = path.read_bytes()
    if not raw:
        return 0
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines = lines[:-1]
    return len(lines) - 1


def write_city(folder: Path, city: CityConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{city.name}.yaml"
    path.write_text(yaml.safe_dump(city.model_dump(mode="json", exclude_none=True)))
    return path
