"""Nightly ingestion: landing/<city>/<date>/ -> bronze, rejects, silver and a runs row, in Delta.

    transfertraj ingest --city porto --date 2013-07-01
    transfertraj runs --city porto                                            # outcomes; killed runs show
    transfertraj ingest --city beijing --start 2008-10-23 --end 2008-10-31     # a backfill, each date once
    spark-submit jobs/ingest.py --city porto --date 2013-07-01                # the same, on a cluster

A partition's `date` is the landing folder's date (the delivery date): a trip that crosses midnight
stays in the partition it was delivered in. A rerun of a date replaces that date's partitions in
every table (one atomic Delta commit each), so late files are picked up by rerunning the date.

Only regular files inside the landing folder are opened (jobs/landed_files.py); links, fifos and the
like are skipped with a reason, and a file that cannot be ingested (UTF-16, gzip named .csv, truncated
gzip, no required columns) is quarantined (a rejects row with row_id null) while the date's other files
publish. A date with no readable file fails (LandingError); a backfill reports every date's outcome and
exits 1 at the end if any failed.

Accounting, checked at the end of every run (a mismatch is a bug and fails the run):
    lines in the files (counted by reading them) = lines in bronze, per file = lines the rows span
    rows read   = rows accepted + rows rejected (by reason)   (a row is a CSV record: it may span lines)
    points read = points kept   + points dropped (by reason)
Quality gate (thresholds in the city file): a rejected share of data rows (blank lines, repeated headers
and footers are not data) above `quality.max_rejected_share`, or fewer than `quality.min_trajectories`
trajectories, fail the run with a message naming the files and reasons; bronze and rejects keep what
arrived, silver is not published for that date.

The runs log gets a `running` row when a run starts and its outcome when it ends; a run killed between
tables shows as interrupted, and the next run of the date says that it repairs it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import date as Date

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transfertraj.core.city_config import CityConfig, load_city
from transfertraj.core.settings import Settings
from transfertraj.feature_store import reader
from transfertraj.feature_store.arrow_parts import (
    PART_COLUMNS,
    PartSink,
    commit_parts,
    discard_run,
    drop_part_rows,
    table_schema,
    write_frame,
)
from transfertraj.feature_store.delta_io import append_arrow, replace_partition
from transfertraj.feature_store.tables import table, table_path
from transfertraj.jobs.bronze_rows import join_quoted_lines, read_landed_rows, record_spans, spark_readable
from transfertraj.jobs.clean_points import DROP, ROW, TRIP, clean_trips_spark, porto_cleaning
from transfertraj.jobs.clean_trips import PART, REJECTS_PART, SilverSink
from transfertraj.jobs.landed_files import LandingError, SetAside, scan_delivery
from transfertraj.jobs.parse_points import (
    NON_DATA_REASONS,
    ROW_CHECK_COLUMNS,
    check_rows,
    count_verdicts,
    explode_points,
    row_verdicts,
)
from transfertraj.jobs.schemas import (
    CITY,
    DATE,
    DETAIL,
    POINT_IDX,
    REASON,
    REJECTS_SCHEMA,
    ROW_ID,
    RUNS_SCHEMA,
    SILVER_SCHEMA,
    SOURCE_FILE,
    delta_arrow_schema,
)
from transfertraj.jobs.vehicle_key import load_vehicle_key
from transfertraj.jobs.wgs84_points import wgs84_points

log = logging.getLogger(__name__)


class QualityGateError(RuntimeError):
    """The run's data failed the city's quality thresholds; nothing was published to silver."""


class AccountingError(RuntimeError):
    """Rows or points went missing between read and write: a bug, never a data problem."""


@dataclass
class IngestReport:
    city: str
    date: str
    run_id: str
    status: str = "published"
    message: str = ""
    files: int = 0
    files_quarantined: dict[str, str] = field(default_factory=dict)  # file -> "reason (line n): detail"
    files_skipped: dict[str, str] = field(default_factory=dict)  # never opened: symlinks, fifos, ...
    lines_read: int = 0  # data lines of the readable files, counted from the files themselves
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    rows_rejected_by_reason: dict[str, int] = field(default_factory=dict)
    points_read: int = 0
    points_kept: int = 0
    points_dropped: int = 0
    points_dropped_by_reason: dict[str, int] = field(default_factory=dict)
    trajectories_out: int = 0
    datum: str = "wgs84"  # the datum the delivery's coordinates arrived in (the city's `datum`)
    points_converted: int = 0  # points moved from that datum to WGS-84 before cleaning (0 for wgs84)
    repairs: list[str] = field(default_factory=list)  # interrupted earlier runs of the date this run repairs
    rejected_by_file: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)  # (file, reason) -> rows
    bronze_version: int | None = None
    rejects_version: int | None = None
    silver_version: int | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        rr = ", ".join(f"{k} {v}" for k, v in sorted(self.rows_rejected_by_reason.items())) or "none"
        pr = ", ".join(f"{k} {v}" for k, v in sorted(self.points_dropped_by_reason.items())) or "none"
        files = f"{self.files} file(s) read"
        if self.files_quarantined:
            files += f", {len(self.files_quarantined)} quarantined ({self._names(self.files_quarantined)})"
        if self.files_skipped:
            files += f", {len(self.files_skipped)} skipped ({self._names(self.files_skipped)})"
        return (
            f"{self.city} {self.date}: {self.status}; {files}; rows read {self.rows_read} = accepted"
            f" {self.rows_accepted} + rejected {self.rows_rejected} ({rr}); points read {self.points_read} = kept"
            f" {self.points_kept} + dropped {self.points_dropped} ({pr}); trajectories {self.trajectories_out};"
            + (f" datum {self.datum} -> WGS-84 ({self.points_converted} points);" if self.datum != "wgs84" else "")
            + f" {self.seconds:.1f} s"
        )

    @staticmethod
    def _names(problems: dict[str, str]) -> str:
        return ", ".join(f"{k}: {v.split(':')[0]}" for k, v in sorted(problems.items()))

    def notes(self) -> str:
        """Runs repaired and files set aside, for the runs log's message."""
        notes = [f"repairs interrupted run {r}" for r in self.repairs]
        if self.datum != "wgs84":
            notes.append(
                f"datum {self.datum}: {self.points_converted} point(s) converted to WGS-84 before cleaning "
                "(transfertraj/features/datum.py)"
            )
        notes += [f"quarantined {k}: {v}" for k, v in sorted(self.files_quarantined.items())]
        notes += [f"skipped {k}: {v}" for k, v in sorted(self.files_skipped.items())]
        return "; ".join(notes)


