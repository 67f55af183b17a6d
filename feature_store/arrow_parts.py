"""Parquet parts written by the Arrow workers that make the rows, committed to one Delta partition at once.

    sink = PartSink(table_path(settings, "silver"), {"city": "porto", "date": "2013-07-01"}, schema, tag=run_id)
    # in a mapInArrow worker (functools.partial carries `sink` there):
    with sink.writer() as w:          # one Parquet file per task, named after the task: a retry rewrites it
        position = w.write(rows)       # -> where those rows start in the file (PART_DDL's `part_row`)
    yield w.summary()                  # one PART_DDL row: the file, its size and its row count
    # in the driver, after collecting the summaries:
    version = commit_parts(sink, parts, user_metadata="run 1a2b")   # replaces the partition, one commit
    discard_run(sink)                                               # or: it failed, delete its uncommitted files

Why: a Spark write of rows that a Python worker made crosses the JVM twice (Arrow -> Spark rows ->
Parquet), and for the list columns of a trajectory (silver's ts/lon/lat, features' per-point fields) the
conversion cost more than the work: most of the JVM's time in issue #18's profiles. Here the worker that
makes the rows writes them with pyarrow, and only a summary row per file goes back. Delta's own writer
works the same way (tasks write files, the driver commits their `add` actions); the commit is made by
delta-rs (`DeltaTable.create_write_transaction`), the library the lake is already read with.

The commit replaces the partition in one transaction: readers see the old files or the new ones, never
a mix, and a run killed before it leaves files no version references (VACUUM deletes them; a run that
fails or is interrupted deletes its own: `discard_run`). Stats hold `numRecords` only: without min/max a
reader skips no file by a data column, which is always correct (silver and features are read by partition).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

PART_DDL = "part_path string, part_bytes long, part_rows long"  # a file's summary row (its table-relative path)
PART_SCHEMA = pa.schema([("part_path", pa.string()), ("part_bytes", pa.int64()), ("part_rows", pa.int64())])
PART_COLUMNS = tuple(PART_SCHEMA.names)
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")  # partition values written as folder names without escaping


@dataclass(frozen=True)
class PartSink:
    """Where a job's workers write one partition's files: the table, the partition, the files' schema (the
    table's columns without the partition columns) and a tag that names the run in each file name."""

    table: str
    partition: Mapping[str, str]
    schema: pa.Schema
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    # the columns whose values Parquet dictionary-encodes; None: every column (pyarrow's default). Trying a
    # dictionary on per-point floats costs about 40 % of a features file's write for a few % of its size.
    dictionary: tuple[str, ...] | None = None

    def __post_init__(self):
        for k, v in self.partition.items():
            if not _SAFE.match(str(v)):
                raise ValueError(f"partition value {k}={v!r}: only letters, digits, '_', '.', '-' are written here")

    @property
    def folder(self) -> str:
        """The partition's folder, relative to the table (Hive style, as Spark lays it out)."""
        return "/".join(f"{k}={v}" for k, v in self.partition.items())

    def writer(self, name: str | None = None) -> PartWriter:
        """A writer of this task's file: `name` defaults to the Spark task's partition id, so that a retried
        or recomputed task overwrites its own file instead of leaving a second copy."""
        if name is None:
            from pyspark import TaskContext

            ctx = TaskContext.get()
            name = f"{ctx.partitionId():05d}" if ctx is not None else uuid.uuid4().hex[:8]
        return PartWriter(self, f"{self.folder}/part-{name}-{self.tag}.snappy.parquet")


