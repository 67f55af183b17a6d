"""Landed files -> bronze rows: one row per input line as delivered, with its file and header.

    with spark_readable(delivery.files, staging) as paths:     # odd names read through a hard link
        bronze = read_landed_rows(spark, delivery.files, city="porto", date="2013-07-01", paths=paths)
    rows = join_quoted_lines(bronze, delivery.files)   # CSV records: a quoted field may span lines

Each file is read on its own with its name as a literal column (never matched back through Spark's
file URI, which spells spaces, quotes and accents differently from Python), its path escaped so that
Hadoop takes `[`, `{`, `*` or `?` in a name literally. Each file's own header line is not a row; every
other line (blank, broken or repeated header included) is, so that later steps can account for all. A
headerless file has no header line (its header is `_c0,_c1,...`, jobs/landed_files.py); a Parquet
file's rows become delimited text lines, so that one set of row checks reads every format.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from transfertraj.jobs.landed_files import LandedFile
from transfertraj.jobs.schemas import BRONZE_SCHEMA, CITY, DATE, HEADER, LINE, ROW_ID, SOURCE_FILE

log = logging.getLogger(__name__)
MAX_LINES_PER_RECORD = 50  # a quoted field spanning more lines than this is a broken quote, not a record
_GLOB = re.compile(r"([\\*?\[\]{}])")


def spark_path(path) -> str:
    """A local path as Spark reads it literally: Hadoop glob characters escaped."""
    return _GLOB.sub(r"\\\1", str(path))


@contextmanager
def spark_readable(files: list[LandedFile], staging: Path):
    """The path of each file as Spark can open it. A name Hadoop cannot take (not UTF-8, or with ':') is
    read through a hard link with a plain name under `staging` (the same inode: no link is followed),
    removed on exit. A file whose link cannot be made (read-only landing, another file system) has no
    entry in the paths: the caller quarantines it."""
    paths = {f.rel: f.path for f in files}
    made: list[Path] = []
    try:
        for i, f in enumerate(files):
            if not f.spark_safe_name:
                suffix = ".parquet" if f.parquet else ".csv.gz" if f.path.name.endswith(".gz") else ".csv"
                link = staging / f"{i:06d}{suffix}"
                try:
                    staging.mkdir(parents=True, exist_ok=True)
                    os.link(f.path, link, follow_symlinks=False)
                except OSError as err:
                    log.warning("%s: no hard link for Spark in %s (%s)", f.rel, staging, err)
                    del paths[f.rel]
                    continue
                made.append(link)
                paths[f.rel] = link
        yield paths
    finally:
        for link in made:
            link.unlink(missing_ok=True)
        if made:
            shutil.rmtree(staging, ignore_errors=True)


def read_landed_rows(
    spark: SparkSession, files: list[LandedFile], *, city: str, date: str, paths: dict[str, Path] | None = None
) -> DataFrame:
    """Bronze rows of the files; `paths` (from spark_readable) maps a file to the path Spark opens."""
    with_header = [f for f in files if f.header is not None]
    if not with_header:
        return spark.createDataFrame([], BRONZE_SCHEMA)
    lines = None
    for f in with_header:
        path = spark_path((paths or {}).get(f.rel, f.path))
        text = _parquet_lines(spark, path, f.sep) if f.parquet else spark.read.text(path)
        # A file's header is its first line: the first record of the split that starts the file (a file
        # scanned on its own never shares a partition between splits). Checked by the caller, which counts
        # each file's lines in bronze against the file (jobs/ingest.py).
        one = text.select(
            F.lit(f.rel or str(f.path.name)).alias(SOURCE_FILE),
            F.lit(f.header).alias(HEADER),
            _strip_bom_and_cr(F.make_valid_utf8(F.col("value"))).alias(LINE),
            (F.lit(f.header_line) & (F.input_file_block_start() == 0)).alias("_first_split"),
        )
        lines = one if lines is None else lines.unionByName(one)
    lines = lines.withColumn(ROW_ID, F.monotonically_increasing_id())
    first_record = (F.col(ROW_ID).bitwiseAND(F.lit(_RECORD_MASK)) == 0) & F.col("_first_split")
    rows = lines.where(~(first_record & (F.col(LINE) == F.col(HEADER))))
    return rows.select(
        F.col(SOURCE_FILE),
        F.col(ROW_ID),
        F.col(LINE),
        F.col(HEADER),
        F.lit(city).alias(CITY),
        F.lit(date).alias(DATE),
    )


_RECORD_MASK = (1 << 33) - 1  # monotonically_increasing_id: partition index << 33 | record number in it


def _strip_bom_and_cr(value):
    """A line (made valid UTF-8 first: a byte that is not becomes U+FFFD, which the row check names
    bad_encoding) without a leading byte-order mark or a trailing carriage return (a prefix and a suffix
    test, not a regex run over every character of every line)."""
    value = F.when(value.startswith("\ufeff"), value.substr(F.lit(2), F.length(value))).otherwise(value)
    return F.when(value.endswith("\r"), value.substr(F.lit(1), F.length(value) - 1)).otherwise(value)


def _parquet_lines(spark: SparkSession, path: str, sep: str) -> DataFrame:
    """A Parquet file's rows as delimited text (column `value`), so that every format is parsed by the
    same row checks: values in column order, timestamps as ISO-8601 instants with their offset, nested
    values as JSON, nulls as empty fields."""
    from pyspark.sql import types as T

    df = spark.read.parquet(path)

    def text(field):
        c = F.col(f"`{field.name}`")
        if isinstance(field.dataType, T.TimestampType):
            return F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX")  # the session zone is UTC: ends in Z
        if isinstance(field.dataType, (T.ArrayType, T.MapType, T.StructType)):
            return F.to_json(c)
        return c.cast("string")

    fields = F.struct(*(text(f).alias(f"c{i}") for i, f in enumerate(df.schema.fields)))
    return df.select(F.to_csv(fields, {"sep": sep}).alias("value"))


def _quotes(line):
    return F.length(line) - F.length(F.regexp_replace(line, '"', ""))


def _fields(line, sep):
    """Fields of a CSV record: delimiters (`sep`, a one-character Column) outside quoted sections, plus one."""
    unquoted = F.regexp_replace(line, '"[^"]*"', "")
    return F.length(unquoted) - F.length(F.replace(unquoted, sep, F.lit(""))) + 1


def _suspects(files: list[LandedFile], delimiter: str | None) -> dict[str, tuple[int, str]]:
    """{file: (header fields, delimiter)} of the files whose scan found a line with an odd number of quotes."""
    return {
        f.rel: (
            len(f.columns),
            delimiter or ("\t" if f.path.name.lower().removesuffix(".gz").endswith(".tsv") else ","),
        )
        for f in files
        if f.odd_quote_lines and f.header is not None
    }


def record_spans(
    records: DataFrame, files: list[LandedFile], in_bronze: dict[str, int] | None = None
) -> tuple[int, int]:
    """(records, physical lines they span) of join_quoted_lines(bronze, files). A text file without a
    line of odd quotes was not joined, so its records are its bronze lines: taken from `in_bronze` (bronze
    rows per file, already counted by the caller) or counted without reading their text; only the other
    files' records are split at their line breaks."""
    # A Parquet row's text (to_csv) may hold a line break inside a quoted value: counted from its text too.
    suspects = list(_suspects(files, None)) + [f.rel for f in files if f.parquet]
    if in_bronze is not None:
        plain = sum(n for name, n in in_bronze.items() if name not in suspects)
    else:
        plain = records.where(~F.col(SOURCE_FILE).isin(suspects)).count() if suspects else records.count()
    if not suspects:
        return plain, plain
    joined = (
        records.where(F.col(SOURCE_FILE).isin(suspects))
        .agg(F.count(F.lit(1)).alias("n"), F.sum(F.size(F.split(F.col(LINE), "\n", -1))).alias("lines"))
        .first()
    )
    return plain + int(joined["n"]), plain + int(joined["lines"] or 0)


