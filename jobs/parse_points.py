"""Bronze rows -> row verdicts and GPS points, for each raw format.

    checked = check_rows(bronze, city, headers).persist()   # a verdict per row, parsed once
    points = explode_points(checked)                         # reads the persisted rows

`checked` has one row per bronze row with `reason` (null = accepted) and `detail`; `points` has one
row per point of an accepted row: source_file, row_id, point_idx, stream_id, vehicle_id, ts (Unix s,
UTC), lon, lat, trip_state. A stream is what trips are cut from: one Porto row (a trip as recorded),
or one vehicle of a point log. Built-in Spark functions only (Spark 4 runs in ANSI mode: every parse
uses a try_ function so bad values become verdicts, not crashes).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from transfertraj.core.city_config import CityConfig
from transfertraj.core.constants import EPOCH_UNITS
from transfertraj.jobs.landed_files import PORTO_COLUMNS
from transfertraj.jobs.schemas import DETAIL, HEADER, LINE, POINT_IDX, REASON, ROW_ID, SOURCE_FILE

PORTO_FIX_INTERVAL_S = 15  # the Porto format: one POLYLINE point every 15 s from TIMESTAMP
MIN_EPOCH_S = 631_152_000  # 1990-01-01: GPS logs older than this are typos
MAX_EPOCH_S = 4_102_444_800  # 2100-01-01
# auto: ISO-8601 date and time ('T' or a space), any fraction (up to nanoseconds: kept to the microsecond),
# an optional offset ('Z', +08:00, +0800, +08). Parsed to whole seconds by a fixed pattern; the fraction is
# added as a number, so no digit count needs its own pattern.
ISO_RE = r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
ISO_WHOLE_PATTERN = "yyyy-MM-dd HH:mm:ss"
FOOTER_MAX_LINES = 3  # at most this many one-field lines after a file's last data line are its footer
# Lines that are not data rows: rejected (accounted for) but not counted by the quality gate.
NON_DATA_REASONS = ("blank_line", "repeated_header", "footer")
_NULL_SENTINEL = "\u0001"  # so that an empty field is '' and a missing trailing field is null

POINT_COLUMNS = [SOURCE_FILE, ROW_ID, POINT_IDX, "stream_id", "vehicle_id", "ts", "lon", "lat", "trip_state", "ts_alt"]
# One row per bronze row: its verdict (reason null = accepted) and what the points are made from.
CHECKED_COLUMNS = [
    SOURCE_FILE,
    ROW_ID,
    REASON,
    DETAIL,
    "stream_id",
    "vehicle_id",
    "ts0",
    "ts0_alt",  # point logs: the later instant of an ambiguous local time (DST), else null
    "poly",
    "lon",
    "lat",
    "trip_state",
]


def _first_reason(*rules: tuple[Column, str]) -> Column:
    """The first rule that fires names the reason; null when none does."""
    expr = F.lit(None).cast("string")
    for cond, reason in reversed(rules):
        expr = F.when(cond, F.lit(reason)).otherwise(expr)
    return expr


def iso_parts(col: Column) -> tuple[Column, Column, Column]:
    """ISO-8601 text -> (naive, zoned, fraction): the whole-second timestamp of text without an offset
    (wall clock, null otherwise), of text with one (the instant, null otherwise), and the fraction of a
    second as a double (microseconds exact; digits past the ninth are not ISO and do not match).
    Explicit patterns only: a pattern-free parse accepts 'yesterday' and 'now'."""
    # One normalised text, referred to once by each parse (the caller's plan repeats these many times):
    # 'date time[offset]' with 'Z' -> +00:00, +0800 -> +08:00, +08 -> +08:00. Text that does not match
    # stays as it is and fails both strict patterns.
    norm = F.regexp_replace(col, ISO_RE, "$1 $2$4")
    norm = F.regexp_replace(norm, "[Zz]$", "+00:00")
    norm = F.regexp_replace(norm, r"([+-]\d{2})(\d{2})$", "$1:$2")
    norm = F.regexp_replace(norm, r"([+-]\d{2})$", "$1:00")
    naive = F.try_to_timestamp(norm, F.lit(ISO_WHOLE_PATTERN))
    zoned = F.try_to_timestamp(norm, F.lit(ISO_WHOLE_PATTERN + "XXX"))
    # Microseconds as an integer first: 0.739166 as a double sum keeps the instant to well under 1 us.
    frac = F.coalesce(
        F.rpad(F.regexp_extract(col, ISO_RE, 3), 9, "0").substr(1, 6).try_cast("long") / 1_000_000.0, F.lit(0.0)
    )
    return naive, zoned, frac


EXPLICIT_UNITS = {"unix_s": 1.0, "unix_ms": 1e3, "unix_us": 1e6, "unix_ns": 1e9}
_UNIT_NAMES = {1e3: "unix_ms", 1e6: "unix_us", 1e9: "unix_ns"}


def epoch_number_seconds(num: Column) -> Column:
    """A Unix epoch number -> seconds, its unit told by its magnitude (core.constants.EPOCH_UNITS):
    seconds, milliseconds, microseconds or nanoseconds. (A double keeps a nanosecond epoch to ~0.3 us.)"""
    expr = num
    for threshold, per_second in reversed(EPOCH_UNITS):
        expr = F.when(num > threshold, num / per_second).otherwise(expr)
    return expr


def timestamp_format_of(col: Column, fmt: str) -> Column:
    """The format a timestamp text was read in, for the run's log: fmt itself unless it is auto, where it is
    unix_s, unix_ms, unix_us, unix_ns, iso_offset (an offset or Z) or iso_local (in timestamp_timezone);
    null when unreadable."""
    if fmt != "auto":
        return F.lit(fmt)
    num = col.try_cast("double")
    naive, zoned, _ = iso_parts(col)
    unit = F.lit(None).cast("string")
    for threshold, per_second in reversed(EPOCH_UNITS):
        unit = F.when(num > threshold, F.lit(_UNIT_NAMES[per_second])).otherwise(unit)
    return (
        F.when(unit.isNotNull(), unit)
        .when(num.isNotNull(), F.lit("unix_s"))
        .when(zoned.isNotNull(), F.lit("iso_offset"))
        .when(naive.isNotNull(), F.lit("iso_local"))
    )


def epoch_seconds(col: Column, fmt: str, source_tz: str) -> Column:
    """Timestamp text -> Unix seconds (double) or null. unix_s/auto also detect ms, us and ns by magnitude."""
    num = col.try_cast("double")
    as_number = epoch_number_seconds(num)
    if fmt in ("unix_ms", "unix_us", "unix_ns"):
        return num / EXPLICIT_UNITS[fmt]
    if fmt == "unix_s":
        return as_number
    if fmt == "auto":
        naive, zoned, frac = iso_parts(col)
        as_text = F.coalesce(F.unix_timestamp(zoned), F.unix_timestamp(F.to_utc_timestamp(naive, source_tz)))
        return F.coalesce(as_number, as_text + frac)
    parsed = F.try_to_timestamp(col, F.lit(fmt))
    return F.unix_timestamp(F.to_utc_timestamp(parsed, source_tz)).cast("double")


def _offset_s(utc_s: Column, tz: str) -> Column:
    """The zone's UTC offset (seconds) at a Unix time."""
    return F.unix_timestamp(F.from_utc_timestamp(F.timestamp_seconds(utc_s), tz)) - utc_s


