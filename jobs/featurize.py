"""silver -> features: the four point modalities of every clean trajectory, in Delta.

    transfertraj featurize --city porto --date 2013-07-01
    transfertraj featurize --city porto --all-dates

Per point: spatial (x, y metres from the first point; mx, my in the city's UTM), temporal (weekday,
hour, minute in the city's local time; minutes since start), POI and road density within phi from the
city's context tables (jobs/context_tables.py; built on first use), with explicit missing masks. One
row per trajectory with equal-length arrays (docs/features_contract.md): the training reader gets a
trajectory per row with no group-by. The silver version read and the context table versions are
recorded in the commit's userMetadata and in the features rows' `source_versions`.

The per-point values are computed by transfertraj.features (numpy, inside one mapInArrow over silver's
trajectory rows: trajectory_features flattens each Arrow batch's lists, computes every field and rebuilds
the lists with the same offsets): the same functions the served model runs on its request points, so
training and serving features cannot drift (tests/features/test_parity.py). No point becomes a Spark row:
the job it replaced exploded silver into point rows and grouped them back, and handing those rows to
Python and back cost more than the work (issue #18, bench/context.py; its features are the same, bit for
bit: tests/jobs/test_featurize_trajectory_rows.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from transfertraj.core.city_config import CityConfig, load_city
from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import read_table, replace_partition
from transfertraj.feature_store.tables import table, table_path
from transfertraj.features.taxonomy import TAXONOMY_VERSION
from transfertraj.features.temporal import TEMPORAL_FIELDS
from transfertraj.features.trajectory import RELATIVE_FIELDS, TRAJECTORY_FIELDS, trajectory_features

log = logging.getLogger(__name__)


SILVER_COLUMNS = ("trip_id", "vehicle_key", "start_ts", "n_points", "city", "date")  # carried through
POINTS_PER_CHUNK = 250_000  # per-point temporaries stay ~100 MB whatever the trips' lengths


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


def _chunks(batch: pa.RecordBatch, points: int):
    """The batch cut into runs of whole rows holding about `points` list values each."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(batch.column("ts")), 0), dtype=np.int64)
    ends = np.cumsum(lengths)
    lo = 0
    while lo < batch.num_rows:
        hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - lengths[lo] + points, side="right")))
        yield batch.slice(lo, hi - lo)
        lo = hi


def _feature_batches(batches, *, shared, crs, timezone, phi_m, categories_covered):
    from transfertraj.jobs.context_density import worker_context

    ctx, index = worker_context(shared) if shared is not None else (None, None)
    for batch in batches:
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
            yield pa.RecordBatch.from_arrays(
                [*(rows.column(c) for c in SILVER_COLUMNS), *lists.columns],
                names=[*SILVER_COLUMNS, *TRAJECTORY_FIELDS],
            )


def silver_to_features(silver: DataFrame, city: CityConfig, settings: Settings, context=None) -> DataFrame:
    """Silver rows of one city -> features rows (the context tables must exist for a city with OSM).

    One mapInArrow over the trajectory rows: per Arrow batch, transfertraj.features.trajectory_features
    flattens the lists, computes every per-point field and rebuilds the lists with the same offsets. No
    row per point, no shuffle: handing one row per point to Python and back cost more than the work
    (bench/context.py). Trips without points are dropped (they have no features).
    `context`: the city's cached context NPZ (jobs.context_tables.context_npz; looked up when None)."""
    from transfertraj.jobs.context_density import broadcast_context
    from transfertraj.jobs.context_tables import context_npz

    shared = None
    if city.has_osm:
        if context is None:
            context, _ = context_npz(settings, city)
        shared = broadcast_context(silver.sparkSession, context, phi_m=city.phi_m)
    rows = silver.where(F.size("ts") > 0).select(*SILVER_COLUMNS, "ts", "lon", "lat")
    schema = T.StructType([*(rows.schema[c] for c in SILVER_COLUMNS), *_point_lists()])
    fn = functools.partial(
        _feature_batches,
        shared=shared,
        crs=city.crs,
        timezone=city.timezone,
        phi_m=float(city.phi_m),
        categories_covered=city.osm.poi_categories_covered,
    )
    return (
        rows.mapInArrow(fn, schema)
        .withColumn("context_missing", F.lit(not city.has_osm))
        .withColumn("taxonomy_version", F.lit(TAXONOMY_VERSION))
    )


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
