"""Write a city's OSM context as Delta tables (context_roads, context_pois, context_grid), and read it back.

    python -m jobs.context_tables --city porto        # ~1 min for Porto (OSM parse + 5 M-node lattice)

    from transfertraj.jobs.context_tables import context_npz, with_context
    npz, versions = context_npz(settings, city)        # what jobs/featurize.py broadcasts
    points = with_context(points_df, city, settings)   # the same context on a DataFrame of point rows

Each table is partitioned by city and replaced whole for the city on every run (`replace_partition`),
so a rerun never appends a second copy. Every row records the OSM snapshot date and the POI taxonomy
version, and each commit's userMetadata holds the same provenance as JSON (source, licence, phi, lattice,
row counts). The grid depends on phi (city config `phi_m`): `with_context` refuses a grid built with
another phi, and a city without rows in the tables fails with a message saying to run this job.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import shapely
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from transfertraj.core.city_config import CityConfig
from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import read_table, replace_partition, table_exists
from transfertraj.feature_store.tables import table, table_path
from transfertraj.features.context import lattice_to_arrow
from transfertraj.jobs.context_density import (
    LATTICE_M,
    ROAD_TOLERANCE_M,
    add_loaded_context,
    add_missing_context,
    build_road_lattice,
)
from transfertraj.jobs.context_taxonomy import POI_CATEGORIES, ROAD_CLASSES, TAXONOMY_VERSION
from transfertraj.jobs.osm_context import OsmContext, read_osm_context

log = logging.getLogger(__name__)

_PROVENANCE = [
    T.StructField("snapshot_date", T.DateType(), True),
    T.StructField("taxonomy_version", T.StringType(), False),
]

ROADS_SCHEMA = T.StructType(
    [
        T.StructField("city", T.StringType(), False),
        T.StructField("road_id", T.LongType(), False),
        T.StructField("osm_id", T.LongType(), True),
        T.StructField("highway", T.StringType(), False),
        T.StructField("road_class", T.StringType(), False),
        T.StructField("length_m", T.DoubleType(), False),
        T.StructField("geometry_wkb", T.BinaryType(), False),  # LineString in the city's metric CRS
        *_PROVENANCE,
    ]
)

POIS_SCHEMA = T.StructType(
    [
        T.StructField("city", T.StringType(), False),
        T.StructField("poi_id", T.LongType(), False),
        T.StructField("osm_type", T.StringType(), True),
        T.StructField("osm_id", T.LongType(), True),
        T.StructField("category", T.StringType(), False),
        T.StructField("tag_key", T.StringType(), True),
        T.StructField("tag_value", T.StringType(), True),
        T.StructField("name", T.StringType(), True),
        T.StructField("mx", T.DoubleType(), False),  # metres, city CRS (polygons: centroid)
        T.StructField("my", T.DoubleType(), False),
        T.StructField("lon", T.DoubleType(), False),
        T.StructField("lat", T.DoubleType(), False),
        *_PROVENANCE,
    ]
)

GRID_SCHEMA = T.StructType(
    [
        T.StructField("city", T.StringType(), False),
        T.StructField("ix", T.IntegerType(), False),
        T.StructField("iy", T.IntegerType(), False),
        T.StructField("mx", T.DoubleType(), False),
        T.StructField("my", T.DoubleType(), False),
        *[T.StructField(f"road_m_{c}", T.FloatType(), False) for c in ROAD_CLASSES],  # metres within phi
        T.StructField("nearest_m", T.FloatType(), False),  # capped at DIST_CAP_M
        T.StructField("nearest_class", T.ByteType(), False),  # index into ROAD_CLASSES, -1 = none in cap
        T.StructField("road_covered", T.BooleanType(), False),
        T.StructField("poi_covered", T.BooleanType(), False),
        T.StructField("lattice_m", T.DoubleType(), False),
        T.StructField("phi_m", T.DoubleType(), False),
        *_PROVENANCE,
    ]
)


class ContextNotBuiltError(RuntimeError):
    """The city has OSM in its config but no rows in the context tables yet."""


def _with_provenance(cols: dict, n: int, city: CityConfig) -> pa.Table:
    cols = {"city": pa.array([city.name] * n, pa.string()), **cols}
    cols["snapshot_date"] = pa.array([city.osm.snapshot_date] * n, pa.date32())
    cols["taxonomy_version"] = pa.array([TAXONOMY_VERSION] * n, pa.string())
    return pa.table(cols)


def roads_table(ctx: OsmContext, city: CityConfig) -> pa.Table:
    r = ctx.roads
    n = len(r)
    return _with_provenance(
        {
            "road_id": pa.array(np.arange(n, dtype=np.int64)),
            "osm_id": pa.array(r["osm_id"].astype("Int64"), pa.int64(), from_pandas=True),
            "highway": pa.array(r["highway"].astype(str).tolist(), pa.string()),
            "road_class": pa.array(r["road_class"].tolist(), pa.string()),
            "length_m": pa.array(r["length_m"].to_numpy(dtype=float)),
            "geometry_wkb": pa.array(shapely.to_wkb(r.geometry.to_numpy()).tolist(), pa.binary()),
        },
        n,
        city,
    )


def pois_table(ctx: OsmContext, city: CityConfig) -> pa.Table:
    p = ctx.pois
    n = len(p)
    lonlat = p.geometry.to_crs("EPSG:4326")
    return _with_provenance(
        {
            "poi_id": pa.array(np.arange(n, dtype=np.int64)),
            "osm_type": pa.array(p["osm_type"].astype(object).tolist(), pa.string()),
            "osm_id": pa.array(p["osm_id"].astype("Int64"), pa.int64(), from_pandas=True),
            "category": pa.array(p["category"].tolist(), pa.string()),
            "tag_key": pa.array(p["tag_key"].tolist(), pa.string()),
            "tag_value": pa.array(p["tag_value"].tolist(), pa.string()),
            "name": pa.array([None if not isinstance(v, str) else v for v in p["name"]], pa.string()),
            "mx": pa.array(p.geometry.x.to_numpy()),
            "my": pa.array(p.geometry.y.to_numpy()),
            "lon": pa.array(lonlat.x.to_numpy()),
            "lat": pa.array(lonlat.y.to_numpy()),
        },
        n,
        city,
    )


def box_extent(city: CityConfig) -> tuple[float, float, float, float]:
    """The city's box in its metric CRS (minx, miny, maxx, maxy): the bounds of the projected outline,
    densified so the curved edges of a box projected far from the CRS's meridian are inside too."""
    from pyproj import Transformer

    b = city.bbox
    to_metric = Transformer.from_crs("EPSG:4326", city.crs, always_xy=True)
    return to_metric.transform_bounds(b.min_lon, b.min_lat, b.max_lon, b.max_lat, densify_pts=21)


