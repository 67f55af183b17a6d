"""Bronze rows -> row verdicts and GPS points, for each raw format.

    checked = check_rows(bronze, city, headers).persist()   # each row parsed once (Porto: POLYLINE in Arrow)
    flags, counts = count_verdicts(checked, city)            # {(file, reason): (rows, points)}
    verdicts = row_verdicts(checked, city, flags)            # + the rules that look at other rows
    points = explode_points(verdicts)                        # point logs (Porto: jobs/clean_points.py)

`checked` has one row per bronze row with the verdicts of the row alone; `row_verdicts` adds a file's
footer and (Porto) duplicate rows and conflicting versions of a trip, each found on a slim projection of
the persisted rows and joined back by row id (the parsed rows are never shuffled). `verdicts` has
`reason` (null = accepted) and `detail`; `points` has one row per point of an accepted row:
source_file, row_id, point_idx, stream_id, vehicle_id, ts (Unix s, UTC), lon, lat, trip_state. A stream
is what trips are cut from: one Porto row (a trip as recorded), or one vehicle of a point log.

Built-in Spark functions for the fields (Spark 4 runs in ANSI mode: every parse uses a try_ function so
bad values become verdicts, not crashes); a Porto POLYLINE is parsed once, per batch of rows, in an Arrow
worker (parse_polylines: a RE2 grammar check and Arrow's CSV number parser), so that its points become
two arrays on the trip's row, never a Spark row each.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Row
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
# One row per bronze row: its verdict (reason null = accepted) and what the points are made from: a Porto
# row's POLYLINE as two arrays (lons, lats), a point log's fix as lon, lat.
CHECKED_COLUMNS = [
    SOURCE_FILE,
    ROW_ID,
    REASON,
    DETAIL,
    "stream_id",
    "vehicle_id",
    "ts0",
    "ts0_alt",  # point logs: the later instant of an ambiguous local time (DST), else null
    "lons",
    "lats",
    "lon",
    "lat",
    "trip_state",
    "n_points",  # the points of the row: its POLYLINE's (0 where not parsed), or 1 (a point log's fix)
]
# check_rows' rows, before the rules that look at other rows (row_verdicts): the reason of the row's
# structure and of its content apart, whether it has no delimiter (a footer candidate), its trip id.
ROW_CHECK_DDL = (
    "source_file string, row_id long, _structure string, _content string, _single boolean, _trip string, "
    "detail string, stream_id string, vehicle_id string, ts0 double, ts0_alt double, lons array<double>, "
    "lats array<double>, lon double, lat double, trip_state string, n_points int"
)
ROW_CHECK_COLUMNS = [f.strip().split(" ")[0] for f in ROW_CHECK_DDL.split(",")]


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


def _generic_row_rules(
    rows: DataFrame, header_columns: tuple[str, ...], sep: str = ","
) -> tuple[DataFrame, list[tuple[Column, str]]]:
    """(rows with the parsed fields `f` and `_single`, the structure rules of the row alone). The footer
    rule looks at the file's other lines: row_verdicts applies it to the persisted rows."""
    schema, last = _csv_fields(header_columns)
    options = {"mode": "PERMISSIVE", "nullValue": _NULL_SENTINEL, "emptyValue": "", "sep": sep}
    parsed = rows.withColumn("f", F.from_csv(F.col(LINE), schema, options)).withColumn(
        "_single", (F.trim(F.col(LINE)) != "") & ~F.col(LINE).contains(sep)
    )
    too_few = F.col(f"f.{last}").isNull() & ~F.col(LINE).endswith(sep)
    rules = [
        (F.trim(F.col(LINE)) == "", "blank_line"),
        (F.col(LINE) == F.col(HEADER), "repeated_header"),
        (F.col(LINE).contains("\ufffd"), "bad_encoding"),
        (F.col("f.__extra").isNotNull() | too_few, "malformed_csv"),
    ]
    return parsed, rules


def _field(header_columns: tuple[str, ...], name: str) -> Column:
    return F.col(f"f.c{header_columns.index(name)}")


# ---- the Porto POLYLINE, parsed in the Arrow worker -------------------------------------------------

