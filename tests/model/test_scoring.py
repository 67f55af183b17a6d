"""Scoring a given model on GENERATED features: every trajectory, the model and each baseline on the same
hidden points, ratios that agree with the metrics, OD baselines that never see the trip they predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.model.generated import tiny_args
from transfertraj.model.baselines import OdRegressor, od_cross_fitted
from transfertraj.model.checkpoint import new_state
from transfertraj.model.evaluation_runner import tr_baseline_frames
from transfertraj.model.road_paths import RoadGraph
from transfertraj.model.scoring import MODEL, score_checkpoint, write_score
from transfertraj.model.transfer_data import city_data
from transfertraj.model.transfertraj import TransferTraj


@pytest.fixture(scope="module")
def porto(two_cities):
    return city_data(two_cities, "porto")


@pytest.fixture(scope="module")
def untrained(porto):
    """A randomly initialised tiny model as a checkpoint dict: scoring needs a model, not a good one."""
    torch.manual_seed(0)
    model = TransferTraj(args=tiny_args())
    return new_state(model, porto.describe(), {"task": "none"}, model=model.state_dict())


def test_scores_every_trajectory_against_every_baseline(porto, untrained, tmp_path):
    score = score_checkpoint(untrained, porto, tasks=("tp", "tr8", "od"), device="cpu", n_boot=200)
    against = score.ratios.groupby("task")["against"].agg(set).to_dict()
    assert against == {
        "tp": {"LKP", "CV"},
        "tr8": {"lin-interp (time)", "lin-interp (index)"},
        "od": {"OD-LR", "OD-LR distance", "OD-GB"},
    }
    assert (score.ratios["n_trajectories"] == len(porto)).all()  # 10..24 points each: every task uses all 50
    m = score.metrics.set_index(["task", "method"])
    r = score.ratios.set_index(["task", "against", "metric"])
    for task, base, col in (("tp", "CV", "rmse_m"), ("tr8", "lin-interp (time)", "mae_m"), ("od", "OD-LR", "mae_min")):
        expected = m.loc[(task, MODEL), col] / m.loc[(task, base), col]
        assert r.loc[(task, base, col.split("_")[0]), "ratio"] == pytest.approx(expected, rel=1e-9)
        lo, hi = r.loc[(task, base, col.split("_")[0]), ["ci_low", "ci_high"]]
        assert lo <= expected <= hi

    about = {"model": "models:/transfertraj-base@champion", "city": "porto", "features version": 7}
    js, md = write_score(score, tmp_path, about)
    doc = json.loads(js.read_text())
    assert doc["model"] == about["model"] and doc["n_trajectories"] == len(porto)
    assert len(doc["ratios"]) == len(score.ratios)
    text = md.read_text()
    assert "models:/transfertraj-base@champion" in text and "| tr8 | model | lin-interp (time) | RMSE |" in text


def test_the_model_and_the_baselines_score_the_same_hidden_points(porto, untrained):
    from transfertraj.model.evaluation_protocol import SUITES
    from transfertraj.model.evaluation_runner import model_frame

    model = model_frame(untrained, porto, "tr8", SUITES["quick"], "cpu", split="all").set_index("trip_id")["n"]
    base = tr_baseline_frames(porto, np.arange(len(porto)), 8)["lin-interp (time)"].set_index("trip_id")["n"]
    assert model.sum() > len(porto)
    assert model.sort_index().equals(base.sort_index())


def test_road_path_without_roads_nearby_is_the_straight_line(porto):
    far = RoadGraph.from_lines([np.array([(0.0, 0.0), (100.0, 0.0)])])  # 500 km from the generated box
    frames = tr_baseline_frames(porto, np.arange(len(porto)), 8, road_graphs={"porto": far})
    assert frames["road-path interpolation"].attrs["on_road_share"] == 0
    cols = ["sse", "sae", "n"]
    np.testing.assert_allclose(frames["road-path interpolation"][cols], frames["lin-interp (time)"][cols])


def test_od_cross_fitting_never_predicts_a_trip_with_a_fit_that_saw_it(porto):
    rows = np.arange(len(porto))
    pred = od_cross_fitted(porto, rows, "linear", folds=5)
    order = np.argsort(porto.start_ts, kind="stable")
    first = order[:10]  # the earliest block
    alone = OdRegressor("linear").fit(porto, order[10:]).predict(porto, first)
    np.testing.assert_allclose(pred[first], alone)
    in_sample = OdRegressor("linear").fit(porto, rows).predict(porto, first)
    assert not np.allclose(pred[first], in_sample)
