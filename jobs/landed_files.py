"""Find a delivery's landed files and check each one before Spark reads it.

A fatal problem (unreadable file, unknown format, required columns missing) raises `LandingError`
naming the file and what is wrong. An empty or header-only file is not fatal: it holds zero rows and
the run's accounting says so.
"""

from __future__ import annotations

import csv
import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

from transfertraj.core.city_config import CityConfig

log = logging.getLogger(__name__)

PORTO_COLUMNS = (
    "TRIP_ID",
    "CALL_TYPE",
    "ORIGIN_CALL",
    "ORIGIN_STAND",
    "TAXI_ID",
    "TIMESTAMP",
    "DAY_TYPE",
    "MISSING_DATA",
    "POLYLINE",
)
PORTO_REQUIRED = ("TRIP_ID", "TAXI_ID", "TIMESTAMP", "POLYLINE")
READABLE_SUFFIXES = (".csv", ".txt", ".gz", ".tsv")


class LandingError(ValueError):
    """A landed file cannot be ingested at all; the message names the file."""


@dataclass(frozen=True)
class LandedFile:
    path: Path
    header: str | None  # None: the file is empty
    columns: tuple[str, ...]


def required_columns(city: CityConfig) -> dict[str, str]:
    """Canonical name -> column name in the file."""
    if city.raw.format == "porto_csv":
        return {c: c for c in PORTO_REQUIRED}
    return dict(city.raw.columns)


def _first_line(path: Path) -> str | None:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.readline()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise LandingError(f"{path}: unreadable ({err})") from None
    if not raw:
        return None
    return raw.decode("utf-8", errors="replace").rstrip("\r\n").lstrip("\ufeff")


def inspect_file(path: Path, city: CityConfig) -> LandedFile:
    header = _first_line(path)
    if header is None:
        log.warning("%s is empty: 0 rows", path)
        return LandedFile(path, None, ())
    columns = tuple(c.strip() for c in next(csv.reader([header])))
    missing = [
        f"{canon} (column '{col}')" if canon != col else col
        for canon, col in required_columns(city).items()
        if col not in columns
    ]
    if missing:
        raise LandingError(
            f"{path}: the header lacks required column(s) {', '.join(missing)} for format "
            f"{city.raw.format}; header is: {header[:200]}"
        )
    extra = set(columns) - set(required_columns(city).values()) - set(PORTO_COLUMNS)
    if extra:
        log.info("%s: ignoring extra column(s) %s", path.name, sorted(extra))
    return LandedFile(path, header, columns)


def landed_files(landing_dir: Path, city: CityConfig) -> list[LandedFile]:
    """Every data file of one delivery folder, inspected. Hidden files and markers are skipped."""
    if not landing_dir.is_dir():
        raise LandingError(f"{landing_dir}: no such landing folder (land the delivery first)")
    files = sorted(p for p in landing_dir.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    unknown = [p for p in files if not p.name.endswith(READABLE_SUFFIXES)]
    if unknown:
        raise LandingError(f"{unknown[0]}: unknown file type (expected one of {', '.join(READABLE_SUFFIXES)})")
    return [inspect_file(p, city) for p in files]