def grid_table(ctx: OsmContext, city: CityConfig, *, lattice_m: float = LATTICE_M) -> pa.Table:
    """The lattice over the city's box only: cleaning drops every point outside it (outside_bbox), so
    nodes beyond it are never read, and an extract can reach far past the box (build_road_lattice)."""
    lattice = build_road_lattice(
        ctx.roads.geometry.to_numpy(),
        ctx.roads["road_class"].map(ROAD_CLASSES.index).to_numpy(),
        np.column_stack([ctx.pois.geometry.x.to_numpy(), ctx.pois.geometry.y.to_numpy()]),
        phi_m=city.phi_m,
        lattice_m=lattice_m,
        extent=box_extent(city),
    )
    t = lattice_to_arrow(lattice)
    return _with_provenance({name: t.column(name) for name in t.column_names}, t.num_rows, city)


def _write(
    spark: SparkSession,
    settings: Settings,
    name: str,
    data: pa.Table,
    schema: T.StructType,
    city: CityConfig,
    meta: dict,
) -> int:
    """Arrow table (built on the driver by osmnx/geopandas/numpy) -> the city's partition of a Delta table.

    Staged as Parquet under the data root and read back by Spark: `createDataFrame` would hold the whole
    table in the JVM driver's heap at once (the 5 m road lattice of a city is millions of rows and ran
    out of the default 4g); a file read streams it, and on a cluster the data root is shared storage."""
    import shutil

    import pyarrow.parquet as pq

    staging = settings.home / "staging" / f"{name}-{city.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        pq.write_table(data.select(schema.names), staging / "part-0.parquet", row_group_size=256_000)
        df = spark.read.parquet(str(staging)).select(*(F.col(f.name).cast(f.dataType) for f in schema.fields))
        return replace_partition(
            df,
            table_path(settings, name),
            {"city": city.name},
            partition_by=table(name).partition_by,
            user_metadata=json.dumps({**meta, "rows": data.num_rows}, default=str),
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_context_tables(
    spark: SparkSession, city: CityConfig, settings: Settings, *, lattice_m: float = LATTICE_M
) -> dict[str, int]:
    """Read the city's OSM source and replace its partition of the three context tables.

    Returns table -> Delta version written; {} for a city without OSM (nothing to write)."""
    ctx = read_osm_context(city, settings)
    if ctx is None:
        log.info("%s has no OSM source: no context tables written (context is marked missing)", city.name)
        return {}
    meta = {
        "city": city.name,
        "taxonomy_version": TAXONOMY_VERSION,
        "poi_categories": list(POI_CATEGORIES),
        "road_classes": list(ROAD_CLASSES),
        "poi_categories_covered": city.osm.poi_categories_covered,
        "snapshot_date": city.osm.snapshot_date,
        "source_kind": city.osm.kind,
        "source": ctx.source,
        "licence": city.osm.licence,
        "crs": city.crs,
        "phi_m": city.phi_m,
        "lattice_m": lattice_m,
        "road_tolerance_m": ROAD_TOLERANCE_M,
    }
    pois, grid = pois_table(ctx, city), grid_table(ctx, city, lattice_m=lattice_m)
    versions = {
        "context_roads": _write(spark, settings, "context_roads", roads_table(ctx, city), ROADS_SCHEMA, city, meta),
        "context_pois": _write(spark, settings, "context_pois", pois, POIS_SCHEMA, city, meta),
        "context_grid": _write(spark, settings, "context_grid", grid, GRID_SCHEMA, city, meta),
    }
    # The NPZ every job reads (context_npz), from the rows just committed rather than read back (Porto:
    # 20 s); only when the tables are still at the versions written here (no other writer in between).
    path, current = _npz_key(settings, city)
    if current == {name: versions[name] for name in current}:
        _save_npz(path, city, pois, grid)
    return versions


def read_context(spark: SparkSession, city: CityConfig, settings: Settings) -> tuple[DataFrame, DataFrame, dict]:
    """One city's (pois_df, grid_df, versions read). Fails clearly when the tables were never built."""
    versions = {}
    frames = []
    for name in ("context_pois", "context_grid"):
        path = table_path(settings, name)
        if not table_exists(spark, path):
            raise ContextNotBuiltError(
                f"no {name} table at {path}: run `python -m jobs.context_tables --city {city.name}` first"
            )
        df, versions[name] = read_table(spark, path, where={"city": city.name})
        frames.append(df)
    pois_df, grid_df = frames
    return pois_df, grid_df, versions


def _npz_key(settings: Settings, city: CityConfig) -> tuple[Path, dict[str, int]]:
    """(where the city's NPZ of the tables' current versions lives, those versions), read with delta-rs.

    The name holds each table's id (a lake rebuilt from scratch restarts its versions at 0) and version,
    and the taxonomy version."""
    from transfertraj.feature_store.reader import TableNotFound, open_table

    keys, versions = [], {}
    for name in ("context_pois", "context_grid"):
        try:
            dt = open_table(table_path(settings, name))
        except TableNotFound as exc:
            raise ContextNotBuiltError(
                f"no {name} table at {table_path(settings, name)}: run "
                f"`python -m jobs.context_tables --city {city.name}` first"
            ) from exc
        versions[name] = dt.version()
        keys.append(f"{dt.metadata().id[:8]}v{versions[name]}")
    return settings.home / "cache" / "context" / f"{city.name}-{TAXONOMY_VERSION}-{'-'.join(keys)}.npz", versions


def _save_npz(path: Path, city: CityConfig, pois: pa.Table, grid: pa.Table) -> None:
    """Write the NPZ under a temporary name and rename it, so a reader never sees half of one; then
    remove the city's files of earlier versions (no job reads them again)."""
    from transfertraj.features.context import city_context, save_city_context
    from transfertraj.features.mapped_context import unpack_context

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:8]}.partial.npz")
    save_city_context(city_context(pois, grid), partial)
    partial.replace(path)
    for stale in path.parent.glob(f"{city.name}-*.npz"):
        if stale != path and ".partial." not in stale.name:
            stale.unlink(missing_ok=True)
    for stale in path.parent.glob(f"{city.name}-*.mapped*"):  # features.mapped_context's folders of them
        shutil.rmtree(stale, ignore_errors=True)
    unpack_context(path)  # what the workers map: part of the cache, so no job pays for it
    log.info("%s: context cached as %s", city.name, path)


