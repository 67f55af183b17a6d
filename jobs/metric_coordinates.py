"""WGS-84 lon/lat -> metres in a city's metric CRS (UTM of its centre), in Spark.

    points = add_metric_xy(points, "EPSG:32629")        # adds mx, my (double, metres)

pyproj runs once per Arrow batch (mapInArrow), vectorised over the batch, never once per row, through
transfertraj.features.metric_coordinates: the function the served model calls on its request points.
"""

from __future__ import annotations

import functools

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from transfertraj.features.metric_coordinates import metric_xy


def _project_batches(batches, *, crs: str, lon_col: str, lat_col: str):
    for batch in batches:
        mx, my = metric_xy(
            batch.column(lon_col).to_numpy(zero_copy_only=False),
            batch.column(lat_col).to_numpy(zero_copy_only=False),
            crs,
        )
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array(mx, pa.float64()), pa.array(my, pa.float64())],
            names=[*batch.schema.names, "mx", "my"],
        )


def add_metric_xy(df: DataFrame, crs: str, *, lon_col: str = "lon", lat_col: str = "lat") -> DataFrame:
    schema = T.StructType([*df.schema.fields, T.StructField("mx", T.DoubleType()), T.StructField("my", T.DoubleType())])
    fn = functools.partial(_project_batches, crs=crs, lon_col=lon_col, lat_col=lat_col)
    return df.mapInArrow(fn, schema)
