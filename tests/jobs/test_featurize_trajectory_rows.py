"""featurize on trajectory rows gives exactly the features of the per-point-row path it replaced.

The reference below is the job as it was before issue #18 (commit 7cd80e2): silver exploded into one
Spark row per point, metric x/y, temporal fields and context per point row, then grouped back per trip
(collect_list + array_sort) and the relative fields added per trip. It stays here, and only here, so the
job as it runs now (featurize_date: workers read silver's files, compute every feature on trajectory rows
and write the features files, one delta-rs commit) is held to it: every column, every array, every value
bit for bit (NaNs in place), and the same schema as Delta stores it. Real data: the bundled Porto sample ingested by
the real job, with the bundled Porto OSM extract cut to the test box (as tests/features/test_parity.py),
and the same silver as a city without OSM.
"""

from __future__ import annotations

import functools
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark import cloudpickle
from pyspark.sql import functions as F
from pyspark.sql import types as T

from tests.features.test_parity import porto_city
from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.reader import open_table
from transfertraj.feature_store.tables import table_path
from transfertraj.features.taxonomy import TAXONOMY_VERSION
from transfertraj.features.trajectory import POINT_FIELDS, RELATIVE_FIELDS, TRAJECTORY_FIELDS, add_relative
from transfertraj.jobs.context_tables import build_context_tables, with_context
from transfertraj.jobs.featurize import featurize_date
from transfertraj.jobs.metric_coordinates import add_metric_xy
from transfertraj.jobs.schemas import delta_arrow_schema

# ---------------------------------------------------------------- the per-point-row path (before #18)

# the Python workers cannot import this test module: its functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _temporal_batches(batches, *, timezone):
    for batch in batches:
        local = pa.array(batch.column("ts").to_numpy(zero_copy_only=False), pa.timestamp("s", tz=timezone))
        fields = (pc.day_of_week(local, count_from_zero=True, week_start=1), pc.hour(local), pc.minute(local))
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, *(f.cast(pa.int32()) for f in fields)],
            names=[*batch.schema.names, "weekday", "hour", "minute"],
        )


def _relative_batches(batches):
    for batch in batches:
        yield add_relative(batch)


def per_point_row_features(silver, city, settings):
    points = (
        silver.select("trip_id", F.posexplode(F.arrays_zip("ts", "lon", "lat")).alias("idx", "p"))
        .select("trip_id", "idx", "p.ts", "p.lon", "p.lat")
        .withColumn("point_id", F.monotonically_increasing_id())
        .transform(add_metric_xy, city.crs)
    )
    schema = T.StructType(
        [*points.schema.fields, *(T.StructField(f, T.IntegerType()) for f in ("weekday", "hour", "minute"))]
    )
    points = points.mapInArrow(functools.partial(_temporal_batches, timezone=city.timezone), schema)
    points = with_context(points, city, settings)
    grouped = points.groupBy("trip_id").agg(F.array_sort(F.collect_list(F.struct("idx", *POINT_FIELDS))).alias("p"))
    lists = grouped.select("trip_id", *(F.col(f"p.{f}").alias(f) for f in POINT_FIELDS))
    schema = T.StructType(
        [*lists.schema.fields, *(T.StructField(f, T.ArrayType(T.FloatType()), nullable=False) for f in RELATIVE_FIELDS)]
    )
    per_trip = lists.mapInArrow(_relative_batches, schema).select("trip_id", *TRAJECTORY_FIELDS)
    return (
        silver.select("trip_id", "vehicle_key", "start_ts", "n_points", "city", "date")
        .join(per_trip, "trip_id")
        .withColumn("context_missing", F.lit(not city.has_osm))
        .withColumn("taxonomy_version", F.lit(TAXONOMY_VERSION))
    )


# ------------------------------------------------------------------------------------------ the test