# A POLYLINE is a JSON array of [lon, lat] pairs of numbers, whitespace allowed between tokens. A number
# is a JSON number or, as Spark's JSON reader allows, NaN, Infinity or INF with a sign: such a point is
# read, then dropped as invalid_coordinate by the cleaning, like (0, 0) or a longitude of 200.
_NUM = r"(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|NaN|[+-]?(?:Infinity|INF))"
_WS = r"[ \t\n\r]*"
_PAIR = rf"\[{_WS}{_NUM}{_WS},{_WS}{_NUM}{_WS}\]"
POLYLINE_RE = rf"^{_WS}\[{_WS}(?:{_PAIR}(?:{_WS},{_WS}{_PAIR})*)?{_WS}\]{_WS}$"
_TO_LINES = bytes.maketrans(b"[]", b"\n\n")  # '[[a,b],[c,d]]' -> lines '', '', 'a,b', ',', 'c,d', '', ''


def parse_polylines(texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """POLYLINE texts -> (ok, counts, lon, lat): ok (n,) bool where the text is a POLYLINE (an empty one
    included), counts (n,) int64 its points (0 where not ok), lon and lat (sum(counts),) float64 in order.

    Checked by one RE2 match (linear time), then read by Arrow's CSV number parser: every bracket becomes
    a line break, so each pair is a line 'lon,lat' and the ',' between pairs a line of two empty fields
    (null, dropped). Whitespace between tokens (rare) is removed first, on the rows that have it."""
    texts = texts.cast(pa.string()) if texts.type != pa.string() else texts
    ok = pc.fill_null(pc.match_substring_regex(texts, POLYLINE_RE), False)
    good = texts.filter(ok)
    if pc.any(pc.match_substring_regex(good, "[ \t\n\r]")).as_py():
        good = pc.replace_substring_regex(good, "[ \t\n\r]", "")
    counts = np.zeros(len(texts), np.int64)
    counts[ok.to_numpy(zero_copy_only=False)] = pc.subtract(pc.count_substring(good, "["), 1).to_numpy()
    if not counts.sum():
        return ok.to_numpy(zero_copy_only=False), counts, np.zeros(0), np.zeros(0)
    good = good.combine_chunks() if isinstance(good, pa.ChunkedArray) else good
    offsets = np.frombuffer(good.buffers()[1], np.int32)[good.offset : good.offset + len(good) + 1]
    text = good.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]].translate(_TO_LINES)
    import pyarrow.csv as pcsv

    pairs = pcsv.read_csv(
        pa.py_buffer(text),
        read_options=pcsv.ReadOptions(column_names=["lon", "lat"], use_threads=False),
        parse_options=pcsv.ParseOptions(quote_char=False),
        convert_options=pcsv.ConvertOptions(
            column_types={"lon": pa.float64(), "lat": pa.float64()},
            null_values=[""],  # 'NaN' is a number
        ),
    )
    pairs = pairs.filter(pc.is_valid(pairs.column("lon")))
    if pairs.num_rows != counts.sum():  # the grammar admits nothing else: a bug, never a data problem
        raise ValueError(f"POLYLINE parse: {pairs.num_rows} pairs read, {counts.sum()} counted")
    return ok.to_numpy(zero_copy_only=False), counts, pairs.column("lon").to_numpy(), pairs.column("lat").to_numpy()


def line_hashes(lines: pa.Array) -> pa.Array:
    """SHA-256 of each line's UTF-8 bytes, as lowercase hex (what Spark's sha2(line, 256) gives), read
    straight from the Arrow buffers. In the worker, not the JVM: OpenSSL's SHA-256 (hashlib) took a
    fraction of what the driver JVM spent on it (bench/ingest.py --jvm-profile: 7 % of its samples)."""
    import hashlib

    lines = lines.cast(pa.string()) if lines.type != pa.string() else lines
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[lines.offset : lines.offset + len(lines) + 1]
    data = memoryview(lines.buffers()[2] or b"")
    sha = hashlib.sha256
    return pa.array([sha(data[a:b]).hexdigest() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())])


