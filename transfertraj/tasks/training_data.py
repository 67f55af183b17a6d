"""The features rows a training task reads: some cities' partitions, all at one Delta version.

    from transfertraj.tasks.training_data import read_city_features
    table, version, ctx = read_city_features(settings, ["porto", "sanfrancisco"])
    data, version, ctx = read_city_data(settings, ["porto"])   # the same, as TrajectoryData with phi and CRS
    data, version, ctx = read_city_data(settings, ["porto"], dates=("2013-07-01", "2013-07-07"))  # deliveries
    # ctx == {"porto": {"context_roads": 2, "context_pois": 2, "context_grid": 3}, ...}

The version read is recorded with the model (MLflow tags), and so are the context table versions the
rows were built with (from their `source_versions` lineage), so a model can be retrained or re-scored on
exactly its data and maintenance keeps those versions. Read with the lake's delta-rs reader
(feature_store.reader): only the cities' partitions are opened, no Spark session is started.
"""

from __future__ import annotations

import json

from transfertraj.core.settings import Settings


def read_city_features(
    settings: Settings, cities: list[str], version: int | None = None, dates: tuple[str, str] | None = None
):
    """(pyarrow table of these cities' features rows, Delta version read, {city: context versions});
    `dates` = (first, last) delivery date, inclusive, keeps those date partitions only."""
    from transfertraj.feature_store.reader import TableNotFound, read_table
    from transfertraj.feature_store.tables import table_path

    if not cities:
        raise ValueError("read_city_features: no cities given")
    try:
        table, version = read_table(settings, "features", city=cities, version=version, dates=dates)  # one snapshot
    except TableNotFound:
        raise TableNotFound(
            f"no features table at {table_path(settings, 'features')}: "
            "run nightly_ingest (or `transfertraj featurize`) first"
        ) from None
    missing = sorted(set(cities) - set(table.column("city").to_pylist()))
    if missing:
        when = f" delivered {dates[0]}..{dates[1]}" if dates else ""
        raise ValueError(f"the features table (version {version}) has no rows{when} for {missing}")
    return table, version, context_versions(table)


def read_city_data(
    settings: Settings, cities: list[str], version: int | None = None, dates: tuple[str, str] | None = None
):
    """`read_city_features` as the model's `TrajectoryData`, with each city's phi and CRS attached so the
    checkpoint records them and a fine-tune refuses a base model built with another phi."""
    from transfertraj.model.trajectory_data import load_features, with_city_facts

    table, version, ctx = read_city_features(settings, cities, version, dates)
    return with_city_facts(load_features(table, version), settings), version, ctx


def context_versions(table) -> dict[str, dict]:
    """city -> {context table: version} the features rows were built with (the newest per table)."""
    out: dict[str, dict] = {}
    for city, src in zip(table.column("city").to_pylist(), table.column("source_versions").to_pylist()):
        versions = out.setdefault(city, {})
        for key, value in json.loads(src or "{}").items():
            name = key.removesuffix("_version")
            if name.startswith("context_") and value is not None:
                versions[name] = max(int(value), versions.get(name, -1))
    return out
