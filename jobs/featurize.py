"""silver -> features: the four point modalities of every clean trajectory, in Delta.

    transfertraj featurize --city porto --date 2013-07-01
    transfertraj featurize --city porto --all-dates

Per point: spatial (x, y metres from the first point; mx, my in the city's UTM), temporal (weekday,
hour, minute in the city's local time; minutes since start), POI and road density within phi from the
city's context tables (jobs/context_tables.py; built on first use), with explicit missing masks. One
row per trajectory with equal-length arrays (docs/features_contract.md): the training reader gets a
trajectory per row with no group-by. The silver version read and the context table versions are
recorded in the commit's userMetadata and in the features rows' `source_versions`.

The per-point values are computed by transfertraj.features (numpy, inside mapInArrow workers): the same
functions the served model runs on its request points, so training and serving features cannot drift
(tests/features/test_parity.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from transfertraj.core.city_config import CityConfig, load_city
from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import read_table, replace_partition
from transfertraj.feature_store.tables import table, table_path
from transfertraj.features.taxonomy import TAXONOMY_VERSION
from transfertraj.features.temporal import TEMPORAL_FIELDS, temporal_fields
from transfertraj.features.trajectory import POINT_FIELDS, RELATIVE_FIELDS, TRAJECTORY_FIELDS, add_relative
from transfertraj.jobs.metric_coordinates import add_metric_xy

log = logging.getLogger(__name__)


def trajectory_points(silver: DataFrame) -> DataFrame:
    """One row per point: trip_id, idx, ts, lon, lat, point_id (unique within this job)."""
    return (
        silver.select("trip_id", F.posexplode(F.arrays_zip("ts", "lon", "lat")).alias("idx", "p"))
        .select("trip_id", "idx", "p.ts", "p.lon", "p.lat")
        .withColumn("point_id", F.monotonically_increasing_id())
    )


def _temporal_batches(batches, *, timezone: str):
    for batch in batches:
        fields = temporal_fields(batch.column("ts").to_numpy(zero_copy_only=False), timezone)
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, *(pa.array(f, pa.int32()) for f in fields)],
            names=[*batch.schema.names, *TEMPORAL_FIELDS],
        )


def add_temporal(points: DataFrame, *, timezone: str) -> DataFrame:
    """weekday (0 = Monday), hour and minute in the city's local time (features.temporal, per Arrow batch)."""
    schema = T.StructType([*points.schema.fields, *(T.StructField(f, T.IntegerType()) for f in TEMPORAL_FIELDS)])
    return points.mapInArrow(functools.partial(_temporal_batches, timezone=timezone), schema)


def _relative_batches(batches):
    for batch in batches:
        yield add_relative(batch)


def assemble(points: DataFrame, silver: DataFrame, *, context_missing: bool) -> DataFrame:
    """Points with modalities -> one row per trajectory, arrays ordered by idx."""
    fields = ["idx", *POINT_FIELDS]
    grouped = points.groupBy("trip_id").agg(F.array_sort(F.collect_list(F.struct(*fields))).alias("p"))
    lists = grouped.select("trip_id", *(F.col(f"p.{f}").alias(f) for f in POINT_FIELDS))
    # x, y and minutes since start need the first point: features.trajectory.add_relative, per Arrow batch
    schema = T.StructType(
        [*lists.schema.fields, *(T.StructField(f, T.ArrayType(T.FloatType()), nullable=False) for f in RELATIVE_FIELDS)]
    )
    per_trip = lists.mapInArrow(_relative_batches, schema).select("trip_id", *TRAJECTORY_FIELDS)
    return (
        silver.select("trip_id", "vehicle_key", "start_ts", "n_points", "city", "date")
        .join(per_trip, "trip_id")
        .withColumn("context_missing", F.lit(context_missing))
        .withColumn("taxonomy_version", F.lit(TAXONOMY_VERSION))
    )


def silver_to_features(silver: DataFrame, city: CityConfig, settings: Settings, context=None) -> DataFrame:
    """Silver rows of one city -> features rows (the context tables must exist for a city with OSM).

    `context`: the city's cached context NPZ (jobs.context_tables.context_npz; looked up when None)."""
    from transfertraj.jobs.context_tables import with_context

    points = (
        trajectory_points(silver).transform(add_metric_xy, city.crs).transform(add_temporal, timezone=city.timezone)
    )
    points = with_context(points, city, settings, context)
    return assemble(points, silver, context_missing=not city.has_osm)


def featurize_date(spark: SparkSession, city: CityConfig, date: str, settings: Settings) -> dict:
    """Build the features partition of one city and date from silver. Returns what it read and wrote."""
    from transfertraj.jobs.context_tables import ContextNotBuiltError, build_context_tables, context_npz

    t0 = time.time()
    part = {"city": city.name, "date": date}
    silver, silver_version = read_table(spark, table_path(settings, "silver"), where=part)
    context_versions: dict = {}
    context = None
    if city.has_osm:
        try:
            context, context_versions = context_npz(settings, city)
        except ContextNotBuiltError:
            log.info("%s: context tables not built yet, building them now (once per city)", city.name)
            build_context_tables(spark, city, settings)
            context, context_versions = context_npz(settings, city)
    features = silver_to_features(silver, city, settings, context)
    lineage = {"silver_version": silver_version, **{f"{k}_version": v for k, v in context_versions.items()}}
    features = features.withColumn("source_versions", F.lit(json.dumps(lineage, sort_keys=True)))
    version = replace_partition(
        features,
        table_path(settings, "features"),
        part,
        partition_by=table("features").partition_by,
        user_metadata=json.dumps({"taxonomy_version": TAXONOMY_VERSION, **lineage}),
    )
    n = read_table(spark, table_path(settings, "features"), version=version, where=part)[0].count()
    out = {
        "city": city.name,
        "date": date,
        "trajectories": n,
        "features_version": version,
        **lineage,
        "seconds": round(time.time() - t0, 1),
    }
    log.info(
        "features %s %s: %d trajectories, version %d (from silver v%d)", city.name, date, n, version, silver_version
    )
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--city", required=True)
    parser.add_argument("--date", help="delivery date YYYY-MM-DD")
    parser.add_argument("--all-dates", action="store_true", help="every date the city has in silver")


def run(args, settings: Settings) -> int:
    from transfertraj.jobs.spark_session import get_spark

    city = load_city(args.city, settings)
    spark = get_spark("featurize", settings)
    if args.date:
        dates = [args.date]
    elif args.all_dates:
        silver, _ = read_table(spark, table_path(settings, "silver"), where={"city": city.name})
        dates = sorted(r.date for r in silver.select("date").distinct().collect())
    else:
        raise SystemExit("give --date or --all-dates")
    for day in dates:
        print(json.dumps(featurize_date(spark, city, day, settings)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from transfertraj.core.log_config import configure_logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    configure_logging()
    return run(parser.parse_args(argv), Settings.load())


if __name__ == "__main__":
    raise SystemExit(main())
