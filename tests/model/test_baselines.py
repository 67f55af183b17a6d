"""Baselines on hand-made trajectories whose answers are known exactly (no real data)."""

from __future__ import annotations

import numpy as np
import pytest

from transfertraj.core.constants import TP_FUTURE
from transfertraj.model.baselines import (
    OdRegressor,
    od_features,
    od_minutes,
    tp_constant_velocity,
    tp_last_known,
    tr_kept,
    tr_linear_interpolation,
)
from transfertraj.model.masking import tr_mask
from transfertraj.model.trajectory_data import TrajectoryData


def make_data(tracks, *, start_hour=8.0, weekday=2) -> TrajectoryData:
    """TrajectoryData from [(mxy (n, 2) metres, minutes (n,)), ...]; context is absent."""
    mxy = np.concatenate([np.asarray(t[0], float) for t in tracks])
    minutes = np.concatenate([np.asarray(t[1], float) for t in tracks])
    lengths = [len(t[0]) for t in tracks]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    first = np.repeat(mxy[offsets[:-1]], lengths, axis=0)
    T, N = len(mxy), len(tracks)
    hour = np.full(T, np.floor(start_hour))
    minute = np.full(T, (start_hour % 1) * 60)
    time = np.stack([np.full(T, weekday), hour, minute, minutes], axis=1).astype(np.float32)
    return TrajectoryData(
        trip_id=np.array([f"t{i}" for i in range(N)], dtype=object),
        city=np.array(["hand"] * N, dtype=object),
        start_ts=np.arange(N, dtype=np.int64) * 10**9,
        offsets=offsets,
        xy=(mxy - first).astype(np.float32),
        time=time,
        mxy=mxy,
        lonlat=np.zeros((T, 2)),
        poi=np.zeros((T, 1), np.float32),
        road=np.zeros((T, 1), np.float32),
        poi_missing=np.ones((T, 1), bool),
        road_missing=np.ones(T, bool),
        context_missing=np.ones(N, bool),
        taxonomy_version="hand",
        data_version=None,
    )


def line(n, start=(1000.0, 2000.0), step=(12.0, -5.0), dt=0.25):
    i = np.arange(n)[:, None]
    return np.asarray(start) + i * np.asarray(step), np.arange(n) * dt


def test_last_known_point_is_the_point_before_the_hidden_ones():
    xy, t = line(12)
    data = make_data([(xy, t)])
    np.testing.assert_allclose(tp_last_known(data, [0])[0], xy[12 - TP_FUTURE - 1])


def test_constant_velocity_is_exact_on_a_straight_line_at_constant_speed():
    tracks = [
        line(12),
        line(30, start=(0, 0), step=(-3.0, 7.5)),
        line(7, step=(1.0, 1.0)),
    ]  # 7 points: 2 observed, the fewest with a velocity
    data = make_data(tracks)
    dest = tp_constant_velocity(data, [0, 1, 2])
    np.testing.assert_allclose(dest, [xy[-1] for xy, _ in tracks], atol=1e-9)
    # the last known point is off by exactly the 5 hidden steps
    lkp = tp_last_known(data, [0, 1, 2])
    np.testing.assert_allclose(
        np.linalg.norm(lkp - dest, axis=1), [5 * np.hypot(12, 5), 5 * np.hypot(3, 7.5), 5 * np.sqrt(2)]
    )


def test_constant_velocity_window_averages_the_last_steps():
    xy = np.array([[0, 0], [0, 0], [10, 0], [30, 0], [60, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0]], float)
    data = make_data([(xy, np.arange(10.0))])
    last = 10 - TP_FUTURE - 1  # point 4 at x=60; steps 10, 20, 30
    assert tp_constant_velocity(data, [0], window=1)[0, 0] == pytest.approx(60 + 5 * 30)
    assert tp_constant_velocity(data, [0], window=3)[0, 0] == pytest.approx(60 + 5 * 20)
    assert last == 4