def _persist(df: DataFrame) -> DataFrame:
    return df.persist(StorageLevel.MEMORY_AND_DISK)


REJECTS_PER_TASK = 1_000_000  # quarantine rows written by one task (they are short: a reason and a detail)
POINTS_PER_BUCKET = 500_000  # point logs: points per partition of the by-stream shuffle (jobs/clean_points.py)


def cleaning_buckets(points_estimate: int, shuffle_partitions: int) -> int:
    """Partitions for the by-stream shuffle of point logs: at least the shuffle partitions, enough to keep
    each near POINTS_PER_BUCKET. A point log has one point per accepted row. (Porto rows need no shuffle.)"""
    return max(shuffle_partitions, -(-points_estimate // POINTS_PER_BUCKET))


BYTES_PER_SHUFFLE_PARTITION = 128 * 1024 * 1024  # Spark's own split size for files


def shuffle_partitions_for(input_bytes: int, configured: int) -> int:
    """Shuffle partitions for one delivery: one per BYTES_PER_SHUFFLE_PARTITION of landed files, at least
    one, at most the session's configured number. A 2,000-point delivery shuffles into one partition, not
    into the session's (or Spark's 200) tasks of nothing."""
    return max(1, min(configured, -(-input_bytes // BYTES_PER_SHUFFLE_PARTITION)))


@contextmanager
def _shuffles_sized_for(spark: SparkSession, files) -> None:
    """spark.sql.shuffle.partitions set from the delivery's size for the run, restored after it."""
    before = spark.conf.get("spark.sql.shuffle.partitions")
    size = sum(f.path.stat().st_size for f in files)
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions_for(size, int(before))))
    try:
        yield
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)


def _set_aside(s: SetAside) -> str:
    return f"{s.reason}" + (f" (line {s.line})" if s.line else "") + f": {s.detail}"


def _file_rejects(spark: SparkSession, problems: list[SetAside]) -> DataFrame:
    """One quarantine row per file that was not ingested (row_id and point_idx null)."""
    rows = [(s.rel, None, None, s.reason, _set_aside(s)[:300]) for s in problems]
    return spark.createDataFrame(
        rows, f"{SOURCE_FILE} string, {ROW_ID} long, {POINT_IDX} int, {REASON} string, {DETAIL} string"
    )


def _bronze_lines(bronze: DataFrame) -> dict[str, int]:
    """Bronze rows per file (one job over the persisted rows)."""
    return {
        r[SOURCE_FILE]: int(r["n"]) for r in bronze.groupBy(SOURCE_FILE).agg(F.count(F.lit(1)).alias("n")).collect()
    }


def _bronze_line_check(in_bronze: dict[str, int], files) -> list[str]:
    """Files whose bronze rows (`in_bronze`, per file) differ from the rows counted in the file itself: its
    data lines (header excluded), or a Parquet file's rows."""
    got = dict(in_bronze)
    problems = []
    for f in files:
        want = f.bronze_rows
        n = got.pop(f.rel, 0)
        if n != want:
            problems.append(f"{f.rel}: {want} data line(s) in the file, {n} in bronze")
    problems += [f"{name}: in bronze but not among the landed files" for name in got]
    return problems


@contextmanager
def _phase(spark: SparkSession, name: str):
    """Names the Spark jobs of one step of a run (the UI's and the event log's job description), so that a
    profile says where the time went (bench/ingest.py --profile)."""
    sc = spark.sparkContext
    before = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(f"ingest: {name}")
    try:
        yield
    finally:
        sc.setJobDescription(before)


RUNNING = "running"  # a run's first row in the runs log; its outcome is a second row with the same run_id


def interrupted_runs(spark: SparkSession, settings: Settings, city: str, date: str) -> list[str]:
    """Runs of a city and date that recorded their start but no outcome (killed, or still running).

    The city's runs rows (a few a run) are read by the lake's reader outside Spark (feature_store.reader,
    delta-rs): no Spark job and no Spark snapshot of the runs table, which a run only appends to."""
    try:
        runs, _ = reader.read_table(
            settings, "runs", city=city, columns=["run_id", "job", DATE, "status", "started_at"]
        )
    except reader.TableNotFound:
        return []
    rows = [r for r in runs.to_pylist() if r[DATE] == date and r["job"] == "ingest"]
    ended = {r["run_id"] for r in rows if r["status"] != RUNNING}
    open_ = sorted(
        (r for r in rows if r["status"] == RUNNING and r["run_id"] not in ended), key=lambda r: r["started_at"]
    )
    return [f"{r['run_id']} (started {r['started_at']:%Y-%m-%d %H:%M:%S})" for r in open_]


def _close_repaired(spark: SparkSession, r: IngestReport, settings: Settings) -> None:
    """Give each interrupted run this run repaired its outcome row: `interrupted`, repaired by this run."""
    for repaired in r.repairs:
        run_id = repaired.split(" ")[0]
        closed = IngestReport(city=r.city, date=r.date, run_id=run_id, status="interrupted")
        closed.message = f"killed before its outcome was recorded; repaired by run {r.run_id}"
        _append_run(spark, closed, datetime.now(UTC), settings)


def _publish(df, name: str, part: dict, settings: Settings, report) -> int:
    """Replace this run's partition of the lake table `name`; the commit names the run. Returns the version."""
    return replace_partition(
        df,
        table_path(settings, name),
        part,
        partition_by=table(name).partition_by,
        user_metadata=f"run {report.run_id}",
    )


def ingest_date(spark: SparkSession, city: CityConfig, date: str, settings: Settings) -> IngestReport:
    """Ingest one delivery date of one city. Raises QualityGateError when the gate fails, LandingError when
    no landed file of the date can be read (the files set aside are in rejects and the runs log).

    The runs log gets a `running` row when the run starts and a second row with its outcome when it ends
    (`failed` with the error when it raises). A run killed between its tables (bronze and rejects written,
    silver not) leaves only the first row: the next run of the date says that it repairs it."""
    started = datetime.now(UTC)
    report = IngestReport(city=city.name, date=date, run_id=uuid.uuid4().hex[:16])
    with _phase(spark, "runs"):
        repairs = interrupted_runs(spark, settings, city.name, date)
        if repairs:
            report.repairs = repairs
            log.warning("%s %s: repairs interrupted run(s) %s", city.name, date, ", ".join(repairs))
        report.status = RUNNING
        _append_run(spark, report, started, settings, finished=started)
    try:
        return _ingest_date(spark, city, date, settings, report, started)
    except Exception as err:
        if report.status == RUNNING:  # not recorded yet: record the failure, then raise it
            report.status = "failed"
            first = str(err).splitlines()[0] if str(err) else ""
            report.message = "; ".join(m for m in (f"{type(err).__name__}: {first}"[:1000], report.notes()) if m)
            _append_run(spark, report, started, settings)
        raise


def _ingest_date(
    spark: SparkSession, city: CityConfig, date: str, settings: Settings, report: IngestReport, started: datetime
) -> IngestReport:
    t0 = time.time()
    part = {CITY: city.name, DATE: date}
    delivery = scan_delivery(settings.landing / city.name / date, city, landing_root=settings.landing)
    # Bronze first: what arrived is kept for inspection whatever happens next. The rows are kept (persisted)
    # as written: the checks below read them, not the table again, so the landed files stay readable
    # (odd names through their staging links) until the run ends.
    with (
        spark_readable(delivery.files, settings.landing / ".staging" / report.run_id) as paths,
        _shuffles_sized_for(spark, delivery.files),
    ):
        delivery.quarantined += [
            SetAside(f.rel, "bad_file_name", "Spark cannot open this name and no hard link could be made: rename it")
            for f in delivery.files
            if f.rel not in paths
        ]
        files = [f for f in delivery.files if f.rel in paths]
        report.files = len(files)
        report.files_quarantined = {s.rel: _set_aside(s) for s in delivery.quarantined}
        report.files_skipped = {s.rel: _set_aside(s) for s in delivery.skipped}
        report.lines_read = sum(f.data_lines for f in files)
        log.info(
            "%s %s: %d landed file(s), %d quarantined, %d skipped",
            city.name,
            date,
            len(files),
            len(delivery.quarantined),
            len(delivery.skipped),
        )
        bronze = _persist(read_landed_rows(spark, files, city=city.name, date=date, paths=paths))
        with _phase(spark, "bronze"):
            report.bronze_version = _publish(bronze, "bronze", part, settings, report)
        try:
            sink = _silver_sink(settings, city, date, report)
            try:
                return _checked_and_cleaned(
                    spark, city, date, settings, report, started, t0, delivery, files, bronze, sink
                )
            except BaseException:
                for written in (sink.parts, sink.rejects):  # the files its workers wrote and no version holds
                    discard_run(written)
                raise
        finally:
            bronze.unpersist()


def _checked_and_cleaned(
    spark: SparkSession,
    city: CityConfig,
    date: str,
    settings: Settings,
    report: IngestReport,
    started: datetime,
    t0: float,
    delivery,
    files,
    bronze: DataFrame,
    sink: SilverSink,
) -> IngestReport:
    part = {CITY: city.name, DATE: date}
    with _phase(spark, "bronze line check"):
        in_bronze = _bronze_lines(bronze)
    lost = _bronze_line_check(in_bronze, files)
    if lost:
        raise AccountingError(f"{city.name} {date}: lines lost between the landed files and bronze: " + "; ".join(lost))
    rows = join_quoted_lines(bronze, files, city.raw.delimiter)

    headers = sorted({f.header for f in files if f.header is not None})
    # Parsed once (a Porto POLYLINE in the Arrow worker): the verdicts, their counts and the points read it.
    # A Porto row is cleaned in that same worker (jobs/clean_points.checked_and_cleaned_porto): the frame
    # kept holds each row's verdict (kind `row`) and the trips and dropped points cleaned from it.
    porto = city.raw.format == "porto_csv"
    kept = _persist(
        check_rows(rows, city, headers, *porto_cleaning(city, sink)) if porto else check_rows(rows, city, headers)
    )
    checked = kept.where(F.col("kind") == ROW).select(*ROW_CHECK_COLUMNS) if porto else kept
    report.datum = city.datum
    # One pass over the rows' own verdicts (it fills the cache), the flagged rows moved in the driver:
    # rows by file and reason, and the points of the accepted rows.
    with _phase(spark, "row verdicts"):
        flags, counts = count_verdicts(checked, city)
    verdicts = row_verdicts(checked, city, flags)
    by_file: dict[tuple[str, str | None], int] = {k: n for k, (n, _) in counts.items()}
    report.points_read = sum(p for (_, reason), (_, p) in counts.items() if reason is None)
    row_counts: dict[str | None, int] = {}
    for (_, reason), n in by_file.items():
        row_counts[reason] = row_counts.get(reason, 0) + n
    report.rows_accepted = row_counts.pop(None, 0)
    report.rows_rejected_by_reason = row_counts
    report.rows_rejected = sum(row_counts.values())
    report.rejected_by_file = {k: n for k, n in by_file.items() if k[1] is not None}
    report.points_converted = report.points_read if city.datum != "wgs84" else 0
    # Counted apart from the verdicts; and the lines the rows span must be the lines of the files.
    with _phase(spark, "record spans"):
        report.rows_read, lines_in_rows = record_spans(rows, files, in_bronze)

    # One pass over whole streams gives the trajectories and the dropped points (jobs/clean_points.py).
    # A Porto row is a stream, cleaned above in the worker that checked it. A point log's rows are its
    # points, converted to WGS-84 before cleaning (bbox, speeds, stays), then shuffled by vehicle.
    if porto:  # cleaned already; the trips and drops of rows that rules over other rows rejected go
        cleaned = _without_rows(kept.where(F.col("kind") != ROW), flags)
    else:
        points = wgs84_points(explode_points(verdicts), city.datum)
        buckets = cleaning_buckets(report.rows_accepted, int(spark.conf.get("spark.sql.shuffle.partitions")))
        cleaned = _persist(clean_trips_spark(points, city, buckets=buckets, sink=sink))
    # A `drop` row stands for a run of dropped points in its task's rejects file (n_points of them).
    outcome = cleaned.groupBy("kind", REASON).agg(F.count(F.lit(1)).alias("n"), F.sum("n_points").alias("p"))
    report.points_dropped_by_reason = {}
    with _phase(spark, "cleaning"):
        outcome = outcome.collect()
        parts, drop_parts = _written_parts(kept if porto else cleaned, sink, flags if porto else {})
    for r in outcome:
        if r["kind"] in (PART, REJECTS_PART):
            continue
        if r["kind"] == TRIP:
            report.trajectories_out += int(r["n"])
            report.points_kept += int(r["p"] or 0)
        else:
            report.points_dropped_by_reason[r[REASON]] = int(r["p"])
    report.points_dropped = sum(report.points_dropped_by_reason.values())

    # The rows rejected whole and the files set aside, written beside the dropped points' files (which the
    # cleaning workers wrote) and committed with them: one commit replaces the date's partition.
    row_rejects = (
        verdicts.where(F.col(REASON).isNotNull())
        .select(SOURCE_FILE, ROW_ID, F.lit(None).cast("int").alias(POINT_IDX), REASON, DETAIL)
        .unionByName(_file_rejects(spark, delivery.quarantined + delivery.skipped))
    )
    # Counted already: as many tasks (and files) as the rows need, not one per partition of the cached rows.
    n_rejects = report.rows_rejected + len(delivery.quarantined) + len(delivery.skipped)
    row_rejects = row_rejects.coalesce(max(1, -(-n_rejects // REJECTS_PER_TASK)))
    with _phase(spark, "rejects"):
        rejects_parts = drop_parts + (write_frame(row_rejects, sink.rejects, "rows") if n_rejects else [])
        report.rejects_version = commit_parts(
            sink.rejects,
            rejects_parts,
            partition_by=table("rejects").partition_by,
            user_metadata=f"run {report.run_id}",
        )

    _check_accounting(report, lines_in_rows)
    if not files and delivery.quarantined:
        failure = "no landed file could be read: " + "; ".join(s.describe() for s in delivery.quarantined)
        status = "failed_unreadable"
    else:
        failure = _quality_gate(report, city)
        status = "failed_quality_gate" if failure else "published"
    report.message = "; ".join(m for m in (failure, report.notes()) if m)
    if failure:
        discard_run(sink.parts)
    else:
        with _phase(spark, "silver"):
            report.silver_version = commit_parts(
                sink.parts, parts, partition_by=table("silver").partition_by, user_metadata=f"run {report.run_id}"
            )
            log.info("replaced %s in %s (version %s)", part, sink.parts.table, report.silver_version)
    report.seconds = time.time() - t0
    report.status = status
    with _phase(spark, "runs"):
        _append_run(spark, report, started, settings)
        _close_repaired(spark, report, settings)  # every table of the date was replaced by this run
    for df in [kept, cleaned]:
        df.unpersist()
    log.info(report.summary())
    if report.status == "failed_unreadable":
        raise LandingError(f"{city.name} {date}: {failure}; silver not published (rejects name the files)")
    if failure:
        raise QualityGateError(f"{city.name} {date}: {failure}; silver not published (bronze and rejects kept)")
    return report


def _silver_sink(settings: Settings, city: CityConfig, date: str, report: IngestReport) -> SilverSink:
    """Where the cleaning workers write this run's silver files (jobs/clean_trips.trips_to_parts): the
    date's partition, files named after the run, in the table's own schema (silver's when it is new)."""
    part = {CITY: city.name, DATE: date}

    def sink_of(name: str, schema) -> PartSink:
        path = table_path(settings, name)
        return PartSink(path, part, table_schema(path, table(name).partition_by, schema), tag=report.run_id)

    return SilverSink(
        sink_of("silver", delta_arrow_schema(SILVER_SCHEMA)),
        city=city.name,
        key=load_vehicle_key(settings),
        rejects=sink_of("rejects", delta_arrow_schema(REJECTS_SCHEMA)),
        runs_by_row=city.raw.format == "porto_csv",  # only a Porto row can be rejected after its cleaning
    )


def _written_parts(cleaned: DataFrame, sink: SilverSink, flags) -> tuple[list[dict], list[dict]]:
    """(the silver files, the rejects files) the cleaning workers wrote (their `part` and `rejects_part`
    rows, one job), without the trips and dropped points of rows that a rule over other rows rejected
    after they were written (`flags`: row_id -> flag; their files rewritten): such a row is quarantined
    whole, once. A `trip` row is one row of its file, a `drop` row a run of n_points rows."""
    written = cleaned.where(F.col("kind").isin(PART, REJECTS_PART)).select("kind", *PART_COLUMNS).collect()
    parts = {
        kind: [{c: r[c] for c in PART_COLUMNS} for r in written if r["kind"] == kind] for kind in (PART, REJECTS_PART)
    }
    positions: dict[str, dict[str, list[int]]] = {TRIP: {}, DROP: {}}
    if flags:
        rows = _rows_by_id(cleaned.where(F.col("kind").isin(TRIP, DROP)), flags, "left_semi")
        for r in rows.select("kind", "part_path", "part_row", "n_points").collect():
            span = 1 if r["kind"] == TRIP else r["n_points"]
            positions[r["kind"]].setdefault(r["part_path"], []).extend(range(r["part_row"], r["part_row"] + span))
    return (
        drop_part_rows(sink.parts, parts[PART], positions[TRIP]),
        drop_part_rows(sink.rejects, parts[REJECTS_PART], positions[DROP]),
    )


def _rows_by_id(df: DataFrame, row_ids, how: str) -> DataFrame:
    """`df`'s rows whose row_id is among `row_ids` (how `left_semi`) or not (`left_anti`): a few ids, so a
    broadcast join."""
    ids = df.sparkSession.createDataFrame([(int(r),) for r in sorted(row_ids)], f"{ROW_ID} long")
    return df.join(F.broadcast(ids), ROW_ID, how)


def _without_rows(df: DataFrame, row_ids) -> DataFrame:
    """`df` without the rows whose row_id is among `row_ids`."""
    return _rows_by_id(df, row_ids, "left_anti") if row_ids else df


def _check_accounting(r: IngestReport, lines_in_rows: int | None = None) -> None:
    problems = []
    if lines_in_rows is not None and lines_in_rows != r.lines_read:
        problems.append(f"lines in the files {r.lines_read} != lines in rows {lines_in_rows}")
    if r.rows_read != r.rows_accepted + r.rows_rejected:
        problems.append(f"rows read {r.rows_read} != accepted {r.rows_accepted} + rejected {r.rows_rejected}")
    if r.points_read != r.points_kept + r.points_dropped:
        problems.append(f"points read {r.points_read} != kept {r.points_kept} + dropped {r.points_dropped}")
    if problems:
        raise AccountingError(f"{r.city} {r.date}: " + "; ".join(problems))


def _quality_gate(r: IngestReport, city: CityConfig) -> str | None:
    """The share counts data rows only: blank lines, repeated headers and footers are accounted for in
    rejects but are not data. A failure names the files and reasons that drove the share."""
    q = city.quality
    not_data = sum(n for reason, n in r.rows_rejected_by_reason.items() if reason in NON_DATA_REASONS)
    data_rows, rejected = r.rows_read - not_data, r.rows_rejected - not_data
    share = rejected / data_rows if data_rows else 0.0
    if share > q.max_rejected_share:
        per_file: dict[str, dict[str, int]] = {}
        for (name, reason), n in r.rejected_by_file.items():
            if reason not in NON_DATA_REASONS:
                per_file.setdefault(name, {})[reason] = n
        worst = sorted(per_file.items(), key=lambda kv: -sum(kv[1].values()))[:5]
        drivers = "; ".join(
            f"{name}: " + ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
            for name, reasons in worst
        )
        return (
            f"rejected share {share:.1%} of {data_rows} data rows is above quality.max_rejected_share "
            f"{q.max_rejected_share:.0%} (blank lines, headers and footers not counted); driven by {drivers}"
        )
    if r.trajectories_out < q.min_trajectories:
        return f"{r.trajectories_out} trajectories out, fewer than quality.min_trajectories {q.min_trajectories}"
    return None


def _append_run(
    spark: SparkSession, r: IngestReport, started: datetime, settings: Settings, finished: datetime | None = None
) -> None:
    """One line of the runs log, written by delta-rs (feature_store.delta_io.append_arrow): no Spark job."""
    row = {k: getattr(r, k) for k in RUNS_SCHEMA.names if hasattr(r, k)}
    row.update(job="ingest", started_at=started, finished_at=finished or datetime.now(UTC))
    rows = pa.Table.from_pylist([row], schema=_runs_arrow_schema())
    append_arrow(rows, table_path(settings, "runs"), partition_by=table("runs").partition_by)


@functools.cache
def _runs_arrow_schema() -> pa.Schema:
    """RUNS_SCHEMA as Arrow, every field nullable as Delta stores a table Spark created (the two writers
    must agree); the non-null fields are still always filled (IngestReport's defaults)."""
    return delta_arrow_schema(RUNS_SCHEMA)


def date_range(start: str, end: str) -> list[str]:
    a, b = Date.fromisoformat(start), Date.fromisoformat(end)
    if b < a:
        raise ValueError(f"--end {end} is before --start {start}")
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def main(argv: list[str] | None = None) -> int:
    from transfertraj.core.log_config import configure_logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    return run(args, Settings.load())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--city", required=True, help="city name (config/cities/<city>.yaml)")
    parser.add_argument("--date", help="delivery date YYYY-MM-DD (a landing/<city>/<date>/ folder)")
    parser.add_argument("--start", help="first date of a backfill range (with --end)")
    parser.add_argument("--end", help="last date of a backfill range, inclusive")
    parser.add_argument("--all-landed", action="store_true", help="every date folder landed for the city")
    parser.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the data-quality report (PNG + HTML) per date (default on)",
    )


def run(args, settings: Settings) -> int:
    from transfertraj.jobs.spark_session import get_spark

    city = load_city(args.city, settings)
    if args.date:
        dates = [args.date]
    elif args.start and args.end:
        dates = date_range(args.start, args.end)
    elif args.all_landed:
        dates = sorted(p.name for p in (settings.landing / city.name).iterdir() if p.is_dir())
    else:
        raise SystemExit("give --date, or --start and --end, or --all-landed")
    spark = get_spark("ingest", settings)
    outcomes: dict[str, str] = {}
    from tqdm import tqdm

    # A backfill goes on past a failed date: every date's outcome is reported, the exit code says if any failed.
    for day in tqdm(dates, desc=f"ingest {city.name}", unit="date", disable=len(dates) < 2):
        if not (settings.landing / city.name / day).is_dir():
            log.warning("%s %s: nothing landed, skipped", city.name, day)
            outcomes[day] = "nothing landed"
            continue
        try:
            report = ingest_date(spark, city, day, settings)
            print(report.summary())
            outcomes[day] = report.status
        except (QualityGateError, LandingError, AccountingError) as err:
            outcomes[day] = f"FAILED {type(err).__name__}: {err}"
            log.error("%s", err)
        except Exception as err:  # noqa: BLE001 - one date's unexpected failure must not stop a backfill
            outcomes[day] = f"FAILED {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log.exception("%s %s: ingestion failed", city.name, day)
        if args.report:
            from transfertraj.jobs.quality_report import write_quality_report

            try:
                print(f"quality report: {write_quality_report(spark, city, day, settings)}")
            except LookupError as err:
                log.warning("%s", err)
    failed = [d for d, o in outcomes.items() if o.startswith("FAILED")]
    if len(dates) > 1 or failed:
        print(f"ingest {city.name}: {len(outcomes) - len(failed)} date(s) ok, {len(failed)} failed")
        for day, outcome in outcomes.items():
            print(f"  {day}  {outcome}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
