"""Parquet parts written outside Spark, committed by delta-rs, read by Spark and delta-rs alike (real tables)."""

import pyarrow as pa
import pytest

from transfertraj.feature_store.arrow_parts import (
    PartSink,
    commit_parts,
    deal,
    discard_run,
    drop_part_rows,
    read_parts,
    source_parts,
    table_schema,
)
from transfertraj.feature_store.delta_io import read_table, replace_partition
from transfertraj.feature_store.reader import read_path

SCHEMA = pa.schema([("trip_id", pa.string()), ("ts", pa.list_(pa.int64()))])
BY = ("city", "date")


def _rows(*ids):
    return pa.table({"trip_id": list(ids), "ts": [[1, 2]] * len(ids)}, schema=SCHEMA)


def _write(path, date, name, *ids, tag="t1"):
    sink = PartSink(str(path), {"city": "porto", "date": date}, SCHEMA, tag=tag)
    with sink.writer(name) as w:
        w.write(_rows(*ids))
    return sink, w.summary().to_pylist()


def _ids(spark, path, date):
    df, version = read_table(spark, str(path), where={"city": "porto", "date": date})
    return sorted(r.trip_id for r in df.collect()), version


def test_a_commit_replaces_only_its_partition_and_spark_reads_it(spark, tmp_path):
    path = tmp_path / "t"
    sink, parts = _write(path, "2013-07-01", "a", "x", "y")
    assert commit_parts(sink, parts, partition_by=BY, user_metadata="run 1") == 0  # the table is created
    sink2, parts2 = _write(path, "2013-07-02", "a", "z")
    commit_parts(sink2, parts2, partition_by=BY)
    sink3, parts3 = _write(path, "2013-07-01", "a", "w", tag="t2")  # a rerun of the first date
    assert commit_parts(sink3, parts3, partition_by=BY) == 2
    assert _ids(spark, path, "2013-07-01") == (["w"], 2)
    assert _ids(spark, path, "2013-07-02")[0] == ["z"]
    table, _ = read_path(path, version=0)  # time travel sees the first commit whole
    assert sorted(table.column("trip_id").to_pylist()) == ["x", "y"]
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert history[0].userMetadata == "run 1"


def test_spark_and_the_workers_write_one_table(spark, tmp_path):
    path = str(tmp_path / "t")
    df = spark.createDataFrame(
        [("a", [1], "porto", "2013-07-01")], "trip_id string, ts array<long>, city string, date string"
    )
    replace_partition(df, path, {"city": "porto", "date": "2013-07-01"}, partition_by=BY)
    schema = table_schema(path, BY, fallback=pa.schema([]))
    assert schema.names == ["trip_id", "ts"]  # the table's own columns, partition columns left out
    sink = PartSink(path, {"city": "porto", "date": "2013-07-01"}, schema, tag="t9")
    with sink.writer("0") as w:
        w.write(_rows("b"))
    commit_parts(sink, w.summary().to_pylist(), partition_by=BY)
    assert _ids(spark, path, "2013-07-01")[0] == ["b"]
    replace_partition(df, path, {"city": "porto", "date": "2013-07-01"}, partition_by=BY)  # and Spark again
    assert _ids(spark, path, "2013-07-01")[0] == ["a"]


def test_rows_taken_out_after_writing_and_files_discarded(tmp_path):
    path = tmp_path / "t"
    sink, parts = _write(path, "2013-07-01", "a", "x", "y", "z")
    _, more = _write(path, "2013-07-01", "b", "v")
    kept = drop_part_rows(sink, parts + more, {parts[0]["part_path"]: [0, 2], more[0]["part_path"]: [0]})
    assert [p["part_rows"] for p in kept] == [1]  # "v"'s file had no row left: gone
    assert not (path / parts[0]["part_path"]).exists() and not (path / more[0]["part_path"]).exists()
    commit_parts(sink, kept, partition_by=BY)
    assert read_path(path)[0].column("trip_id").to_pylist() == ["y"]
    failed, orphans = _write(path, "2013-07-01", "c", "q", tag="t7")  # a later run that failed
    assert discard_run(failed) == [orphans[0]["part_path"]]
    assert read_path(path)[0].column("trip_id").to_pylist() == ["y"]  # the committed file is untouched
    assert discard_run(sink) == []  # the committed run: its file is referenced, nothing is deleted


