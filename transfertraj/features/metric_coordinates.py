"""WGS-84 lon/lat -> metres in a city's metric CRS (UTM of its centre), vectorised with pyproj.

mx, my = metric_xy(lon, lat, "EPSG:32629")
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def transformer(crs: str):
    """One pyproj Transformer per CRS and process (building one costs milliseconds; reuse it)."""
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def metric_xy(lon, lat, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """(mx, my) float64 metres for arrays of lon, lat in degrees."""
    mx, my = transformer(crs).transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.asarray(mx, dtype=np.float64), np.asarray(my, dtype=np.float64)