class PartWriter:
    """One Parquet file of a PartSink, written batch by batch (each `write` is a row group)."""

    def __init__(self, sink: PartSink, path: str):
        self.sink, self.path, self.rows, self._writer = sink, path, 0, None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, rows: pa.Table | pa.RecordBatch) -> int:
        """Append `rows` (cast to the sink's schema); returns the file position of the first of them."""
        start = self.rows
        if not rows.num_rows:
            return start
        if self._writer is None:
            fs, path = _filesystem(self.sink.table)
            fs.create_dir(f"{path}/{self.sink.folder}", recursive=True)
            dictionary = True if self.sink.dictionary is None else list(self.sink.dictionary)
            self._writer = pq.ParquetWriter(
                f"{path}/{self.path}", self.sink.schema, filesystem=fs, use_dictionary=dictionary
            )
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
        self._writer.write_table(table.select(self.sink.schema.names).cast(self.sink.schema))
        self.rows += rows.num_rows
        return start

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def summary(self) -> pa.RecordBatch:
        """The PART_DDL row of this file (no row when nothing was written: no file exists)."""
        self.close()
        written = self.rows > 0
        fs, path = _filesystem(self.sink.table)
        size = fs.get_file_info(f"{path}/{self.path}").size if written else 0
        values = (self.path, size, self.rows)
        return pa.RecordBatch.from_pydict(
            {name: [v] * written for name, v in zip(PART_COLUMNS, values, strict=True)}, schema=PART_SCHEMA
        )


def write_frame(df, sink: PartSink, prefix: str) -> list[dict]:
    """A Spark DataFrame's rows written to the sink's partition by the tasks that hold them (mapInArrow: one
    file per task, named `part-<prefix>-<task>-<tag>`); returns their PART_DDL rows for commit_parts. For
    rows Spark made (the ingestion's rejected rows) that must be committed with files the workers wrote."""
    names = list(sink.schema.names)

    def write(batches):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        with sink.writer(f"{prefix}-{ctx.partitionId() if ctx is not None else 0:05d}") as w:
            for batch in batches:
                w.write(batch)
        yield w.summary()

    return [r.asDict() for r in df.select(*names).mapInArrow(write, PART_DDL).collect()]


def _filesystem(table: str):
    """(pyarrow filesystem, path inside it) of a table location: a local path or a URI (s3a:// as s3://)."""
    from pyarrow import fs

    from transfertraj.feature_store.reader import _uri

    uri = _uri(table)
    if "://" not in uri:
        return fs.LocalFileSystem(), os.path.abspath(uri)
    return fs.FileSystem.from_uri(uri)


def table_schema(path: str, partition_by: Sequence[str], fallback: pa.Schema) -> pa.Schema:
    """The files' schema for the table at `path`: its own columns, as the Delta log declares them, when it
    exists (so both writers of a table agree on types and nullability), else `fallback`; partition columns
    left out either way (they live in the folder names)."""
    from transfertraj.feature_store.reader import TableNotFound, open_table

    try:
        schema = pa.schema(open_table(path).schema().to_arrow())
    except TableNotFound:
        schema = fallback
    return pa.schema([f for f in schema if f.name not in partition_by])


def commit_parts(
    sink: PartSink, parts: Sequence[Mapping], *, partition_by: Sequence[str], user_metadata: str | None = None
) -> int:
    """Replace the sink's partition with `parts` (PART_DDL rows) in one Delta commit; creates the table on
    its first write. Returns the version the commit made."""
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions

    from transfertraj.feature_store.reader import TableNotFound, _uri, open_table

    now = int(time.time() * 1000)
    values = {k: str(v) for k, v in sink.partition.items()}
    actions = [
        AddAction(
            path=p["part_path"],
            size=int(p["part_bytes"]),
            partition_values=values,
            modification_time=now,
            data_change=True,
            stats=json.dumps({"numRecords": int(p["part_rows"])}),
        )
        for p in parts
    ]
    props = CommitProperties(custom_metadata={"userMetadata": user_metadata} if user_metadata else None)
    full = pa.schema([*sink.schema, *(pa.field(k, pa.string()) for k in partition_by if k not in sink.schema.names)])
    try:
        dt = open_table(sink.table)
    except TableNotFound:
        create_table_with_add_actions(
            _uri(sink.table),
            Schema.from_arrow(full),
            actions,
            mode="append",
            partition_by=list(partition_by),
            commit_properties=props,
        )
        return DeltaTable(_uri(sink.table)).version()
    dt.create_write_transaction(
        actions,
        mode="overwrite",
        schema=dt.schema(),
        partition_by=list(partition_by),
        partition_filters=[(k, "=", v) for k, v in values.items()],
        commit_properties=props,
    )
    return DeltaTable(_uri(sink.table)).version()