def _polyline_verdicts(batches):
    """Arrow worker: the `_polyline` text of each row -> `lons`, `lats` and the polyline's verdict
    (bad_polyline, empty_polyline) in `_content`, where the row has no earlier reason; the row's `_line`
    -> its `stream_id` (line_hashes) and `detail` (its first 300 characters, as Spark's substring)."""
    for batch in batches:
        cols = {name: batch.column(name) for name in batch.schema.names}
        line = cols.pop("_line")
        cols["stream_id"] = line_hashes(line)
        cols[DETAIL] = pc.utf8_slice_codeunits(line, 0, 300)
        ok, counts, lon, lat = parse_polylines(cols.pop("_polyline"))
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        content = cols["_content"]
        earlier = pc.is_valid(content).to_numpy(zero_copy_only=False)
        verdict = np.where(ok, np.where(counts == 0, "empty_polyline", None), "bad_polyline")
        content = pa.array(np.where(earlier, content.to_numpy(zero_copy_only=False), verdict), pa.string())
        cols["_content"] = content
        cols["lons"] = pa.ListArray.from_arrays(offsets, pa.array(lon, pa.float64()))
        cols["lats"] = pa.ListArray.from_arrays(offsets, pa.array(lat, pa.float64()))
        cols["n_points"] = pa.array(counts, pa.int32())
        yield pa.RecordBatch.from_arrays([cols[c] for c in ROW_CHECK_COLUMNS], names=ROW_CHECK_COLUMNS)


def _null(kind: str) -> Column:
    return F.lit(None).cast(kind)


def check_porto_rows(
    rows: DataFrame, header_columns: tuple[str, ...], sep: str = ",", then=None, then_ddl: str | None = None
) -> DataFrame:
    """Porto rows -> ROW_CHECK_DDL: the verdicts of each row alone, and the POLYLINE of each row as
    arrays of lon and lat (parsed in an Arrow worker, per batch of rows). `detail` holds the line's start
    for every row: whether a row is a duplicate is only known later (row_verdicts).

    `then`: a function over those Arrow batches that runs in the same worker and yields rows of `then_ddl`
    instead (the ingestion cleans the rows there, jobs/clean_points.checked_and_cleaned_porto: the points
    never go back to the JVM and out again)."""
    parsed, rules = _generic_row_rules(rows, header_columns, sep)
    f = lambda name: _field(header_columns, name)  # noqa: E731
    ts0 = epoch_seconds(f("TIMESTAMP"), "unix_s", "UTC")
    # The content rules Spark can tell; the POLYLINE's own (bad_polyline, empty_polyline) follow in Arrow.
    parsed = parsed.withColumn("ts0", ts0)
    content = [
        (
            F.trim(f("TAXI_ID")).isNull()
            | (F.trim(f("TAXI_ID")) == "")
            | f("POLYLINE").isNull()
            | (f("POLYLINE") == ""),
            "missing_field",
        ),
        (F.col("ts0").isNull() | (F.col("ts0") < MIN_EPOCH_S) | (F.col("ts0") > MAX_EPOCH_S), "bad_timestamp"),
    ]
    trip = F.trim(f("TRIP_ID"))
    structure = _first_reason(*rules)
    rows = parsed.select(
        SOURCE_FILE,
        ROW_ID,
        structure.alias("_structure"),
        _first_reason(*content).alias("_content"),
        "_single",
        F.when(trip != "", trip).alias("_trip"),
        F.col(LINE).alias("_line"),  # -> detail and stream_id, in the worker
        F.trim(f("TAXI_ID")).alias("vehicle_id"),
        "ts0",
        _null("double").alias("ts0_alt"),
        # Only rows whose structure is sound are worth parsing; the others' POLYLINE is not looked at.
        F.when(structure.isNull(), f("POLYLINE")).alias("_polyline"),
        _null("double").alias("lon"),
        _null("double").alias("lat"),
        _null("string").alias("trip_state"),
        _null("int").alias("n_points"),
    )
    if then is None:
        return rows.mapInArrow(_polyline_verdicts, ROW_CHECK_DDL)
    return rows.mapInArrow(lambda batches: then(_polyline_verdicts(batches)), then_ddl)