def context_npz(settings: Settings, city: CityConfig) -> tuple[Path, dict[str, int]]:
    """(the city's context as the NPZ a model carries, the table versions it holds), built once per version.

    A job needs the city's whole lattice on the driver; collecting Porto's 5.5 M grid rows through Spark
    took 22-32 s per job (issue #18). The compact form (features.context.save_city_context, 25 MB for
    Porto, exact at the precision the join uses) is written once per version of context_pois and
    context_grid under <home>/cache/context/, with the folder of arrays the workers map beside it
    (features.mapped_context), and loaded in milliseconds by every later job.
    build_context_tables writes it from the rows it has just committed; otherwise the first job after a
    change reads the tables back here, with delta-rs, without the JVM (20 s for Porto)."""
    from transfertraj.feature_store.reader import read_table
    from transfertraj.features.context import GRID_COLUMNS, POI_COLUMNS

    path, versions = _npz_key(settings, city)
    if path.exists():
        return path, versions
    grid, _ = read_table(
        settings,
        "context_grid",
        city=city.name,
        version=versions["context_grid"],
        columns=[*GRID_COLUMNS, "taxonomy_version"],
    )
    if grid.num_rows == 0:
        raise ContextNotBuiltError(
            f"the context tables have no rows for {city.name}: run `python -m jobs.context_tables --city {city.name}` first"
        )
    pois, _ = read_table(
        settings, "context_pois", city=city.name, version=versions["context_pois"], columns=list(POI_COLUMNS)
    )
    _save_npz(path, city, pois, grid)
    return path, versions