def local_time_candidates(col: Column, fmt: str, source_tz: str) -> tuple[Column, Column, Column]:
    """Timestamp text -> (ts, ts_alt, nonexistent): Unix seconds (double) as epoch_seconds, except for
    local wall-clock times without an offset that a DST change makes ambiguous or impossible.

    Ambiguous (the repeated hour of an autumn change): ts is the earlier instant, ts_alt the later one;
    which is meant is decided by the fix order of the vehicle's stream (jobs/clean_points.py), never
    guessed here. Non-existent (the skipped hour of a spring change): ts null, nonexistent true."""
    zero = F.lit(False)
    if fmt in EXPLICIT_UNITS or source_tz.upper() in ("UTC", "Z", "GMT", "ETC/UTC"):
        return epoch_seconds(col, fmt, source_tz), F.lit(None).cast("double"), zero
    if fmt == "auto":
        num = col.try_cast("double")
        as_number = epoch_number_seconds(num)
        naive, zoned, frac = iso_parts(col)
        explicit = F.coalesce(as_number, F.unix_timestamp(zoned) + frac)
    else:
        naive = F.try_to_timestamp(col, F.lit(fmt))
        explicit = F.lit(None).cast("double")
        frac = F.lit(0.0)
    # The session zone is UTC, so the naive timestamp's epoch is the wall clock read as UTC.
    local = F.unix_timestamp(naive)
    c1 = local - _offset_s(local - 86_400, source_tz)  # the instant under the offset of the day before
    c2 = local - _offset_s(local + 86_400, source_tz)  # ... and of the day after
    ok1 = (c1 + _offset_s(c1, source_tz)) == local
    ok2 = (c2 + _offset_s(c2, source_tz)) == local
    ambiguous = ok1 & ok2 & (c1 != c2)
    one = F.when(ok1, c1).when(ok2, c2)
    early = F.when(ambiguous, F.least(c1, c2)).otherwise(one) + frac
    late = F.when(explicit.isNull() & ambiguous, F.greatest(c1, c2)) + frac
    nonexistent = explicit.isNull() & naive.isNotNull() & ~F.coalesce(ok1 | ok2, F.lit(False))
    return F.coalesce(explicit, early), late, nonexistent