def check_point_log_rows(
    rows: DataFrame, header_columns: tuple[str, ...], city: CityConfig, sep: str = ","
) -> DataFrame:
    """Point-log rows -> ROW_CHECK_DDL: the verdicts of each row alone; an accepted row is one fix."""
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
    content = [
        (F.col("vehicle_id").isNull() | (F.col("vehicle_id") == ""), "missing_field"),
        (F.col("_nonexistent"), "nonexistent_local_time"),
        (F.col("ts_s").isNull() | (F.col("ts_s") < MIN_EPOCH_S) | (F.col("ts_s") > MAX_EPOCH_S), "bad_timestamp"),
        (~_valid_coordinate(F.col("lon"), F.col("lat")), "invalid_coordinate"),
    ]
    checked = parsed.withColumn("_structure", _first_reason(*rules)).withColumn("_content", _first_reason(*content))
    # A point log has a row per fix: the line's start is kept only where the row may be rejected (a
    # footer is a line without a delimiter).
    maybe_rejected = F.col("_structure").isNotNull() | F.col("_content").isNotNull() | F.col("_single")
    return checked.select(
        SOURCE_FILE,
        ROW_ID,
        "_structure",
        "_content",
        "_single",
        _null("string").alias("_trip"),
        F.when(maybe_rejected, F.substring(F.col(LINE), 1, 300)).alias(DETAIL),
        F.col("vehicle_id").alias("stream_id"),
        "vehicle_id",
        F.col("ts_s").alias("ts0"),
        F.col("ts_alt").alias("ts0_alt"),
        _null("array<double>").alias("lons"),
        _null("array<double>").alias("lats"),
        "lon",
        "lat",
        "trip_state",
        F.lit(1).alias("n_points"),
    )


def file_delimiter(source_file: Column, city: CityConfig) -> Column:
    """The delimiter of each row's file, as RawSource.delimiter_for names it (by extension unless set)."""
    if city.raw.delimiter is not None:
        return F.lit(city.raw.delimiter)
    return F.when(F.lower(source_file).rlike(r"\.tsv(\.gz)?$"), F.lit("\t")).otherwise(F.lit(","))


def check_rows(
    bronze: DataFrame, city: CityConfig, headers: list[str], then=None, then_ddl: str | None = None
) -> DataFrame:
    """Every (header, delimiter) group of a delivery checked, as one frame of ROW_CHECK_DDL (persist it,
    then row_verdicts). A header only passed the landing check split by its file's delimiter, so it
    contains that delimiter. `then`, `then_ddl`: Porto only, see check_porto_rows."""
    import csv

    checked = None
    seps = [city.raw.delimiter] if city.raw.delimiter is not None else [",", "\t"]
    with_sep = bronze.withColumn("_sep", file_delimiter(F.col(SOURCE_FILE), city))
    for header in headers:
        for sep in [s for s in seps if s in header] or seps[:1]:
            columns = tuple(c.strip() for c in next(csv.reader([header], delimiter=sep)))
            group = with_sep.where((F.col(HEADER) == header) & (F.col("_sep") == sep)).drop("_sep")
            if city.raw.format == "porto_csv":
                c = check_porto_rows(group, columns, sep, then, then_ddl)
            else:
                c = check_point_log_rows(group, columns, city, sep)
            checked = c if checked is None else checked.unionByName(c)
    if checked is None:
        return bronze.sparkSession.createDataFrame([], then_ddl if then is not None else ROW_CHECK_DDL)
    return checked


# What the rules that look at other rows carry back to the driver for each row they flag: enough to move
# the row from its own verdict to its final one in the counts (count_verdicts), without a second pass.
_FLAGGED = (ROW_ID, "_flag", SOURCE_FILE, "_structure", "_content", "_points")


def _footer_flags(checked: DataFrame) -> DataFrame:
    """_FLAGGED rows (flag 'footer') of each file's footer: up to FOOTER_MAX_LINES non-blank lines without a
    delimiter ('EOF', 'total 1264 rows') after the file's last line that has one."""
    nonblank = F.coalesce(F.col("_structure") != "blank_line", F.lit(True))
    last = checked.where(nonblank & ~F.col("_single")).groupBy(SOURCE_FILE).agg(F.max(ROW_ID).alias("_last"))
    row = F.struct(ROW_ID, "_structure", "_content", points_of_rows().alias("_points"))
    tail = (
        checked.where(F.col("_single"))
        .join(F.broadcast(last), SOURCE_FILE, "left")
        .where(F.col(ROW_ID) > F.coalesce(F.col("_last"), F.lit(-1)))
        .groupBy(SOURCE_FILE)
        .agg(F.collect_list(row).alias("_rows"))
        .where(F.size("_rows") <= FOOTER_MAX_LINES)
    )
    return tail.select(SOURCE_FILE, F.explode("_rows").alias("r")).select(
        F.col(f"r.{ROW_ID}").alias(ROW_ID),
        F.lit("footer").alias("_flag"),
        SOURCE_FILE,
        "r._structure",
        "r._content",
        "r._points",
    )