def join_quoted_lines(bronze: DataFrame, files: list[LandedFile], delimiter: str | None = None) -> DataFrame:
    """Bronze lines -> CSV records: lines joined (with \\n) where a quoted field spans them.

    Only files whose scan found a line with an odd number of quotes are looked at. A run of lines is
    joined when the quote it opens closes within MAX_LINES_PER_RECORD lines and the joined record has as
    many fields as the file's header; otherwise (a truncated line, a stray quote) each line stays its own
    row. A record keeps the row id of its first line; the lines it spans are 1 + its newlines. Fields are
    split by `delimiter`, or when None by each file's extension (tab for .tsv, else a comma)."""
    suspects = _suspects(files, delimiter)
    if not suspects:
        return bronze
    cols = bronze.columns
    plain = bronze.where(~F.col(SOURCE_FILE).isin(list(suspects)))
    n_fields = F.col("_n_fields")
    widths = bronze.sparkSession.createDataFrame(
        [(rel, n, sep) for rel, (n, sep) in suspects.items()], f"{SOURCE_FILE} string, _n_fields int, _sep string"
    )
    odd = bronze.join(F.broadcast(widths), SOURCE_FILE).withColumn("_q", _quotes(F.col(LINE)) % 2)
    w = Window.partitionBy(SOURCE_FILE).orderBy(ROW_ID)
    open_before = F.coalesce(F.sum("_q").over(w.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)) % 2
    odd = odd.withColumn("_start", (open_before == 0).cast("int"))
    odd = odd.withColumn("_rec", F.sum("_start").over(w.rowsBetween(Window.unboundedPreceding, 0)))
    keep = [c for c in cols if c not in (ROW_ID, LINE)]
    grouped = odd.groupBy(SOURCE_FILE, "_rec").agg(
        F.sort_array(F.collect_list(F.struct(F.col(ROW_ID).alias("r"), F.col(LINE).alias("l")))).alias("_parts"),
        *(F.first(c).alias(c) for c in keep if c != SOURCE_FILE),
        F.first("_n_fields").alias("_n_fields"),
        F.first("_sep").alias("_sep"),
    )
    merged = F.array_join(F.transform("_parts", lambda p: p["l"]), "\n")
    ok = (F.size("_parts") == 1) | (
        (F.size("_parts") <= MAX_LINES_PER_RECORD)
        & (_quotes(merged) % 2 == 0)
        & (_fields(merged, F.col("_sep")) == n_fields)
    )
    joined = grouped.select(
        *keep,
        F.explode(
            F.when(ok, F.array(F.struct(F.col("_parts")[0]["r"].alias("r"), merged.alias("l")))).otherwise(
                F.col("_parts")
            )
        ).alias("_p"),
    ).select(*keep, F.col("_p.r").alias(ROW_ID), F.col("_p.l").alias(LINE))
    return plain.unionByName(joined.select(*cols))
