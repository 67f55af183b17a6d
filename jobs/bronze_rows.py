"""Landed files -> bronze rows: one row per input line as delivered, with its file and header.

    bronze = read_landed_rows(spark, files, city="porto", date="2013-07-01", landing_root=...)

Each file's own header line is not a row; every other line (blank, broken or repeated header
included) is, so that later steps can account for all of them.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transfertraj.jobs.landed_files import LandedFile
from transfertraj.jobs.schemas import BRONZE_SCHEMA, CITY, DATE, HEADER, LINE, ROW_ID, SOURCE_FILE


def read_landed_rows(spark: SparkSession, files: list[LandedFile], *, city: str, date: str, landing_root) -> DataFrame:
    with_header = [f for f in files if f.header is not None]
    if not with_header:
        return spark.createDataFrame([], BRONZE_SCHEMA)
    names = spark.createDataFrame(
        [(f.path.as_uri(), str(f.path.relative_to(landing_root)), f.header) for f in with_header],
        "uri string, rel string, header string",
    )
    lines = (
        spark.read.text([str(f.path) for f in with_header])
        .select(
            F.input_file_name().alias("uri"),
            F.monotonically_increasing_id().alias(ROW_ID),
            F.regexp_replace(F.col("value"), "\r$", "").alias(LINE),
        )
        .join(F.broadcast(names), "uri")
    )
    # Each file's first line is its header: the smallest row id among its header-equal lines.
    first_headers = lines.where(F.col(LINE) == F.col(HEADER)).groupBy("uri").agg(F.min(ROW_ID).alias(ROW_ID))
    rows = lines.join(F.broadcast(first_headers), ["uri", ROW_ID], "left_anti")
    return rows.select(
        F.col("rel").alias(SOURCE_FILE),
        F.col(ROW_ID),
        F.col(LINE),
        F.col(HEADER),
        F.lit(city).alias(CITY),
        F.lit(date).alias(DATE),
    )
