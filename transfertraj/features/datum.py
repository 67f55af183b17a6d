"""GCJ-02 <-> WGS-84, vectorised: Chinese sources (DiDi, the paper's Chengdu and Xi'an) deliver GCJ-02.

    from transfertraj.features.datum import gcj02_to_wgs84, wgs84_to_gcj02, to_wgs84
    lon, lat = gcj02_to_wgs84(lon_gcj, lat_gcj)        # arrays in, float64 arrays out
    lon, lat = to_wgs84(lon, lat, city.datum)          # identity for 'wgs84'

GCJ-02 is WGS-84 shifted by a smooth, deliberately obscured offset of a few hundred metres inside
China (maps of China must be published in it); OSM and everything else here is WGS-84, so a GCJ-02
delivery would sit on the wrong streets. Only the forward direction is published as a formula (the
"leaked" algorithm, reproduced by e.g. the eviltransform libraries, MIT, and described on Wikipedia,
"Restrictions on geographic data in China"); the inverse is found here by fixed-point iteration.

Written by hand, in numpy, because no maintained vectorised package exists: the PyPI packages
(eviltransform 0.1.1 of 2018, prcoords 1.0.2 of 2019, coord-convert 0.2.1 of 2019) convert one point
per Python call, which a Spark Arrow worker and the serving path would call per point; pyproj has no
GCJ-02. The formula's constants are the published ones (its ellipsoid is Krasovsky's, a = 6378245 m;
a copy using WGS-84's 6378137 m is ~1 cm off); tests/features/test_datum.py checks them against the
reference pairs published in the eviltransform and coordtransform test suites, which agree to the digit.

Outside China (the rough box eviltransform uses: lon 72.004..137.8347, lat 0.8293..55.8271) GCJ-02 is
WGS-84 and both directions are the identity.
"""

from __future__ import annotations

import numpy as np

DATUMS = ("wgs84", "gcj02")
_A = 6378245.0  # Krasovsky 1940 semi-major axis, as the published formula uses (not WGS-84's 6378137)
_EE = 0.00669342162296594323  # ... and its first eccentricity squared
_CHINA = (72.004, 0.8293, 137.8347, 55.8271)  # min_lon, min_lat, max_lon, max_lat
INVERSE_TOLERANCE_DEG = 1e-10  # the inverse iterates until the forward of its answer is this close (~10 um)
INVERSE_MAX_ITERATIONS = 30  # contraction by ~1e-3 per step: 3-4 steps reach the tolerance


def in_china(lon, lat) -> np.ndarray:
    """Points where GCJ-02 differs from WGS-84 (the published rough box of China)."""
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    return (lon >= _CHINA[0]) & (lon <= _CHINA[2]) & (lat >= _CHINA[1]) & (lat <= _CHINA[3])


def _offset_deg(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The published GCJ-02 offset (degrees) at a WGS-84 point: a polynomial plus sines in the
    distance from (105 E, 35 N), in metres, scaled to degrees on the Krasovsky ellipsoid."""
    x, y = lon - 105.0, lat - 35.0
    px, py = x * np.pi, y * np.pi
    common = (20.0 * np.sin(6.0 * px) + 20.0 * np.sin(2.0 * px)) * 2.0 / 3.0
    dy = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    dy += common + (20.0 * np.sin(py) + 40.0 * np.sin(py / 3.0)) * 2.0 / 3.0
    dy += (160.0 * np.sin(py / 12.0) + 320.0 * np.sin(py / 30.0)) * 2.0 / 3.0
    dx = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    dx += common + (20.0 * np.sin(px) + 40.0 * np.sin(px / 3.0)) * 2.0 / 3.0
    dx += (150.0 * np.sin(px / 12.0) + 300.0 * np.sin(px / 30.0)) * 2.0 / 3.0
    rad = np.radians(lat)
    w = 1.0 - _EE * np.sin(rad) ** 2
    dlat = dy * 180.0 / (_A * (1.0 - _EE) / (w * np.sqrt(w)) * np.pi)
    dlon = dx * 180.0 / (_A / np.sqrt(w) * np.cos(rad) * np.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """WGS-84 -> GCJ-02 by the published forward formula; identity outside China."""
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    dlon, dlat = _offset_deg(lon, lat)
    inside = in_china(lon, lat)
    return np.where(inside, lon + dlon, lon), np.where(inside, lat + dlat, lat)


def gcj02_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 -> WGS-84: the point whose forward transform is the given one, by fixed-point iteration
    w <- w - (forward(w) - g) from w = g. The one-step inverse (g minus the offset at g) is metres off,
    because the offset at g is not the offset at w; the iteration converges to INVERSE_TOLERANCE_DEG.
    Identity outside China; NaN stays NaN."""
    g_lon, g_lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    w_lon, w_lat = g_lon.copy(), g_lat.copy()
    inside = in_china(g_lon, g_lat)
    for _ in range(INVERSE_MAX_ITERATIONS):
        f_lon, f_lat = wgs84_to_gcj02(w_lon, w_lat)
        e_lon, e_lat = f_lon - g_lon, f_lat - g_lat
        w_lon, w_lat = w_lon - e_lon, w_lat - e_lat
        err = np.maximum(np.abs(e_lon), np.abs(e_lat))
        if not np.any(err[inside] > INVERSE_TOLERANCE_DEG):  # NaN compares False: it never holds the loop
            break
    return np.where(inside, w_lon, g_lon), np.where(inside, w_lat, g_lat)


def to_wgs84(lon, lat, datum: str) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in a city's datum (CityConfig.datum) -> WGS-84."""
    if datum == "wgs84":
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    if datum == "gcj02":
        return gcj02_to_wgs84(lon, lat)
    raise ValueError(f"unknown datum {datum!r} (one of {', '.join(DATUMS)})")


def from_wgs84(lon, lat, datum: str) -> tuple[np.ndarray, np.ndarray]:
    """WGS-84 -> a city's datum: what a served answer is given back in (the datum its request came in)."""
    if datum == "wgs84":
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    if datum == "gcj02":
        return wgs84_to_gcj02(lon, lat)
    raise ValueError(f"unknown datum {datum!r} (one of {', '.join(DATUMS)})")
