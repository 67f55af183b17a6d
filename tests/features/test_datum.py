"""GCJ-02 <-> WGS-84 (transfertraj/features/datum.py) against published reference pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transfertraj.features.datum import gcj02_to_wgs84, in_china, to_wgs84, wgs84_to_gcj02

# (wgs_lon, wgs_lat, gcj_lon, gcj_lat). The first three: the test suite of eviltransform
# (github.com/googollee/eviltransform, python/test.py: Shanghai, Shenzhen, Beijing); the last: the test
# of coordtransform (github.com/wandergis/coordtransform, test/app.js, wgs84togcj02(116.404, 39.915)).
PUBLISHED = [
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),
    (116.404, 39.915, 116.41024449916938, 39.91640428150164),
]


def _metres(lon1, lat1, lon2, lat2):
    k = 6_371_008.8 * math.pi / 180
    return np.hypot((np.asarray(lon1) - lon2) * k * np.cos(np.radians(lat2)), (np.asarray(lat1) - lat2) * k)


def test_forward_matches_the_published_pairs():
    wl, wa, gl, ga = map(np.array, zip(*PUBLISHED, strict=True))
    lon, lat = wgs84_to_gcj02(wl, wa)
    assert np.abs(lon - gl).max() < 1e-9 and np.abs(lat - ga).max() < 1e-9  # they agree to the last digit
    assert _metres(lon, lat, wl, wa).min() > 100  # the offset is hundreds of metres: a swapped test would fail


def test_inverse_recovers_the_published_wgs84_points_to_the_centimetre():
    wl, wa, gl, ga = map(np.array, zip(*PUBLISHED, strict=True))
    lon, lat = gcj02_to_wgs84(gl, ga)
    assert _metres(lon, lat, wl, wa).max() < 0.01
    # The one-step inverse (subtract the offset taken at the GCJ point) is metres off: the iteration matters.
    f_lon, f_lat = wgs84_to_gcj02(gl, ga)
    assert _metres(2 * gl - f_lon, 2 * ga - f_lat, wl, wa).max() > 0.5


def test_round_trip_over_china_is_below_a_centimetre():
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(73, 135, 20_000), rng.uniform(18, 53, 20_000)
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert np.abs(back_lon - lon).max() < 1e-7 and np.abs(back_lat - lat).max() < 1e-7
    assert _metres(back_lon, back_lat, lon, lat).max() < 0.01


def test_outside_china_is_the_identity_and_nan_passes_through():
    lon, lat = np.array([-8.61, -122.42, 2.35, np.nan]), np.array([41.15, 37.77, 48.86, 30.0])
    assert not in_china(lon, lat).any()
    for f in (wgs84_to_gcj02, gcj02_to_wgs84):
        out_lon, out_lat = f(lon, lat)
        np.testing.assert_array_equal(out_lon, lon)
        np.testing.assert_array_equal(out_lat, lat)
    nan_lon, nan_lat = gcj02_to_wgs84(np.array([116.4, np.nan]), np.array([39.9, 39.9]))
    assert np.isnan(nan_lon[1]) and abs(nan_lon[0] - 116.4) > 1e-3


def test_to_wgs84_by_datum_name():
    lon, lat = to_wgs84([116.4], [39.9], "wgs84")
    assert lon[0] == 116.4 and lat[0] == 39.9
    assert to_wgs84([116.4], [39.9], "gcj02")[0][0] < 116.4  # the GCJ-02 shift near Beijing is to the east
    with pytest.raises(ValueError, match="unknown datum"):
        to_wgs84([1.0], [1.0], "bd09")
