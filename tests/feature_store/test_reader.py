"""The delta-rs reader over tables that Spark (delta-spark) wrote: versions, city partitions, errors."""

import pytest

from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import replace_partition
from transfertraj.feature_store.reader import TableNotFound, read_path, read_table, table_version


def _write(spark, path, city, rows):
    df = spark.createDataFrame([(city, "d1", t, n) for t, n in rows], "city string, date string, trip_id string, n int")
    return replace_partition(df, path, {"city": city, "date": "d1"}, partition_by=("city", "date"))


def test_reads_a_spark_table_at_each_version_and_one_city(spark, tmp_path):
    settings = Settings.load(home=tmp_path)
    path = str(settings.lake / "silver")
    v0 = _write(spark, path, "porto", [("a", 1), ("b", 2)])
    v1 = _write(spark, path, "sanfrancisco", [("c", 3)])
    v2 = _write(spark, path, "porto", [("a", 10)])  # replaces porto's partition

    latest, version = read_table(settings, "silver", city="porto")
    assert version == v2 == table_version(settings, "silver")
    assert sorted(zip(latest["trip_id"].to_pylist(), latest["n"].to_pylist())) == [("a", 10)]

    old, version = read_table(settings, "silver", city="porto", version=v0)
    assert version == v0 and sorted(old["trip_id"].to_pylist()) == ["a", "b"]

    both, _ = read_path(path, version=v1, columns=["city", "trip_id"])
    assert both.column_names == ["city", "trip_id"]
    assert sorted(both["trip_id"].to_pylist()) == ["a", "b", "c"]


def test_missing_table_and_version_say_what_to_do(spark, tmp_path):
    settings = Settings.load(home=tmp_path)
    assert table_version(settings, "features") is None
    with pytest.raises(TableNotFound, match="transfertraj ingest"):
        read_table(settings, "features")
    path = str(settings.lake / "silver")
    _write(spark, path, "porto", [("a", 1)])
    with pytest.raises(ValueError, match="no version 5"):
        read_path(path, version=5)
    with pytest.raises(KeyError, match="unknown table"):
        read_table(settings, "golden")


def test_several_cities_come_from_one_snapshot(spark, tmp_path):
    settings = Settings.load(home=tmp_path)
    path = str(settings.lake / "silver")
    _write(spark, path, "porto", [("a", 1)])
    v1 = _write(spark, path, "sanfrancisco", [("c", 3)])
    _write(spark, path, "beijing", [("d", 4)])
    rows, version = read_table(settings, "silver", city=["porto", "sanfrancisco"], version=v1)
    assert version == v1 and sorted(rows["trip_id"].to_pylist()) == ["a", "c"]
