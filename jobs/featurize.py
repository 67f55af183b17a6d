"""silver -> features: the four point modalities of every clean trajectory, in Delta.

    transfertraj featurize --city porto --date 2013-07-01
    transfertraj featurize --city porto --all-dates

Per point: spatial (x, y metres from the first point; mx, my in the city's UTM), temporal (weekday,
hour, minute in the city's local time; minutes since start), POI and road density within phi from the
city's context tables (jobs/context_tables.py; built on first use), with explicit missing masks. One
row per trajectory with equal-length arrays (docs/features_contract.md): the training reader gets a
trajectory per row with no group-by. The silver version read and the context table versions are
recorded in the commit's userMetadata and in the features rows' `source_versions`.

The per-point values are computed by transfertraj.features (numpy, in Spark tasks that read silver's
files of the pinned version with pyarrow and write the features files themselves: silver_to_features;
the driver commits the files in one delta-rs transaction, feature_store/arrow_parts.py). The same
functions the served model runs on its request points, so training and serving features cannot drift
(tests/features/test_parity.py). No point and no trip becomes a Spark row: the job exploded silver into
point rows and grouped them back until issue #18, then ran one mapInArrow over silver's trajectory rows
through Spark's Parquet reader and writer, and in both the JVM's conversions cost more than the work
(bench/context.py). The features are the same, bit for bit: tests/jobs/test_featurize_trajectory_rows.py.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from transfertraj.core.settings import Settings
from transfertraj.feature_store.arrow_parts import (
    PartSink,
    commit_parts,
    deal,
    discard_run,
    read_parts,
    source_parts,
    table_schema,
)
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.tables import table, table_path
from transfertraj.features.taxonomy import TAXONOMY_VERSION
from transfertraj.features.temporal import TEMPORAL_FIELDS
from transfertraj.features.trajectory import RELATIVE_FIELDS, TRAJECTORY_FIELDS, trajectory_features
from transfertraj.jobs.schemas import SILVER_SCHEMA, delta_arrow_schema

if TYPE_CHECKING:  # pydantic's import (0.1 s) is left to the driver: the Python workers import this module
    from transfertraj.core.city_config import CityConfig

log = logging.getLogger(__name__)


CARRIED = ("trip_id", "vehicle_key", "start_ts", "n_points")  # silver's columns carried into features
SILVER_COLUMNS = (*CARRIED, "city", "date")  # ... with the partition's (in its folder names, not its files)
# Features are computed on runs of whole trips of about POINTS_PER_CHUNK points: the per-point temporaries
# (~1.5 kB a point) stay in the allocator's heap and the CPU's caches; 50 k was 10 % faster than 250 k on
# 2 cores (issue #18). They are written in row groups of about ROW_GROUP_POINTS points, as before.
POINTS_PER_CHUNK = 50_000
ROW_GROUP_POINTS = 250_000
# the features files' dictionary-encoded columns (a few values each); the per-point lists are written plain:
# trying a dictionary on them cost 40 % of the write for 4 % of the size (issue #18's profile)
DICTIONARY = ("vehicle_key", "taxonomy_version", "source_versions")


def _point_lists() -> list[T.StructField]:
    """The features rows' per-point list columns, in TRAJECTORY_FIELDS order (the types, nullability
    included, of the per-point-row job this one replaced, so the features table's schema is unchanged)."""
    from transfertraj.jobs.context_density import CONTEXT_FIELDS

    element = {"ts": T.LongType(), "lon": T.DoubleType(), "lat": T.DoubleType(), "mx": T.DoubleType()}
    element |= {"my": T.DoubleType(), **dict.fromkeys(TEMPORAL_FIELDS, T.IntegerType())}
    lists = {name: T.ArrayType(t) for name, t in element.items()}
    lists |= {name: T.ArrayType(T.FloatType()) for name in RELATIVE_FIELDS}
    lists |= {f.name: T.ArrayType(f.dataType, containsNull=False) for f in CONTEXT_FIELDS}
    return [T.StructField(name, lists[name], nullable=False) for name in TRAJECTORY_FIELDS]


def features_schema() -> T.StructType:
    """The features table's columns, as the Spark job that wrote it declared them (a new table's schema;
    an existing table keeps its own: arrow_parts.table_schema)."""
    silver = {f.name: f for f in SILVER_SCHEMA}
    flags = [
        T.StructField("context_missing", T.BooleanType(), False),
        T.StructField("taxonomy_version", T.StringType(), False),
        T.StructField("source_versions", T.StringType(), False),
    ]
    return T.StructType([*(silver[c] for c in SILVER_COLUMNS), *_point_lists(), *flags])


