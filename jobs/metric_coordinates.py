"""WGS-84 lon/lat -> metres in a city's metric CRS (UTM of its centre), in Spark.

    points = add_metric_xy(points, "EPSG:32629")        # adds mx, my (double, metres)

pyproj runs once per Arrow batch (mapInArrow), vectorised over the batch, never once per row.
"""

from __future__ import annotations

import functools

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T


@functools.lru_cache(maxsize=8)
def _transformer(crs: str):
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def _project_batches(batches, *, crs: str, lon_col: str, lat_col: str):
    transformer = _transformer(crs)
    for batch in batches:
        lon = batch.column(lon_col).to_numpy(zero_copy_only=False)
        lat = batch.column(lat_col).to_numpy(zero_copy_only=False)
        mx, my = transformer.transform(lon, lat)
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array(mx, pa.float64()), pa.array(my, pa.float64())],
            names=[*batch.schema.names, "mx", "my"],
        )


def add_metric_xy(df: DataFrame, crs: str, *, lon_col: str = "lon", lat_col: str = "lat") -> DataFrame:
    schema = T.StructType([*df.schema.fields, T.StructField("mx", T.DoubleType()), T.StructField("my", T.DoubleType())])
    fn = functools.partial(_project_batches, crs=crs, lon_col=lon_col, lat_col=lat_col)
    return df.mapInArrow(fn, schema)