def with_context(points_df: DataFrame, city: CityConfig, settings: Settings, context: Path | None = None) -> DataFrame:
    """Add poi, poi_missing, road, road_missing to point rows (point_id, mx, my) of one city.

    For a DataFrame of points; jobs/featurize.py computes the same vectors on trajectory rows, without a
    row per point. `context`: the city's context_npz (looked up here when None)."""
    if not city.has_osm:
        return points_df.transform(add_missing_context)
    if context is None:
        context, _ = context_npz(settings, city)
    return points_df.transform(
        add_loaded_context, context, phi_m=city.phi_m, categories_covered=city.osm.poi_categories_covered
    )


def main(argv: list[str] | None = None) -> int:
    from transfertraj.core.city_config import load_city
    from transfertraj.core.log_config import configure_logging
    from transfertraj.jobs.spark_session import get_spark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--city", required=True)
    parser.add_argument("--lattice-m", type=float, default=LATTICE_M)
    args = parser.parse_args(argv)
    configure_logging()
    settings = Settings.load()
    city = load_city(args.city, settings)
    versions = build_context_tables(get_spark("context_tables", settings), city, settings, lattice_m=args.lattice_m)
    for name, version in versions.items():
        print(f"{name}: {city.name} written, Delta version {version}")
    if not versions:
        print(f"{city.name}: no OSM source, nothing written (context is marked missing for its points)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
