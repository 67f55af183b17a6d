"""Metrics and the metric-CRS -> lon/lat map."""

from __future__ import annotations

import numpy as np
from pyproj import Transformer

from transfertraj.core.geo import haversine_m
from transfertraj.model.coordinates import MetricToLonLat
from transfertraj.model.metrics import distance_errors, minutes_errors


def test_haversine_known_distances():
    assert abs(haversine_m(0, 0, 0, 1) - 111_195.0) < 1.0  # one degree of latitude on the mean sphere
    assert abs(haversine_m(-8.61, 41.15, -8.61, 41.15)) < 1e-9
    # Porto: 0.01 deg of longitude at 41.15 N is about 837 m
    assert abs(haversine_m(-8.62, 41.15, -8.61, 41.15) - 836.9) < 1.0


def test_distance_and_minutes_errors():
    true = np.array([[-8.61, 41.15], [-8.60, 41.16]])
    pred = true + np.array([[0.0, 0.001], [0.0, 0.0]])  # 111 m off, exact
    e = distance_errors(pred, true)
    assert abs(e["mae_m"] - 111.195 / 2) < 0.1 and abs(e["rmse_m"] - 111.195 / np.sqrt(2)) < 0.1 and e["n"] == 2
    m = minutes_errors([11.0, 8.0, 1.0], [10.0, 10.0, 0.0])
    assert np.isclose(m["mae_min"], 4 / 3) and np.isclose(m["rmse_min"], np.sqrt(6 / 3))
    assert np.isclose(m["mape_pct"], 15.0)  # zero true values are left out of MAPE


def test_metric_to_lonlat_fit_is_submetre_over_a_city():
    to_ll = Transformer.from_crs("EPSG:32629", "EPSG:4326", always_xy=True)
    rng = np.random.default_rng(0)
    mxy = np.stack([rng.uniform(480_000, 580_000, 3000), rng.uniform(4_510_000, 4_600_000, 3000)], 1)  # 100 x 90 km
    lonlat = np.stack(to_ll.transform(mxy[:, 0], mxy[:, 1]), 1)
    conv = MetricToLonLat.fit(mxy, lonlat)
    test = np.stack([rng.uniform(485_000, 575_000, 500), rng.uniform(4_515_000, 4_595_000, 500)], 1)
    true = np.stack(to_ll.transform(test[:, 0], test[:, 1]), 1)
    got = conv(test)
    assert conv.degree == 3
    assert haversine_m(got[:, 0], got[:, 1], true[:, 0], true[:, 1]).max() < 0.5
    # Two points 3 km apart (an OD pair): a similarity map, still within a metre nearby
    pair = np.array([[530_000.0, 4_555_000.0], [532_400.0, 4_556_800.0]])
    few = MetricToLonLat.fit(pair, np.stack(to_ll.transform(pair[:, 0], pair[:, 1]), 1))
    near = pair.mean(axis=0, keepdims=True) + [300.0, -200.0]
    g, t = few(near)[0], np.array(to_ll.transform(near[0, 0], near[0, 1]))
    assert few.degree == 0 and haversine_m(g[0], g[1], t[0], t[1]) < 1.0
