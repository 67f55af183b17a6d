"""Land a city's bundled sample as a delivery would arrive: landing/<city>/<date>/<file>.

    python -m transfertraj.jobs.land_sample --city porto        # or: transfertraj land --city porto
    transfertraj land --city sanfrancisco --datasets             # the 21 real days under the datasets root

The nightly ingestion reads landing/<city>/<date>/ (see jobs/ingest.py). Real deliveries are dropped
there by whatever ships the logs; this job does the same for the bundled samples so the demo and the
tests run the real nightly path. A raw file is split by the local date of each row (a Porto trip's
start, a point log's fix), one file per date, rows unchanged (header repeated; a headerless file stays
headerless, a Parquet file lands as Parquet). Epoch numbers in s, ms, us or ns are dated by magnitude. Landing is idempotent:
an existing file of the same name is replaced with the same bytes.

`per="month"` lands an archive as monthly deliveries instead (folder = the month's first day): each
delivery costs the nightly path a fixed overhead (a Spark job and four Delta commits, tens of seconds on
2 cores), so the Porto year's 335 daily deliveries of about 46 trips each take hours where its 11 monthly
ones take minutes. The rows and their timestamps are the same either way.
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
from transfertraj.core.constants import EPOCH_UNITS
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
    explicit = {"unix_ms": 1e3, "unix_us": 1e6, "unix_ns": 1e9}
    try:
        if (fmt in explicit or fmt in ("unix_s", "auto")) and value.strip().lstrip("-").isdigit():
            n = int(value)
            by_size = next((per_s for threshold, per_s in EPOCH_UNITS if n > threshold), 1)
            instant = datetime.fromtimestamp(n / explicit.get(fmt, by_size), tz=UTC)
        else:
            naive = datetime.fromisoformat(value.strip())
            src = ZoneInfo(city.raw.timestamp_timezone)
            instant = naive.replace(tzinfo=naive.tzinfo or src)
        return instant.astimezone(tz).date().isoformat()
    except (ValueError, OverflowError, OSError):
        return None


def _writer(target: Path):
    """A text writer for a landed file: gzip when the name says so (mtime 0: a rerun writes the same bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(target, "wb", mtime=0), encoding="utf-8", newline="")
    return target.open("w", encoding="utf-8", newline="")


PER = ("day", "month")  # delivery granularity of `land_sample`


def _delivery(day: str, per: str) -> str:
    """The delivery folder of a row's local date: the date itself, or its month's first day."""
    return day[:8] + "01" if per == "month" and day != "undated" else day


def land_sample(
    city: CityConfig, settings: Settings, *, source: Path | None = None, per: str = "day"
) -> dict[str, Path]:
    """Copy the city's raw source into landing folders by delivery date. Returns date -> file.

    Every row goes to the local date of its timestamp (a Porto trip's start, a point log's fix), rows
    unchanged, header repeated; a file that spans one date lands as one delivery, a year as a year of
    deliveries. Rows whose timestamp does not parse land under `undated` for the ingestion to reject."""
    if per not in PER:
        raise ValueError(f"per must be one of {PER}, not {per!r}")
    source = Path(source or city.raw.path)
    base = settings.landing / city.name
    ts_col = "TIMESTAMP" if city.raw.format == "porto_csv" else city.raw.file_columns["timestamp"]
    if source.name.endswith(".parquet"):
        return _land_parquet(city, source, base, ts_col)
    writers: dict[str, tuple] = {}
    try:
        with _open_text(source) as f:
            sep = city.raw.delimiter_for(source.name)  # a .tsv sample is tab-separated
            header_line = f.readline() if city.raw.header else ""
            header = next(csv.reader([header_line], delimiter=sep)) if city.raw.header else None
            idx = header.index(ts_col) if header is not None else int(ts_col.removeprefix("_c"))
            for line in f:  # after the header line, or every line of a headerless file
                fields = next(csv.reader([line], delimiter=sep), [])
                day = _delivery((_local_date(fields[idx], city) if len(fields) > idx else None) or "undated", per)
                if day not in writers:
                    target = base / day / source.name
                    fh = _writer(target)
                    fh.write(header_line)
                    writers[day] = (fh, target)
                writers[day][0].write(line)
    finally:
        for fh, _ in writers.values():
            fh.close()
    out = {day: target for day, (_, target) in writers.items()}
    log.info("landed %s into %d delivery date(s) under %s", source.name, len(out), base)
    return dict(sorted(out.items()))


def _land_parquet(city: CityConfig, source: Path, base: Path, ts_col: str) -> dict[str, Path]:
    """A Parquet source split by the local date of each row, rows unchanged (one Parquet file per date)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    ts = table.column(int(ts_col.removeprefix("_c")) if not city.raw.header else ts_col)
    if pa.types.is_timestamp(ts.type):  # an instant: ISO text with its offset reads in any zone
        texts = [None if v is None else v.isoformat() for v in ts.to_pylist()]
    else:
        texts = pc.cast(ts, pa.string()).to_pylist()
    days = [(_local_date(t, city) if t is not None else None) or "undated" for t in texts]
    out = {}
    for day in sorted(set(days)):
        target = base / day / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pa.array([d == day for d in days])), target)
        out[day] = target
    log.info("landed %s into %d delivery date(s) under %s", source.name, len(out), base)
    return out


def dataset_files(city: CityConfig, settings: Settings) -> list[Path]:
    """The city's large real deliveries (`raw.datasets` globs) under the datasets root, sorted."""
    if not city.raw.datasets:
        raise ValueError(f"city {city.name} names no datasets (raw.datasets in its config file)")
    if settings.datasets is None or not settings.datasets.is_dir():
        raise FileNotFoundError(
            "no datasets root: set TRANSFERTRAJ_DATASETS to the folder that holds the large data sets "
            "(README.md, 'Bundled data', says where to download them)"
        )
    files = sorted({p for pattern in city.raw.datasets for p in settings.datasets.glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{settings.datasets} holds none of {city.raw.datasets}")
    return files


def land_datasets(city: CityConfig, settings: Settings, *, per: str = "day") -> dict[str, list[Path]]:
    """Land every file of the city's datasets, each split by delivery date. Returns date -> files."""
    out: dict[str, list[Path]] = {}
    for source in dataset_files(city, settings):
        for day, path in land_sample(city, settings, source=source, per=per).items():
            out.setdefault(day, []).append(path)
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
