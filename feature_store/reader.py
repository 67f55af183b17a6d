"""The one reader of the lake outside Spark: a table at a version, one city's partitions, as Arrow.

    from transfertraj.feature_store.reader import read_table, table_version
    table, version = read_table(settings, "features", city="porto")              # latest version
    table, version = read_table(settings, "features", city="porto", version=7)   # exactly what v7 held
    table, version = read_table(settings, "features", city=["porto", "sanfrancisco"])  # one version, two cities
    roads, _ = read_table(settings, "context_roads", city="porto", columns=["geometry_wkb"])
    table, _ = read_table(settings, "features", city="porto", dates=("2013-07-01", "2013-07-31"))  # deliveries

Training, evaluation, serving and plots all read through here, so a model records the version it read
and can be retrained or re-scored on exactly that version (`--version` on the commands). It is built
on `deltalake` (delta-rs): no JVM, no Spark session, a partition filter prunes files before any is
opened, and checkpoints, remote stores and time travel are handled by the library rather than by a
hand-written log replay. Spark jobs keep writing with delta-spark (feature_store.delta_io).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from transfertraj.feature_store.tables import table, table_path


class TableNotFound(FileNotFoundError):
    """The lake has no such table yet (nothing has been ingested or built there)."""


def _uri(path: str | Path) -> str:
    """Hadoop's s3a:// is delta-rs's s3://; local paths stay as they are."""
    text = str(path)
    return "s3://" + text[len("s3a://") :] if text.startswith("s3a://") else text


def open_table(path: str | Path, version: int | None = None):
    """The `deltalake.DeltaTable` at `path` (latest version, or `version`), with errors that say what to run."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = _uri(path)
    try:
        return DeltaTable(uri, version=version)
    except TableNotFoundError:
        raise TableNotFound(
            f"no Delta table at {path}: build it first (transfertraj ingest / featurize / context --city ...)"
        ) from None
    except Exception as exc:  # delta-rs raises a generic error for a version the log does not hold
        if version is not None and "version" in str(exc).lower():
            latest = DeltaTable(uri).version()
            raise ValueError(
                f"{path} has no version {version} (latest is {latest}, oldest kept by VACUUM may be later)"
            ) from exc
        raise


def read_path(
    path: str | Path,
    *,
    version: int | None = None,
    city: str | Sequence[str] | None = None,
    dates: tuple[str, str] | None = None,
    columns: list[str] | None = None,
) -> tuple[pa.Table, int]:
    """(rows, version read) of the Delta table at `path`; `city` (a name or several) keeps those partitions,
    `dates` = (first, last) the delivery-date partitions between them, inclusive ('YYYY-MM-DD' sorts as text).

    Several cities are read in one scan of one snapshot, so they all come from the same version."""
    dt = open_table(path, version)
    filters = []
    if city is not None:
        filters.append(("city", "=", city) if isinstance(city, str) else ("city", "in", list(city)))
    if dates is not None:
        filters += [("date", ">=", dates[0]), ("date", "<=", dates[1])]
    for column, _, _ in filters:
        if column not in dt.metadata().partition_columns:
            raise ValueError(f"{path} is not partitioned by {column}")
    filters = filters or None
    # a filter on a partition column prunes files from the log before any Parquet file is opened
    return dt.to_pyarrow_table(filters=filters, columns=columns), dt.version()


def read_table(
    settings,
    name: str,
    *,
    version: int | None = None,
    city: str | Sequence[str] | None = None,
    dates: tuple[str, str] | None = None,
    columns: list[str] | None = None,
) -> tuple[pa.Table, int]:
    """(rows, version read) of the lake's table `name` (see feature_store.tables) under `settings.lake`."""
    table(name)
    return read_path(table_path(settings, name), version=version, city=city, dates=dates, columns=columns)


def table_version(settings, name: str) -> int | None:
    """The latest version of a lake table, or None when it does not exist yet."""
    try:
        return open_table(table_path(settings, name)).version()
    except TableNotFound:
        return None