def _duplicate_flags(checked: DataFrame) -> DataFrame:
    """_FLAGGED rows of Porto rows that repeat an earlier line (duplicate_row: the same trip delivered
    twice) or that are one of several different valid lines of one TRIP_ID (conflicting_duplicate: every
    version is quarantined, none is guessed right). On slim columns: row id, trip, line hash, whether the
    row is valid, and what the counts need of a flagged row."""
    valid = F.col("_structure").isNull() & F.col("_content").isNull() & F.col("_trip").isNotNull()
    slim = checked.select(
        ROW_ID,
        "_trip",
        F.col("stream_id").alias("_hash"),
        valid.alias("_valid"),
        SOURCE_FILE,
        "_structure",
        "_content",
        points_of_rows().alias("_points"),
    )
    versions = F.size(F.collect_set(F.when(F.col("_valid"), F.col("_hash"))).over(Window.partitionBy("_trip")))
    first_copy = F.min(ROW_ID).over(Window.partitionBy("_trip", "_hash"))
    flag = F.when(F.col(ROW_ID) != first_copy, F.lit("duplicate_row")).when(
        F.col("_valid") & (versions > 1), F.lit("conflicting_duplicate")
    )
    return slim.withColumn("_flag", flag).where(F.col("_flag").isNotNull()).select(*_FLAGGED)


_FLAG_RANK = {"footer": 0, "duplicate_row": 1, "conflicting_duplicate": 2}
# The first rule that fires names a row's reason: (the column, the value that fires it; None: any value).
_PRECEDENCE = (
    ("_structure", "blank_line"),
    ("_flag", "footer"),
    ("_structure", None),
    ("_flag", "duplicate_row"),
    ("_content", None),
    ("_flag", "conflicting_duplicate"),
)


def _reason_column() -> Column:
    """_PRECEDENCE over the columns _structure, _flag and _content of a row."""
    expr = F.lit(None).cast("string")
    for name, value in reversed(_PRECEDENCE):
        col = F.col(name)
        expr = F.when(col.isNotNull() if value is None else col == value, col).otherwise(expr)
    return expr


def final_reason(structure: str | None, content: str | None, flag: str | None = None) -> str | None:
    """_PRECEDENCE for one row, in Python (the counts of count_verdicts)."""
    parts = {"_structure": structure, "_content": content, "_flag": flag}
    for name, value in _PRECEDENCE:
        if parts[name] is not None and (value is None or parts[name] == value):
            return parts[name]
    return None


def row_flags(checked: DataFrame, city: CityConfig) -> dict[int, Row]:
    """row_id -> the _FLAGGED row of each row a rule that looks at other rows flags (a footer, duplicates),
    with its first flag by rank. One collect: a footer is at most FOOTER_MAX_LINES lines a file and
    duplicates are few."""
    flags = _footer_flags(checked)
    if city.raw.format == "porto_csv":
        flags = flags.unionByName(_duplicate_flags(checked))
    best: dict[int, Row] = {}
    for r in flags.collect():
        if r[ROW_ID] not in best or _FLAG_RANK[r["_flag"]] < _FLAG_RANK[best[r[ROW_ID]]["_flag"]]:
            best[r[ROW_ID]] = r
    return best


