"""Points in a city's delivered datum -> WGS-84, in Spark (GCJ-02 sources: DiDi, Chengdu, Xi'an).

    points = wgs84_points(points, city.datum)        # lon, lat replaced; other columns untouched

The conversion runs once per Arrow batch (mapInArrow), vectorised, through
transfertraj.features.datum: the function the served model calls on its request points, so a trip is
moved the same way at ingestion and at serving. A WGS-84 city's points pass through unchanged (no plan
step is added). Ingestion converts before cleaning, so speeds, stays and the bbox see true positions.
"""

from __future__ import annotations

import functools

import pyarrow as pa
from pyspark.sql import DataFrame

from transfertraj.features.datum import to_wgs84


def _convert_batches(batches, *, datum: str, lon_col: str, lat_col: str):
    for batch in batches:
        lon, lat = to_wgs84(
            batch.column(lon_col).to_numpy(zero_copy_only=False),
            batch.column(lat_col).to_numpy(zero_copy_only=False),
            datum,
        )
        i, j = batch.schema.get_field_index(lon_col), batch.schema.get_field_index(lat_col)
        arrays = list(batch.columns)
        arrays[i] = pa.array(lon, pa.float64(), mask=batch.column(i).is_null().to_numpy(zero_copy_only=False))
        arrays[j] = pa.array(lat, pa.float64(), mask=batch.column(j).is_null().to_numpy(zero_copy_only=False))
        yield pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def wgs84_points(df: DataFrame, datum: str, *, lon_col: str = "lon", lat_col: str = "lat") -> DataFrame:
    """`df` with lon/lat (double) converted from `datum` (CityConfig.datum) to WGS-84."""
    if datum == "wgs84":
        return df
    to_wgs84([0.0], [0.0], datum)  # an unknown datum fails here, on the driver, not in a worker
    fn = functools.partial(_convert_batches, datum=datum, lon_col=lon_col, lat_col=lat_col)
    return df.mapInArrow(fn, df.schema)
