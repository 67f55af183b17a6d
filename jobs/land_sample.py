"""Land a city's bundled sample as a delivery would arrive: landing/<city>/<date>/<file>.

    python -m jobs.land_sample --city porto        # or: transfertraj land --city porto

The nightly ingestion reads landing/<city>/<date>/ (see jobs/ingest.py). Real deliveries are dropped
there by whatever ships the logs; this job does the same for the bundled samples so the demo and the
tests run the real nightly path. A Porto CSV is one delivery (its date from the first trip's start in
the city's time zone). A point log spanning several days is split by the local date of each fix, one
file per date, rows unchanged (header repeated). Landing is idempotent: an existing file of the same
name is replaced.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import logging
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from transfertraj.core.city_config import CityConfig, load_city
from transfertraj.core.settings import Settings

log = logging.getLogger(__name__)


def _open_text(path: Path):
    raw = path.open("rb")
    if path.suffix == ".gz":
        raw = gzip.open(raw)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def _local_date(value: str, city: CityConfig) -> str | None:
    """Local delivery date of one timestamp value, or None when it does not parse."""
    tz = ZoneInfo(city.timezone)
    fmt = city.raw.timestamp_format
    try:
        if fmt in ("unix_s", "unix_ms", "auto") and value.strip().lstrip("-").isdigit():
            seconds = int(value) / (1000 if fmt == "unix_ms" or int(value) > 10**11 else 1)
            instant = datetime.fromtimestamp(seconds, tz=UTC)
        else:
            naive = datetime.fromisoformat(value.strip())
            src = ZoneInfo(city.raw.timestamp_timezone)
            instant = naive.replace(tzinfo=naive.tzinfo or src)
        return instant.astimezone(tz).date().isoformat()
    except (ValueError, OverflowError, OSError):
        return None


def land_sample(city: CityConfig, settings: Settings, *, source: Path | None = None) -> dict[str, Path]:
    """Copy the city's raw source into landing folders by delivery date. Returns date -> file."""
    source = Path(source or city.raw.path)
    base = settings.landing / city.name
    out: dict[str, Path] = {}
    if city.raw.format == "porto_csv":
        with _open_text(source) as f:
            reader = csv.reader(f)
            header = next(reader)
            first = next(reader)
            day = _local_date(first[header.index("TIMESTAMP")], city) or "unknown"
        target = base / day / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        out[day] = target
    else:
        ts_col = city.raw.columns["timestamp"]
        writers: dict[str, tuple] = {}
        with _open_text(source) as f:
            header_line = f.readline()
            header = next(csv.reader([header_line]))
            idx = header.index(ts_col)
            for line in f:
                fields = next(csv.reader([line]), [])
                day = _local_date(fields[idx], city) if len(fields) > idx else None
                day = day or "undated"
                if day not in writers:
                    target = base / day / (source.name if source.suffix == ".gz" else source.name + ".gz")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fh = gzip.open(target, "wt", encoding="utf-8", newline="")
                    fh.write(header_line)
                    writers[day] = (fh, target)
                writers[day][0].write(line)
        for day, (fh, target) in writers.items():
            fh.close()
            out[day] = target
    log.info("landed %s into %d delivery date(s) under %s", source.name, len(out), base)
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--city", required=True)
    args = parser.parse_args(argv)
    settings = Settings.load()
    for day, path in land_sample(load_city(args.city, settings), settings).items():
        print(day, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