def _valid_coordinate(lon: Column, lat: Column) -> Column:
    return (
        lon.isNotNull()
        & lat.isNotNull()
        & ~F.isnan(lon)
        & ~F.isnan(lat)
        & (F.abs(lon) <= 180)
        & (F.abs(lat) <= 90)
        & ~((lon == 0) & (lat == 0))
    )


def _csv_fields(header_columns: tuple[str, ...]) -> tuple[str, str]:
    """A from_csv schema of every header column plus one sentinel that catches extra fields."""
    names = [f"c{i}" for i in range(len(header_columns))]
    return ", ".join(f"`{n}` STRING" for n in names + ["__extra"]), names[-1]


def footer_rows(rows: DataFrame, sep: str = ",") -> DataFrame:
    """(source_file, row_id, _footer) of each file's footer: up to FOOTER_MAX_LINES non-blank lines
    without a delimiter ('EOF', 'total 1264 rows') after the file's last line that has one."""
    nonblank = F.trim(F.col(LINE)) != ""
    single = nonblank & ~F.col(LINE).contains(sep)
    last = rows.where(nonblank & ~single).groupBy(SOURCE_FILE).agg(F.max(ROW_ID).alias("_last"))
    tail = (
        rows.where(single)
        .join(F.broadcast(last), SOURCE_FILE, "left")
        .where(F.col(ROW_ID) > F.coalesce(F.col("_last"), F.lit(-1)))
        .groupBy(SOURCE_FILE)
        .agg(F.collect_list(ROW_ID).alias("_ids"))
        .where(F.size("_ids") <= FOOTER_MAX_LINES)
    )
    return tail.select(SOURCE_FILE, F.explode("_ids").alias(ROW_ID), F.lit(True).alias("_footer"))