def discard_run(sink: PartSink) -> list[str]:
    """Delete the files this sink's run wrote (their names carry its tag) that the table's latest version
    does not reference: after a failed gate, an error or an interrupt before the commit, or a commit that
    failed. A committed file is never touched, whatever the caller believed. Returns the deleted paths."""
    from pyarrow.fs import FileSelector, FileType

    from transfertraj.feature_store.delta_io import partition_files

    fs, root = _filesystem(sink.table)
    folder = f"{root}/{sink.folder}"
    if fs.get_file_info(folder).type != FileType.Directory:
        return []
    # names are unique in the partition's folder
    referenced = {uri.rsplit("/", 1)[-1] for uri in partition_files(sink.table, sink.partition) or []}
    gone = []
    for info in fs.get_file_info(FileSelector(folder)):
        name = info.base_name
        if f"-{sink.tag}" in name and name.endswith(".parquet") and name not in referenced:
            fs.delete_file(info.path)
            gone.append(f"{sink.folder}/{name}")
    return gone


def drop_part_rows(sink: PartSink, parts: Sequence[Mapping], positions: Mapping[str, Sequence[int]]) -> list[dict]:
    """`parts` with the rows at `positions` (file -> row positions in it) taken out: each file named is
    rewritten without them under a new name (its old file deleted; none when no row is left). For rows
    that a rule over other rows rejects after the worker wrote them (a duplicate Porto line): few."""
    import pyarrow.compute as pc

    fs, root = _filesystem(sink.table)
    out = []
    for p in parts:
        drop = positions.get(p["part_path"])
        if not drop:
            out.append(dict(p))
            continue
        old = f"{root}/{p['part_path']}"
        table = pq.read_table(old, filesystem=fs, schema=sink.schema)
        keep = pc.invert(pc.is_in(pa.array(range(table.num_rows), pa.int64()), pa.array(drop, pa.int64())))
        table = table.filter(keep)
        if table.num_rows:
            w = PartWriter(sink, p["part_path"].replace(".snappy.parquet", "-kept.snappy.parquet"))
            w.write(table)
            out.append(w.summary().to_pylist()[0])
        fs.delete_file(old)
    return out


# ------------------------------------------------------------------ reading a partition in the workers


def source_parts(path: str, partition: Mapping[str, str], version: int | None = None) -> tuple[int, list[tuple]]:
    """(the version read, one partition's row groups at that version as (file URI, row group, rows)), from
    the Delta log (delta-rs) and the files' footers: the units of work of Arrow workers that read the files
    themselves (read_parts), so that no row of them crosses the JVM. The version is pinned once, here: the
    lineage a job records is exactly the files it read. Raises reader.TableNotFound when there is no table."""
    from transfertraj.feature_store.reader import open_table

    dt = open_table(path, version)
    if "deletionVectors" in (dt.protocol().reader_features or []):
        raise ValueError(f"{path} uses deletion vectors: its files alone are not its rows (read it with Spark)")
    units = []
    for uri in dt.file_uris(file_pruning_predicate=[(k, "=", str(v)) for k, v in partition.items()]):
        fs, file = _filesystem(uri)
        meta = pq.read_metadata(file, filesystem=fs)
        units += [(uri, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return dt.version(), units


def deal(units: Sequence[tuple], tasks: int) -> list[list[tuple]]:
    """source_parts' units dealt to at most `tasks` tasks of about equal rows (largest first, each to the
    task with the fewest rows so far); no empty task."""
    loads: list[list] = [[0, i, []] for i in range(max(1, min(tasks, len(units))))]
    for unit in sorted(units, key=lambda u: -u[2]):
        least = min(loads)
        least[0] += unit[2]
        least[2].append(unit)
    return [units for _, _, units in loads if units]


def read_parts(units: Sequence[tuple], columns: Sequence[str], batch_rows: int = 10_000):
    """Arrow worker: the rows of `units` (source_parts' (file, row group, rows)), `columns` only, in
    batches of at most `batch_rows` rows (a file's partition columns are not in it: add them from the
    partition)."""
    for uri, group, _ in units:
        fs, file = _filesystem(uri)
        with fs.open_input_file(file) as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows, row_groups=[group], columns=list(columns))