def _chunks(batch: pa.RecordBatch, points: int):
    """The batch cut into runs of whole rows holding about `points` list values each."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(batch.column("ts")), 0), dtype=np.int64)
    ends = np.cumsum(lengths)
    lo = 0
    while lo < batch.num_rows:
        hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - lengths[lo] + points, side="right")))
        yield batch.slice(lo, hi - lo)
        lo = hi


def feature_batches(batches, *, shared, crs, timezone, phi_m, categories_covered, source_versions):
    """Arrow worker: silver batches (CARRIED, ts, lon, lat) -> features rows (the table's columns but the
    partition's), trips without points dropped (they have no features). `shared`: the broadcast context
    (jobs.context_density.broadcast_context), None for a city without OSM."""
    from transfertraj.jobs.context_density import worker_context

    ctx, index = worker_context(shared) if shared is not None else (None, None)
    for batch in batches:
        batch = batch.filter(pc.greater(pc.fill_null(pc.list_value_length(batch.column("ts")), 0), 0))
        for rows in _chunks(batch, POINTS_PER_CHUNK):
            lists = trajectory_features(
                rows,
                crs=crs,
                timezone=timezone,
                context=ctx,
                tree=index,
                phi_m=phi_m,
                categories_covered=categories_covered,
            )
            n = rows.num_rows
            flags = {
                "context_missing": pa.repeat(pa.scalar(shared is None), n),
                "taxonomy_version": pa.repeat(pa.scalar(TAXONOMY_VERSION), n),
                "source_versions": pa.repeat(pa.scalar(source_versions), n),
            }
            yield pa.RecordBatch.from_arrays(
                [*(rows.column(c) for c in CARRIED), *lists.columns, *flags.values()],
                names=[*CARRIED, *TRAJECTORY_FIELDS, *flags],
            )


def _feature_task(tasks, *, sink: PartSink, **features) -> list[dict]:
    """One Spark task: its silver row groups read (arrow_parts.read_parts), featurized and written to its
    own features file; returns the file's PART_DDL row (none when it wrote no row)."""
    units = [unit for task in tasks for unit in task]
    with sink.writer() as w:
        for group in _row_groups(feature_batches(read_parts(units, (*CARRIED, "ts", "lon", "lat")), **features)):
            w.write(group)
    return w.summary().to_pylist()


def _row_groups(batches, points: int = ROW_GROUP_POINTS):
    """Consecutive batches gathered into tables of about `points` list values each (no copy: a table of
    chunks, written as one row group)."""
    group, n = [], 0
    for batch in batches:
        group.append(batch)
        n += len(pc.list_flatten(batch.column("ts")))
        if n >= points:
            yield pa.Table.from_batches(group)
            group, n = [], 0
    if group:
        yield pa.Table.from_batches(group)


def silver_to_features(
    spark: SparkSession, units: list[tuple], city: CityConfig, sink: PartSink, *, source_versions: str, context=None
) -> list[dict]:
    """Silver row groups of one city and date (arrow_parts.source_parts) -> features files in `sink`'s
    partition, written by the workers; returns their PART_DDL rows for arrow_parts.commit_parts.

    The row groups are dealt to the session's parallelism, one Spark task each share (an RDD of one
    element per task: exactly one task per share, no shuffle); every task reads its row groups with
    pyarrow, computes every feature with numpy (transfertraj.features.trajectory_features: lists
    flattened, per-point fields, lists rebuilt with the same offsets) and writes its Parquet file. No
    point and no trip becomes a Spark row: Spark's Parquet reader turning silver's lists into rows, rows
    -> Arrow for the worker and the ~20 list columns back into rows and through Spark's writer cost more
    than the work (issue #18, bench/context.py).
    `context`: the city's cached context NPZ (jobs.context_tables.context_npz), needed when it has OSM."""
    from transfertraj.jobs.context_density import broadcast_context

    tasks = deal(units, spark.sparkContext.defaultParallelism)
    if not tasks:
        return []
    shared = broadcast_context(spark, context, phi_m=city.phi_m) if city.has_osm else None
    fn = functools.partial(
        _feature_task,
        sink=sink,
        shared=shared,
        crs=city.crs,
        timezone=city.timezone,
        phi_m=float(city.phi_m),
        categories_covered=city.osm.poi_categories_covered,
        source_versions=source_versions,
    )
    return spark.sparkContext.parallelize(tasks, len(tasks)).mapPartitions(fn).collect()


def featurize_date(spark: SparkSession, city: CityConfig, date: str, settings: Settings) -> dict:
    """Build the features partition of one city and date from silver. Returns what it read and wrote.

    Silver's version is pinned once (the files read are that version's), the features files are written
    by the workers (silver_to_features) and replace the partition in one Delta commit (delta-rs:
    feature_store/arrow_parts.commit_parts), whose userMetadata holds the lineage."""
    from transfertraj.jobs.context_tables import ContextNotBuiltError, build_context_tables, context_npz

    t0 = time.time()
    part = {"city": city.name, "date": date}
    silver_version, units = source_parts(table_path(settings, "silver"), part)
    context_versions: dict = {}
    context = None
    if city.has_osm:
        try:
            context, context_versions = context_npz(settings, city)
        except ContextNotBuiltError:
            log.info("%s: context tables not built yet, building them now (once per city)", city.name)
            build_context_tables(spark, city, settings)
            context, context_versions = context_npz(settings, city)
    lineage = {"silver_version": silver_version, **{f"{k}_version": v for k, v in context_versions.items()}}
    path, by = table_path(settings, "features"), table("features").partition_by
    schema = table_schema(path, by, delta_arrow_schema(features_schema(), without=by))
    sink = PartSink(path, part, schema, dictionary=DICTIONARY)
    source = json.dumps(lineage, sort_keys=True)
    try:
        parts = silver_to_features(spark, units, city, sink, source_versions=source, context=context)
        version = commit_parts(
            sink, parts, partition_by=by, user_metadata=json.dumps({"taxonomy_version": TAXONOMY_VERSION, **lineage})
        )
    except BaseException:
        discard_run(sink)  # the files its workers wrote and no version holds (none once committed)
        raise
    n = sum(int(p["part_rows"]) for p in parts)
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
    from transfertraj.core.city_config import load_city
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