def _generic_row_rules(
    rows: DataFrame, header_columns: tuple[str, ...], sep: str = ","
) -> tuple[DataFrame, list[tuple[Column, str]]]:
    schema, last = _csv_fields(header_columns)
    rows = rows.join(F.broadcast(footer_rows(rows, sep)), [SOURCE_FILE, ROW_ID], "left")
    options = {"mode": "PERMISSIVE", "nullValue": _NULL_SENTINEL, "emptyValue": "", "sep": sep}
    parsed = rows.withColumn("f", F.from_csv(F.col(LINE), schema, options))
    too_few = F.col(f"f.{last}").isNull() & ~F.col(LINE).endswith(sep)
    rules = [
        (F.trim(F.col(LINE)) == "", "blank_line"),
        (F.col("_footer").isNotNull(), "footer"),
        (F.col(LINE) == F.col(HEADER), "repeated_header"),
        (F.col(LINE).contains("\ufffd"), "bad_encoding"),
        (F.col("f.__extra").isNotNull() | too_few, "malformed_csv"),
    ]
    return parsed, rules


def _field(header_columns: tuple[str, ...], name: str) -> Column:
    return F.col(f"f.c{header_columns.index(name)}")


def check_porto_rows(rows: DataFrame, header_columns: tuple[str, ...], sep: str = ",") -> DataFrame:
    """Porto rows -> CHECKED_COLUMNS: a verdict per row, and the parsed POLYLINE of accepted rows."""
    parsed, rules = _generic_row_rules(rows, header_columns, sep)
    f = lambda name: _field(header_columns, name)  # noqa: E731
    ts0 = epoch_seconds(f("TIMESTAMP"), "unix_s", "UTC")
    poly = F.from_json(f("POLYLINE"), "array<array<double>>")
    parsed = parsed.withColumn("ts0", ts0).withColumn("poly", poly)
    pair_ok = F.forall(F.col("poly"), lambda p: F.size(p) == 2)
    content = [
        (
            F.trim(f("TAXI_ID")).isNull()
            | (F.trim(f("TAXI_ID")) == "")
            | f("POLYLINE").isNull()
            | (f("POLYLINE") == ""),
            "missing_field",
        ),
        (F.col("ts0").isNull() | (F.col("ts0") < MIN_EPOCH_S) | (F.col("ts0") > MAX_EPOCH_S), "bad_timestamp"),
        (F.col("poly").isNull() | ~pair_ok, "bad_polyline"),
        (F.size(F.col("poly")) == 0, "empty_polyline"),
    ]
    # An exact copy of an earlier line (same trip delivered twice) is a duplicate row. One TRIP_ID with two
    # different valid lines is a conflict: every version is quarantined, none is guessed right. (The
    # by-trip window runs first, so the by-line window reuses its shuffle.)
    trip = F.trim(f("TRIP_ID"))
    parsed = (
        parsed.withColumn("line_hash", F.sha2(F.col(LINE), 256))
        .withColumn("_trip", F.when(trip != "", trip))
        .withColumn("_structure", _first_reason(*rules))
        .withColumn("_content", _first_reason(*content))
    )
    valid = F.col("_structure").isNull() & F.col("_content").isNull() & F.col("_trip").isNotNull()
    parsed = parsed.withColumn(
        "_versions", F.size(F.collect_set(F.when(valid, F.col("line_hash"))).over(Window.partitionBy("_trip")))
    ).withColumn("_first_copy", F.min(ROW_ID).over(Window.partitionBy("_trip", "line_hash")))
    reason = F.coalesce(
        F.col("_structure"),
        F.when(F.col(ROW_ID) != F.col("_first_copy"), F.lit("duplicate_row")),
        F.col("_content"),
        F.when(valid & (F.col("_versions") > 1), F.lit("conflicting_duplicate")),
    )
    checked = parsed.withColumn(REASON, reason).withColumn(
        DETAIL, F.when(F.col(REASON).isNotNull(), F.substring(F.col(LINE), 1, 300))
    )
    return checked.select(
        SOURCE_FILE,
        ROW_ID,
        REASON,
        DETAIL,
        F.col("line_hash").alias("stream_id"),
        F.trim(f("TAXI_ID")).alias("vehicle_id"),
        F.col("ts0"),
        F.lit(None).cast("double").alias("ts0_alt"),
        F.col("poly"),
        F.lit(None).cast("double").alias("lon"),
        F.lit(None).cast("double").alias("lat"),
        F.lit(None).cast("string").alias("trip_state"),
    )