def test_a_rewritten_task_replaces_its_own_file(tmp_path):
    _, first = _write(tmp_path / "t", "2013-07-01", "00003", "x", "y")
    _, again = _write(tmp_path / "t", "2013-07-01", "00003", "x")  # the task ran again
    assert first[0]["part_path"] == again[0]["part_path"] and again[0]["part_rows"] == 1
    assert len(list((tmp_path / "t" / "city=porto" / "date=2013-07-01").iterdir())) == 1


def test_a_partition_value_that_needs_escaping_is_refused(tmp_path):
    with pytest.raises(ValueError, match="only letters"):
        PartSink(str(tmp_path), {"city": "são paulo"}, SCHEMA)


def test_a_partition_read_by_row_groups_at_a_pinned_version(tmp_path):
    path = tmp_path / "t"
    sink = PartSink(str(path), {"city": "porto", "date": "2013-07-01"}, SCHEMA, tag="t1")
    with sink.writer("a") as w:
        w.write(_rows("x", "y"))  # two row groups in one file
        w.write(_rows("z"))
    parts = w.summary().to_pylist()
    _, more = _write(path, "2013-07-01", "b", "v")
    commit_parts(sink, parts + more, partition_by=BY)
    commit_parts(*_write(path, "2013-07-02", "a", "other"), partition_by=BY)  # another partition: not read
    commit_parts(*_write(path, "2013-07-01", "c", "new", tag="t2"), partition_by=BY)  # version 2 replaces it
    version, units = source_parts(str(path), {"city": "porto", "date": "2013-07-01"}, version=1)
    assert version == 1 and sorted(rows for _, _, rows in units) == [1, 1, 2]
    batches = list(read_parts(units, ["trip_id"], batch_rows=1))
    assert max(b.num_rows for b in batches) == 1 and all(b.schema.names == ["trip_id"] for b in batches)
    assert sorted(v for b in batches for v in b.column("trip_id").to_pylist()) == ["v", "x", "y", "z"]
    version, units = source_parts(str(path), {"city": "porto", "date": "2013-07-01"})
    assert version == 2 and [rows for _, _, rows in units] == [1]


def test_row_groups_are_dealt_to_tasks_of_about_equal_rows():
    units = [("f", g, rows) for g, rows in enumerate([9, 1, 5, 4, 1])]
    tasks = deal(units, 2)
    assert sorted(sum(u[2] for u in t) for t in tasks) == [10, 10]
    assert sorted(u for t in tasks for u in t) == sorted(units)
    assert len(deal(units[:1], 4)) == 1 and deal([], 4) == []


def test_only_the_columns_named_are_dictionary_encoded(tmp_path):
    import pyarrow.parquet as pq

    sink = PartSink(str(tmp_path / "t"), {"city": "porto"}, SCHEMA, dictionary=("trip_id",))
    with sink.writer("a") as w:
        w.write(_rows("x", "x", "y"))
    meta = pq.ParquetFile(tmp_path / "t" / w.path).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in encodings["trip_id"] and "RLE_DICTIONARY" not in encodings["ts.list.element"]
    _, parts = _write(tmp_path / "u", "2013-07-01", "a", "x")  # the default: pyarrow's, every column
    meta = pq.ParquetFile(tmp_path / "u" / parts[0]["part_path"]).metadata.row_group(0)
    assert all("RLE_DICTIONARY" in meta.column(i).encodings for i in range(meta.num_columns))
