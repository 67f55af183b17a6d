"""Delta round trip through the real Spark session: write, replace a partition, MERGE, time travel."""

import pytest

from transfertraj.feature_store.delta_io import (
    latest_version,
    merge_rows,
    partition_predicate,
    read_table,
    replace_partition,
)
from transfertraj.feature_store.tables import table, table_path


def _rows(spark, rows):
    return spark.createDataFrame(rows, "city string, date string, trip_id string, n int")


def test_partition_predicate_quotes_values():
    assert partition_predicate({"city": "o'porto", "n": 3}) == "`city` = 'o''porto' AND `n` = 3"
    with pytest.raises(ValueError):
        partition_predicate({})


def test_write_merge_and_read_older_version(spark, tmp_path):
    path = str(tmp_path / "t")
    v0 = replace_partition(
        _rows(spark, [("porto", "d1", "a", 1), ("porto", "d1", "b", 2)]),
        path,
        {"city": "porto", "date": "d1"},
        partition_by=("city", "date"),
    )
    assert v0 == 0
    v1 = merge_rows(
        _rows(spark, [("porto", "d1", "b", 20), ("porto", "d1", "c", 3)]),
        path,
        keys=("city", "date", "trip_id"),
        partition_by=("city", "date"),
    )
    assert v1 == 1
    now, version = read_table(spark, path)
    assert version == 1
    assert sorted(map(tuple, now.select("trip_id", "n").collect())) == [("a", 1), ("b", 20), ("c", 3)]
    old, version = read_table(spark, path, version=0)
    assert version == 0
    assert sorted(map(tuple, old.select("trip_id", "n").collect())) == [("a", 1), ("b", 2)]


def test_rerun_replaces_only_its_partition(spark, tmp_path):
    path = str(tmp_path / "t")
    part = {"city": "porto", "date": "d1"}
    other = {"city": "porto", "date": "d2"}
    replace_partition(_rows(spark, [("porto", "d2", "z", 9)]), path, other, partition_by=("city", "date"))
    for _ in range(2):  # a rerun of the same date
        replace_partition(_rows(spark, [("porto", "d1", "a", 1)]), path, part, partition_by=("city", "date"))
    df, _ = read_table(spark, path)
    assert sorted(map(tuple, df.select("date", "trip_id").collect())) == [("d1", "a"), ("d2", "z")]
    assert latest_version(spark, path) == 2


def test_the_latest_version_is_the_history_s_and_costs_no_spark_job(spark, tmp_path):
    from delta.tables import DeltaTable

    path = str(tmp_path / "t")
    assert latest_version(spark, path) is None
    for date in ("d1", "d2", "d1"):
        replace_partition(
            _rows(spark, [("porto", date, "a", 1)]),
            path,
            {"city": "porto", "date": date},
            partition_by=("city", "date"),
        )
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup())
    assert latest_version(spark, path) == 2
    assert set(tracker.getJobIdsForGroup()) == before  # read from the log, not by a job
    assert DeltaTable.forPath(spark, path).history(1).select("version").first()[0] == 2


def test_rows_outside_the_partition_are_refused(spark, tmp_path):
    path = str(tmp_path / "t")
    replace_partition(
        _rows(spark, [("porto", "d1", "a", 1)]), path, {"city": "porto", "date": "d1"}, partition_by=("city", "date")
    )
    with pytest.raises(Exception, match="(?i)replaceWhere|does not conform|DELTA_REPLACE_WHERE"):
        replace_partition(
            _rows(spark, [("porto", "d9", "a", 1)]),
            path,
            {"city": "porto", "date": "d1"},
            partition_by=("city", "date"),
        )


def test_read_missing_table_says_what_to_run(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the job"):
        read_table(spark, str(tmp_path / "nothing"))


def test_tables_are_named_once(settings):
    assert table("silver").partition_by == ("city", "date")
    assert table_path(settings, "rejects").endswith("lake/rejects")
    with pytest.raises(KeyError, match="known"):
        table("gold")


def _jobs_of(spark, fn):
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup())
    out = fn()
    return out, len(set(tracker.getJobIdsForGroup()) - before)


def test_a_new_partition_is_appended_without_rebuilding_the_table_snapshot(spark, tmp_path):
    path = str(tmp_path / "t")
    d1 = {"city": "porto", "date": "d1"}
    replace_partition(_rows(spark, [("porto", "d1", "a", 1)]), path, d1, partition_by=("city", "date"))
    d2 = {"city": "porto", "date": "d2"}
    version, new_jobs = _jobs_of(
        spark,
        lambda: replace_partition(_rows(spark, [("porto", "d2", "b", 2)]), path, d2, partition_by=("city", "date")),
    )
    assert version == 1
    # a rerun of d2 must find (and remove) its files: Delta rebuilds the snapshot's file list for that
    version, rerun_jobs = _jobs_of(
        spark,
        lambda: replace_partition(_rows(spark, [("porto", "d2", "c", 3)]), path, d2, partition_by=("city", "date")),
    )
    assert version == 2
    assert new_jobs == 1 < rerun_jobs  # the new partition: the write's own job only
    df, _ = read_table(spark, path)
    assert sorted(map(tuple, df.select("date", "trip_id", "n").collect())) == [("d1", "a", 1), ("d2", "c", 3)]


def test_rows_outside_a_new_partition_are_refused_before_the_commit(spark, tmp_path):
    path = str(tmp_path / "t")
    d1 = {"city": "porto", "date": "d1"}
    replace_partition(_rows(spark, [("porto", "d1", "a", 1)]), path, d1, partition_by=("city", "date"))
    with pytest.raises(Exception, match="outside the partition"):
        replace_partition(
            _rows(spark, [("porto", "d2", "b", 2), ("porto", "d1", "x", 9)]),
            path,
            {"city": "porto", "date": "d2"},
            partition_by=("city", "date"),
        )
    assert latest_version(spark, path) == 0
    df, _ = read_table(spark, path)
    assert sorted(map(tuple, df.select("date", "trip_id").collect())) == [("d1", "a")]


def test_arrow_rows_appended_by_delta_rs_and_spark_s_rows_read_as_one_table(spark, tmp_path):
    import pyarrow as pa

    from transfertraj.feature_store.delta_io import append_arrow, append_rows

    path = str(tmp_path / "runs")
    arrow = pa.schema([("city", pa.string()), ("date", pa.string()), ("trip_id", pa.string()), ("n", pa.int32())])

    def append_one(city, date, trip_id, n) -> int:
        row = {"city": city, "date": date, "trip_id": trip_id, "n": n}
        return append_arrow(pa.Table.from_pylist([row], schema=arrow), path, partition_by=("city",))

    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup())
    assert append_one("porto", "d1", "a", 1) == 0
    assert set(tracker.getJobIdsForGroup()) == before  # delta-rs: no Spark job
    assert append_rows(_rows(spark, [("porto", "d2", "b", 2)]), path, partition_by=("city",)) == 1
    assert append_one("lisbon", "d2", "c", 3) == 2
    df, version = read_table(spark, path)
    assert version == 2
    assert sorted(map(tuple, df.select("city", "trip_id", "n").collect())) == [
        ("lisbon", "c", 3),
        ("porto", "a", 1),
        ("porto", "b", 2),
    ]