def check_point_log_rows(
    rows: DataFrame, header_columns: tuple[str, ...], city: CityConfig, sep: str = ","
) -> DataFrame:
    """Point-log rows -> CHECKED_COLUMNS: a verdict per row; an accepted row is one fix."""
    parsed, rules = _generic_row_rules(rows, header_columns, sep)
    cols = city.raw.file_columns
    f = lambda canon: _field(header_columns, cols[canon])  # noqa: E731
    # The timestamp text as its own column first: its parse refers to it many times, and each reference
    # to the from_csv field would otherwise parse the line again.
    parsed = parsed.withColumn("_ts_text", F.trim(f("timestamp"))).select(
        "*",
        F.trim(f("vehicle_id")).alias("vehicle_id"),
        *(
            c.alias(n)
            for c, n in zip(
                local_time_candidates(F.col("_ts_text"), city.raw.timestamp_format, city.raw.timestamp_timezone),
                ("ts_s", "ts_alt", "_nonexistent"),
                strict=True,
            )
        ),
        F.trim(f("lon")).try_cast("double").alias("lon"),
        F.trim(f("lat")).try_cast("double").alias("lat"),
        (F.trim(f("trip_state")) if "trip_state" in cols else F.lit(None).cast("string")).alias("trip_state"),
    )
    rules += [
        (F.col("vehicle_id").isNull() | (F.col("vehicle_id") == ""), "missing_field"),
        (F.col("_nonexistent"), "nonexistent_local_time"),
        (F.col("ts_s").isNull() | (F.col("ts_s") < MIN_EPOCH_S) | (F.col("ts_s") > MAX_EPOCH_S), "bad_timestamp"),
        (~_valid_coordinate(F.col("lon"), F.col("lat")), "invalid_coordinate"),
    ]
    checked = parsed.withColumn(REASON, _first_reason(*rules)).withColumn(
        DETAIL, F.when(F.col(REASON).isNotNull(), F.substring(F.col(LINE), 1, 300))
    )
    return checked.select(
        SOURCE_FILE,
        ROW_ID,
        REASON,
        DETAIL,
        F.col("vehicle_id").alias("stream_id"),
        "vehicle_id",
        F.col("ts_s").alias("ts0"),
        F.col("ts_alt").alias("ts0_alt"),
        F.lit(None).cast("array<array<double>>").alias("poly"),
        "lon",
        "lat",
        "trip_state",
    )


def file_delimiter(source_file: Column, city: CityConfig) -> Column:
    """The delimiter of each row's file, as RawSource.delimiter_for names it (by extension unless set)."""
    if city.raw.delimiter is not None:
        return F.lit(city.raw.delimiter)
    return F.when(F.lower(source_file).rlike(r"\.tsv(\.gz)?$"), F.lit("\t")).otherwise(F.lit(","))


def check_rows(bronze: DataFrame, city: CityConfig, headers: list[str]) -> DataFrame:
    """Every (header, delimiter) group of a delivery checked, as one frame of CHECKED_COLUMNS. A header
    only passed the landing check split by its file's delimiter, so it contains that delimiter."""
    import csv

    checked = None
    seps = [city.raw.delimiter] if city.raw.delimiter is not None else [",", "\t"]
    with_sep = bronze.withColumn("_sep", file_delimiter(F.col(SOURCE_FILE), city))
    for header in headers:
        for sep in [s for s in seps if s in header] or seps[:1]:
            columns = tuple(c.strip() for c in next(csv.reader([header], delimiter=sep)))
            group = with_sep.where((F.col(HEADER) == header) & (F.col("_sep") == sep)).drop("_sep")
            if city.raw.format == "porto_csv":
                c = check_porto_rows(group, columns, sep)
            else:
                c = check_point_log_rows(group, columns, city, sep)
            checked = c if checked is None else checked.unionByName(c)
    return checked