def test_constant_velocity_follows_the_clock_when_sampling_is_irregular():
    minutes = np.array([0.0, 1.0, 2.0, 2.5, 4.0, 4.2, 5.0, 9.0, 9.5, 12.0])  # the destination 9.5 min after LKP
    xy = np.array([100.0, -50.0]) + minutes[:, None] * np.array([40.0, 10.0])  # 40 m/min east, 10 north
    data = make_data([(xy, minutes)])
    np.testing.assert_allclose(tp_constant_velocity(data, [0])[0], xy[-1], atol=1e-9)
    steps = np.array([[0.0, 0.0]] * 10)
    steps[:, 0] = np.arange(10) * 7.0
    same_time = make_data([(steps, np.zeros(10))])  # no clock to follow: 5 steps of the last one
    assert tp_constant_velocity(same_time, [0])[0, 0] == pytest.approx(4 * 7.0 + 5 * 7.0)


def test_linear_interpolation_by_time_is_exact_on_linear_motion_with_irregular_sampling():
    rng = np.random.default_rng(3)
    minutes = np.cumsum(np.r_[0, rng.uniform(0.1, 1.0, 40)])  # irregular sampling
    xy = np.array([100.0, -50.0]) + minutes[:, None] * np.array([300.0, 120.0])  # constant velocity in time
    data = make_data([(xy, minutes)])
    for mu in (4, 8, 16):
        p = tr_linear_interpolation(data, [0], mu=mu, by="time")
        np.testing.assert_allclose(p[["pred_mx", "pred_my"]].to_numpy(), xy[p["point"].to_numpy()], atol=1e-6)
        by_index = tr_linear_interpolation(data, [0], mu=mu, by="index")
        err = np.abs(by_index[["pred_mx", "pred_my"]].to_numpy() - xy[by_index["point"].to_numpy()]).max()
        assert err > 1.0  # the index variant ignores the irregular times, so it is not exact here


def test_linear_interpolation_scores_exactly_the_points_the_tr_mask_hides():
    xy, t = line(37)
    data = make_data([(xy, t)])
    for mu in (4, 8, 16):
        p = tr_linear_interpolation(data, [0], mu=mu)
        np.testing.assert_array_equal(p["point"].to_numpy(), np.flatnonzero(tr_mask(37, mu=mu).spatial))
        np.testing.assert_array_equal(tr_kept(37, mu), ~tr_mask(37, mu=mu).spatial)


def test_linear_interpolation_rejects_unknown_axis():
    xy, t = line(10)
    with pytest.raises(ValueError):
        tr_linear_interpolation(make_data([(xy, t)]), [0], mu=4, by="speed")


def _od_tracks(rng, n):
    tracks = []
    for _ in range(n):
        km = rng.uniform(0.5, 8.0)
        angle = rng.uniform(0, 2 * np.pi)
        end = np.array([np.cos(angle), np.sin(angle)]) * km * 1000
        minutes = 3.0 + 2.0 * km  # duration linear in the straight-line distance
        tracks.append((np.stack([np.zeros(2), end]), np.array([0.0, minutes])))
    return tracks


def test_od_features_and_truth():
    tracks = [(np.array([[0.0, 0.0], [3000.0, 4000.0]]), np.array([0.0, 12.5]))]
    data = make_data(tracks, start_hour=17.5, weekday=4)
    np.testing.assert_allclose(od_features(data, [0]), [[5.0, 17.5, 4.0]])
    np.testing.assert_allclose(od_minutes(data, [0]), [12.5])


def test_od_linear_regression_recovers_a_linear_travel_time():
    data = make_data(_od_tracks(np.random.default_rng(0), 60))
    for kind in ("linear", "distance"):
        model = OdRegressor(kind).fit(data, np.arange(40))
        pred = model.predict(data, np.arange(40, 60))
        np.testing.assert_allclose(pred, od_minutes(data, np.arange(40, 60)), atol=1e-6)
    np.testing.assert_allclose(OdRegressor("distance").fit(data, np.arange(40)).model.coef_, [2.0])


def test_od_gradient_boosting_beats_the_mean_on_held_out_trips():
    data = make_data(_od_tracks(np.random.default_rng(1), 300))
    train, test = np.arange(240), np.arange(240, 300)
    truth = od_minutes(data, test)
    gb = OdRegressor("gbrt").fit(data, train).predict(data, test)
    mean_err = np.abs(od_minutes(data, train).mean() - truth).mean()
    assert np.abs(gb - truth).mean() < 0.25 * mean_err


def test_od_regressor_refuses_unknown_kind_and_predict_before_fit():
    with pytest.raises(ValueError):
        OdRegressor("forest")
    with pytest.raises(RuntimeError):
        OdRegressor("linear").predict(make_data(_od_tracks(np.random.default_rng(0), 2)), [0])