@pytest.fixture(scope="module")
def porto_silver(spark_session, tmp_path_factory):
    from transfertraj.jobs.ingest import ingest_date
    from transfertraj.jobs.land_sample import land_sample

    spark = spark_session()
    settings = Settings.load(home=tmp_path_factory.mktemp("featurize_rows"))
    city, _ = porto_city(settings)
    (date,) = land_sample(city, settings)
    ingest_date(spark, city, date, settings)
    build_context_tables(spark, city, settings)
    silver, _ = read_table(spark, table_path(settings, "silver"), where={"city": city.name, "date": date})
    return settings, city, silver


def _sorted_table(df) -> pa.Table:
    table = df.toArrow()
    return table.take(pc.sort_indices(table, [("trip_id", "ascending")]))


def _values(col: pa.ChunkedArray) -> np.ndarray:
    """Every leaf value of a (nested) list column, flattened, nulls as NaN/None."""
    arr = col.combine_chunks()
    while pa.types.is_list(arr.type):
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False)


@pytest.mark.parametrize("osm", [True, False], ids=["porto", "porto-without-osm"])
def test_the_job_gives_the_per_point_rows_features(porto_silver, osm):
    settings, osm_city, silver = porto_silver
    city = osm_city if osm else osm_city.model_copy(update={"osm": osm_city.osm.model_copy(update={"kind": "none"})})
    date = silver.select("date").first().date
    out = featurize_date(silver.sparkSession, city, date, settings)
    path = table_path(settings, "features")
    new, _ = read_table(silver.sparkSession, path, version=out["features_version"], where={"city": city.name})
    old = per_point_row_features(silver, city, settings)
    # One schema for every city, the old one of a city with OSM (the old path declared the POI/road values of a
    # city without OSM non-null, array_repeat of a literal NaN, and every other city's nullable), as Delta
    # stores a table Spark writes; the lineage column added to it.
    stored = pa.schema(open_table(path).schema().to_arrow())
    want = delta_arrow_schema(per_point_row_features(silver.limit(0), osm_city, settings).schema)
    assert {f.name: f.type for f in stored} == {f.name: f.type for f in want} | {"source_versions": pa.string()}
    lineage = {r.source_versions for r in new.select("source_versions").distinct().collect()}
    assert [json.loads(v)["silver_version"] for v in lineage] == [out["silver_version"]]
    got, want = _sorted_table(new.drop("source_versions")), _sorted_table(old)
    assert got.num_rows == want.num_rows == out["trajectories"] == silver.count() > 1000
    for name in want.column_names:
        g, w = got.column(name), want.column(name)
        if pa.types.is_list(w.type):  # the same lists: equal offsets at every level, equal values
            a, b = g.combine_chunks(), w.combine_chunks()
            while pa.types.is_list(b.type):
                assert pc.list_value_length(a).equals(pc.list_value_length(b)), name
                a, b = a.flatten(), b.flatten()
            np.testing.assert_array_equal(_values(g), _values(w), err_msg=name)
        else:
            assert g.equals(w), name
    poi = _values(got.column("poi"))
    if osm:  # real counts and missing values both present: the comparison has teeth
        assert np.nanmax(poi) > 1.0 and np.isnan(poi).any() and np.isfinite(poi).any()
    else:
        assert np.isnan(poi).all() and pc.all(got.column("context_missing")).as_py()


def test_row_groups_gather_whole_batches_to_about_the_points_asked():
    """Computed on small runs of trips, written in row groups of about ROW_GROUP_POINTS points: no row
    lost, none reordered, none split across groups."""
    from transfertraj.jobs.featurize import _row_groups

    batches = [
        pa.RecordBatch.from_pydict({"trip_id": [f"t{i}"], "ts": [list(range(n))]})
        for i, n in enumerate([4, 3, 5, 1, 2])
    ]
    groups = list(_row_groups(iter(batches), points=6))
    assert [g.column("trip_id").to_pylist() for g in groups] == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert list(_row_groups(iter([]), points=6)) == []
