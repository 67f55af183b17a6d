"""Helpers shared by the ingestion tests: test cities and landing a file as a delivery."""

from __future__ import annotations

import re
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


PORTO_HEADER = "TRIP_ID,CALL_TYPE,ORIGIN_CALL,ORIGIN_STAND,TAXI_ID,TIMESTAMP,DAY_TYPE,MISSING_DATA,POLYLINE"


def porto_rows(n: int, *, taxi: int, start: int = 1372669200, points: int = 8) -> list[str]:
    """`n` valid Porto data lines of one taxi (10:00 Lisbon on 2013-07-01 onwards, one trip an hour),
    each a short drive inside the city's bounding box, ~100 m per 15 s fix."""
    rows = []
    for i in range(n):
        ts = start + 3600 * i
        lon0, lat0 = -8.62 + 0.002 * (taxi % 20), 41.15 + 0.001 * i
        poly = ",".join(f"[{lon0 + 0.0012 * k:.6f},{lat0:.6f}]" for k in range(points))
        rows.append(f'{ts}{taxi:08d},"C","","","{20000000 + taxi}","{ts}","A","False","[{poly}]"')
    return rows


def write_rows(path: Path, rows: list[str], *, header: str = PORTO_HEADER, sep: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((sep.join([header, *rows]) + sep).encode())
    return path


def land_distinct_trips(settings, city: str, date: str, *files: Path) -> Path:
    """Land files as one delivery with each file's TRIP_IDs made its own (a digit per file appended), so
    that files built from the same real trips do not conflict (conflicting_duplicate) with each other.
    Only the leading TRIP_ID digits of a line change: every byte else is landed as it was."""
    folder = land(settings, city, date)
    for i, f in enumerate(files):
        raw = re.sub(rb"(?m)^(\d{6,})(,)", rb"\g<1>" + str(i % 10).encode() + rb"\2", f.read_bytes())
        (folder / f.name).write_bytes(raw)
    return folder