def count_verdicts(checked: DataFrame, city: CityConfig) -> tuple[dict[int, Row], dict[tuple, tuple[int, int]]]:
    """(row_flags, {(file, reason): (rows, points)}) of check_rows' persisted rows: the counts of
    row_verdicts(checked, city, flags), reason None for the accepted rows, points by points_of_rows.

    The rows are counted by their own verdicts first: that aggregation is the first pass over `checked`,
    which fills its cache once (the flag queries, run side by side by adaptive execution, would otherwise
    each compute the rows again); the few flagged rows are then moved to their final reason here."""
    counts: dict[tuple, list[int]] = {}

    def add(key, n, p):
        c = counts.setdefault(key, [0, 0])
        c[0] += n
        c[1] += p

    own = checked.groupBy(SOURCE_FILE, "_structure", "_content").agg(
        F.count(F.lit(1)).alias("n"), F.sum(points_of_rows()).alias("p")
    )
    for r in own.collect():
        add((r[SOURCE_FILE], final_reason(r["_structure"], r["_content"])), int(r["n"]), int(r["p"] or 0))
    flags = row_flags(checked, city)
    for r in flags.values():
        points = int(r["_points"] or 0)
        add((r[SOURCE_FILE], final_reason(r["_structure"], r["_content"])), -1, -points)
        add((r[SOURCE_FILE], final_reason(r["_structure"], r["_content"], r["_flag"])), 1, points)
    return flags, {k: (n, p) for k, (n, p) in counts.items() if n}


def row_verdicts(checked: DataFrame, city: CityConfig, flags: dict[int, Row] | None = None) -> DataFrame:
    """check_rows' rows (persisted: they are read more than once) -> CHECKED_COLUMNS, with the rules that
    look at other rows (`flags` from row_flags or count_verdicts; found here when None). The flagged rows
    are joined back by row id. The first rule that fires names the reason (_PRECEDENCE): blank_line,
    footer, the other structure rules, duplicate_row, the content rules, conflicting_duplicate."""
    if flags is None:
        flags = row_flags(checked, city)
    spark = checked.sparkSession
    flagged = spark.createDataFrame(
        sorted((row_id, r["_flag"]) for row_id, r in flags.items()), f"{ROW_ID} long, _flag string"
    )
    v = checked.join(F.broadcast(flagged), ROW_ID, "left")
    v = v.withColumn(REASON, _reason_column()).withColumn(DETAIL, F.when(F.col(REASON).isNotNull(), F.col(DETAIL)))
    return v.select(*CHECKED_COLUMNS)


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


def points_of_rows() -> Column:
    """The points of a row: its POLYLINE's (Porto), else 1 (a point log's fix). Sum it over accepted
    rows for the points read, apart from the cleaning."""
    return F.col("n_points")


def explode_points(checked: DataFrame) -> DataFrame:
    """Accepted rows of row_verdicts -> POINT_COLUMNS, one row per GPS fix (a Porto row's POLYLINE points
    are PORTO_FIX_INTERVAL_S apart from its TIMESTAMP; a point-log row is its own single fix). The
    ingestion explodes point logs only: Porto rows are cleaned as rows (jobs/clean_points.py)."""
    lons = F.coalesce(F.col("lons"), F.array(F.col("lon")))
    lats = F.coalesce(F.col("lats"), F.array(F.col("lat")))
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
            F.posexplode(F.arrays_zip(lons.alias("x"), lats.alias("y"))).alias(POINT_IDX, "p"),
        )
        .select(
            SOURCE_FILE,
            ROW_ID,
            F.col(POINT_IDX).cast("int").alias(POINT_IDX),
            "stream_id",
            "vehicle_id",
            (F.col("ts0").cast("long") + F.col(POINT_IDX) * PORTO_FIX_INTERVAL_S).alias("ts"),
            F.col("p")["x"].alias("lon"),
            F.col("p")["y"].alias("lat"),
            "trip_state",
            F.col("ts0_alt").cast("long").alias("ts_alt"),
        )
    )


def parse_rows(bronze: DataFrame, city: CityConfig, headers: list[str]) -> tuple[DataFrame, DataFrame]:
    """(row verdicts, points) of a delivery: check_rows, row_verdicts and explode_points in one call."""
    verdicts = row_verdicts(check_rows(bronze, city, headers), city)
    return verdicts, explode_points(verdicts)


__all__ = [
    "parse_rows",
    "check_rows",
    "row_verdicts",
    "row_flags",
    "count_verdicts",
    "explode_points",
    "points_of_rows",
    "parse_polylines",
    "check_porto_rows",
    "check_point_log_rows",
    "epoch_seconds",
    "timestamp_format_of",
    "detected_timestamp_formats",
    "PORTO_COLUMNS",
    "POINT_COLUMNS",
    "CHECKED_COLUMNS",
    "ROW_CHECK_DDL",
]
