"""The features rows of some cities at one Delta version, and the context versions they were built with."""

import json

import pyarrow as pa
import pytest

from transfertraj.core.settings import Settings
from transfertraj.feature_store.tables import table_path
from transfertraj.tasks.training_data import context_versions, read_city_features


def rows(city, trips, date="2013-07-01", **versions):
    src = json.dumps({"silver_version": 1, **{f"{k}_version": v for k, v in versions.items()}})
    return pa.table(
        {
            "city": [city] * len(trips),
            "date": [date] * len(trips),
            "trip_id": trips,
            "source_versions": [src] * len(trips),
        }
    )


def test_reads_the_cities_at_one_version(tmp_path):
    from deltalake import write_deltalake

    settings = Settings.load(home=tmp_path)
    path = table_path(settings, "features")
    write_deltalake(path, rows("porto", ["a", "b"], context_roads=2, context_grid=3), partition_by=["city", "date"])
    write_deltalake(path, rows("sf", ["c"], context_roads=0), mode="append", partition_by=["city", "date"])
    write_deltalake(path, rows("rome", ["d"]), mode="append", partition_by=["city", "date"])

    table, version, ctx = read_city_features(settings, ["porto", "sf"])
    assert version == 2
    assert sorted(table.column("trip_id").to_pylist()) == ["a", "b", "c"]
    assert ctx == {"porto": {"context_roads": 2, "context_grid": 3}, "sf": {"context_roads": 0}}

    with pytest.raises(ValueError, match=r"the features table \(version 2\) has no rows for \['lisbon'\]"):
        read_city_features(settings, ["porto", "lisbon"])


def test_dates_keep_the_delivery_partitions_between_them(tmp_path):
    from deltalake import write_deltalake

    settings = Settings.load(home=tmp_path)
    path = table_path(settings, "features")
    for date, trip in (("2013-06-30", "june"), ("2013-07-01", "first"), ("2013-07-09", "ninth"), ("2013-07-10", "x")):
        write_deltalake(path, rows("porto", [trip], date), mode="append", partition_by=["city", "date"])

    table, version, _ = read_city_features(settings, ["porto"], dates=("2013-07-01", "2013-07-09"))
    assert version == 3 and sorted(table.column("trip_id").to_pylist()) == ["first", "ninth"]
    with pytest.raises(ValueError, match=r"no rows delivered 2014-01-01..2014-01-31 for \['porto'\]"):
        read_city_features(settings, ["porto"], dates=("2014-01-01", "2014-01-31"))


def test_no_features_table_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no features table at .*: run nightly_ingest"):
        read_city_features(Settings.load(home=tmp_path), ["porto"])


def test_context_versions_are_the_newest_per_table():
    table = pa.concat_tables(
        [rows("porto", ["a"], context_roads=2), rows("porto", ["b"], context_roads=5, context_pois=None)]
    )
    assert context_versions(table) == {"porto": {"context_roads": 5}}  # silver and unknown versions left out
