"""Holding out what a task predicts: the kept rows are what the model may see, and the held-out rows
have the indices the serving code gives the points it asks for (checked against its expansion)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from transfertraj.core.geo import haversine_m
from transfertraj.holdout import HoldoutError, score, split, trip_errors
from transfertraj.serving import expand_for_task


def trips(lengths=(11, 8)) -> pd.DataFrame:
    """GENERATED drives: 15 s fixes heading north-east from two starts, rows shuffled."""
    rows = []
    for k, n in enumerate(lengths):
        for i in range(n):
            rows.append(
                {"trip_id": f"t{k}", "ts": 1_400_000_000 + 15 * i, "lon": -8.61 + 0.0004 * i, "lat": 41.15 + 0.0003 * i}
            )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)


def asked(request: pd.DataFrame, task: str, mu: int = 8) -> set[tuple[str, int]]:
    """(trip, index) of every point the serving code hides for the task."""
    exp = expand_for_task(request.sort_values(["trip_id", "ts"]).reset_index(drop=True), task, interval_s=15, mu=mu)
    return set(zip(exp.loc[~exp["observed"], "trip_id"], exp.loc[~exp["observed"], "idx"]))


def test_tp_holds_out_the_last_five_at_the_indices_serving_asks_for():
    request, truth = split(trips(), "tp")
    assert request.groupby("trip_id").size().to_dict() == {"t0": 6, "t1": 3}
    assert truth.groupby("trip_id")["point"].apply(list).to_dict() == {"t0": [6, 7, 8, 9, 10], "t1": [3, 4, 5, 6, 7]}
    assert request["ts"].max() < truth["ts"].max()  # the future is not in the request
    assert asked(request, "tp") == set(zip(truth["trip_id"], truth["point"]))


def test_tr_keeps_every_mu_th_point_and_drops_a_tail_nothing_asks_for():
    request, truth = split(trips((11, 9)), "tr", mu=4)
    assert request.groupby("trip_id")["point"].apply(list).to_dict() == {"t0": [0, 4, 8], "t1": [0, 4, 8]}
    assert truth.groupby("trip_id")["point"].apply(list).to_dict() == {
        "t0": [1, 2, 3, 5, 6, 7],
        "t1": [1, 2, 3, 5, 6, 7],
    }
    assert asked(request, "tr", mu=4) == set(zip(truth["trip_id"], truth["point"]))


def test_a_trip_too_short_is_named():
    with pytest.raises(HoldoutError, match="t1: holding out for tp needs at least 6 points"):
        split(trips((11, 5)), "tp")
    with pytest.raises(HoldoutError, match=r"mu=8"):
        split(trips((11, 8)), "tr", mu=8)


def test_score_measures_the_distance_to_the_held_out_point():
    request, truth = split(trips(), "tp")
    answers = truth[["trip_id", "point", "ts"]].copy()
    answers["pred_lon"] = truth["lon"].to_numpy()
    answers["pred_lat"] = truth["lat"].to_numpy() + np.where(truth["trip_id"] == "t0", 0.001, 0.0)  # t0 off by ~111 m
    scored = score(answers, truth, "tp")
    expected = haversine_m(0, 41.15, 0, 41.151)
    assert scored.loc[scored["trip_id"] == "t0", "error_m"].to_numpy() == pytest.approx(expected)
    assert (scored.loc[scored["trip_id"] == "t1", "error_m"] == 0).all()
    per_trip, mean = trip_errors(scored, "tp")
    assert per_trip.set_index("trip_id")["n"].to_dict() == {"t0": 5, "t1": 5}
    assert mean == pytest.approx(expected / 2)  # the mean over the 10 points


def test_odtte_scores_the_travel_time():
    request, truth = split(trips(), "odtte")
    assert len(request) == len(truth) == 19  # the model reads origin and destination; the route is for drawing
    answers = pd.DataFrame({"trip_id": ["t0", "t1"], "travel_time_min": [3.0, 1.0]})
    scored = score(answers, truth, "odtte").set_index("trip_id")
    assert scored["true_travel_time_min"].to_dict() == {"t0": 2.5, "t1": 1.75}  # 10 and 7 intervals of 15 s
    assert scored["error_min"].to_dict() == {"t0": 0.5, "t1": 0.75}
