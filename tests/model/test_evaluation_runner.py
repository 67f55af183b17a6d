"""The runner's measurements on GENERATED features: baselines against a direct computation, and the
evaluation's per-trajectory sums giving the same figures as model/metrics.py on the points."""

from __future__ import annotations

import numpy as np
import pytest

from transfertraj.core.geo import haversine_m
from transfertraj.model.baselines import tp_last_known
from transfertraj.model.evaluation_protocol import SUITES, task_rows
from transfertraj.model.evaluation_runner import baseline_frames
from transfertraj.model.metrics import sums_metrics
from transfertraj.model.transfer_data import city_data


def test_baselines_in_the_harness_match_a_direct_computation(two_cities):
    porto = city_data(two_cities, "porto")
    config = SUITES["quick"]
    frames = baseline_frames(porto, "test", config, ("tp", "tr8", "od"))
    assert {
        ("LKP", "tp"),
        ("CV", "tp"),
        ("lin-interp (time)", "tr8"),
        ("OD-LR", "od"),
        ("OD-LR distance", "od"),
        ("OD-GB", "od"),
    } <= set(frames)
    rows = task_rows(porto, "test", "tp", config)
    assert (porto.n_points[rows] >= 10).all()
    last = porto.offsets[rows + 1] - 1
    pred = tp_last_known(porto, rows)
    # generated lon/lat come from pyproj; the harness maps metres back with its fitted inverse (< 1 m apart)
    from pyproj import Transformer

    ll = np.column_stack(
        Transformer.from_crs("EPSG:32629", "EPSG:4326", always_xy=True).transform(pred[:, 0], pred[:, 1])
    )
    direct = haversine_m(ll[:, 0], ll[:, 1], porto.lonlat[last, 0], porto.lonlat[last, 1])
    m = sums_metrics("tp", frames[("LKP", "tp")])
    assert m["rmse_m"] == pytest.approx(np.sqrt(np.mean(direct**2)), abs=1.0)
    assert m["n_trajectories"] == len(rows)
    # generated drives wiggle, so constant velocity beats nothing by construction; it must differ from LKP
    assert sums_metrics("tp", frames[("CV", "tp")])["rmse_m"] != pytest.approx(m["rmse_m"])


def test_per_trajectory_sums_give_the_figures_of_the_point_metrics():
    from transfertraj.model.metrics import minutes_errors, trip_sums

    rng = np.random.default_rng(0)
    trips = rng.integers(0, 20, 300).astype(str)
    err = rng.normal(0, 100, 300)
    point = {"rmse_m": np.sqrt(np.mean(err**2)), "mae_m": np.mean(np.abs(err))}
    summed = sums_metrics("tr8", trip_sums(trips, err))
    assert summed["n_trajectories"] == len(set(trips))
    for k, v in point.items():
        assert summed[k] == pytest.approx(v, rel=1e-12)
    true = rng.uniform(0, 30, 300)
    true[:5] = 0.0  # no percentage error for a zero travel time
    pred = true + rng.normal(0, 2, 300)
    od = sums_metrics("od", trip_sums(trips, pred - true, true_minutes=true))
    for k, v in minutes_errors(pred, true).items():
        if k != "n":
            assert od[k] == pytest.approx(v, rel=1e-12), k


def test_an_untrained_start_is_a_checkpoint_the_loader_reads(two_cities, tmp_path):
    from transfertraj.model.checkpoint import load_model
    from transfertraj.model.evaluation_runner import Trainer

    porto = city_data(two_cities, "porto")
    state = Trainer(SUITES["quick"], tmp_path, "cpu").scratch("s", porto, seed=0)
    model, loaded = load_model(state)
    assert loaded["data"]["n_trajectories"] == len(porto) and model.args.d_model == SUITES["quick"].model["d_model"]