def detected_timestamp_formats(bronze: DataFrame, city: CityConfig, headers: list[str], sample: int = 100_000) -> dict:
    """{format: rows} of the timestamp texts of up to `sample` rows per header group (timestamp_format_of),
    for the run's log: which of auto's formats a delivery is written in ('unreadable' counts the others).
    Porto rows are unix_s by definition; a configured format is reported as itself."""
    import csv

    fmt = city.raw.timestamp_format if city.raw.format == "point_log" else "unix_s"
    if fmt != "auto":
        return {fmt: None}
    counts: dict[str, int] = {}
    seps = [city.raw.delimiter] if city.raw.delimiter is not None else [",", "\t"]
    with_sep = bronze.withColumn("_sep", file_delimiter(F.col(SOURCE_FILE), city))
    for header in headers:
        for sep in [s for s in seps if s in header] or seps[:1]:
            columns = tuple(c.strip() for c in next(csv.reader([header], delimiter=sep)))
            schema, _ = _csv_fields(columns)
            group = with_sep.where((F.col(HEADER) == header) & (F.col("_sep") == sep) & (F.trim(F.col(LINE)) != ""))
            text = F.trim(
                F.from_csv(F.col(LINE), schema, {"sep": sep})[f"c{columns.index(city.raw.file_columns['timestamp'])}"]
            )
            found = group.limit(sample).select(
                F.coalesce(timestamp_format_of(text, "auto"), F.lit("unreadable")).alias("f")
            )
            for r in found.groupBy("f").count().collect():
                counts[r.f] = counts.get(r.f, 0) + int(r["count"])
    return counts


def explode_points(checked: DataFrame) -> DataFrame:
    """Accepted rows of check_rows -> POINT_COLUMNS, one row per GPS fix (a Porto row's POLYLINE points
    are PORTO_FIX_INTERVAL_S apart from its TIMESTAMP; a point-log row is its own single fix).
    Persist `checked` first when both its verdicts and these points are used: nothing is parsed twice."""
    coords = F.coalesce(F.col("poly"), F.array(F.array(F.col("lon"), F.col("lat"))))
    return (
        checked.where(F.col(REASON).isNull())
        .select(
            SOURCE_FILE,
            ROW_ID,
            "stream_id",
            "vehicle_id",
            "ts0",
            "ts0_alt",
            "trip_state",
            F.posexplode(coords).alias(POINT_IDX, "p"),
        )
        .select(
            SOURCE_FILE,
            ROW_ID,
            F.col(POINT_IDX).cast("int").alias(POINT_IDX),
            "stream_id",
            "vehicle_id",
            (F.col("ts0").cast("long") + F.col(POINT_IDX) * PORTO_FIX_INTERVAL_S).alias("ts"),
            F.col("p")[0].alias("lon"),
            F.col("p")[1].alias("lat"),
            "trip_state",
            F.col("ts0_alt").cast("long").alias("ts_alt"),
        )
    )


def parse_rows(bronze: DataFrame, city: CityConfig, headers: list[str]) -> tuple[DataFrame, DataFrame]:
    """(row verdicts, points) of a delivery: check_rows and explode_points in one call."""
    checked = check_rows(bronze, city, headers)
    return checked, explode_points(checked)


__all__ = [
    "parse_rows",
    "check_rows",
    "explode_points",
    "check_porto_rows",
    "check_point_log_rows",
    "epoch_seconds",
    "timestamp_format_of",
    "detected_timestamp_formats",
    "PORTO_COLUMNS",
    "POINT_COLUMNS",
    "CHECKED_COLUMNS",
]
