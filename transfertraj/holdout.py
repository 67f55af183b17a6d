"""Hold out what a serving task predicts from complete trips, and score the answers against it.

    request, truth = split(points, "tp")                 # complete trips in, what the model may see out
    answers = model.predict(request, params={"task": "tp"})
    scored = score(answers, truth, "tp")                 # + true_lon, true_lat, error_m per hidden point
    trips, mean = trip_errors(scored, "tp")              # per trip and overall mean error

A request (transfertraj.serving) holds only what the model may see, so its answers cannot be checked.
Given complete trips (a recorded drive), this module hides exactly what the task asks for, so the error
is measured against what was really driven:

| task  | the model sees                               | held out (truth)                              |
|-------|----------------------------------------------|-----------------------------------------------|
| tp    | all points but the last 5                    | the last 5 points                             |
| tr    | every mu-th point (from the first)           | the points between them (a tail after the     |
|       |                                              | last kept point is dropped: nothing asks it)  |
| odtte | origin and destination rows (their positions)| the travel time; the route between, to draw   |

The kept points keep their positions in the trip, so an answer's `point` (its index in the trajectory
the serving code expands) is the index of the held-out row it predicts: TP's k-th future point is
index n_seen - 1 + k, TR's gap points are index i * mu + k. Pure pandas/numpy: no model, no I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfertraj.core.constants import TP_FUTURE
from transfertraj.core.geo import haversine_m

COLUMNS = ("trip_id", "ts", "lon", "lat")


class HoldoutError(ValueError):
    """A trip too short to hold anything out for the task; the message names it."""


def _sorted(points: pd.DataFrame) -> pd.DataFrame:
    df = points.loc[:, list(COLUMNS)].copy()
    df["trip_id"] = df["trip_id"].astype(str)
    df = df.sort_values(["trip_id", "ts"], kind="stable").reset_index(drop=True)
    df["point"] = df.groupby("trip_id", sort=False).cumcount().astype(np.int64)
    return df


def split(points: pd.DataFrame, task: str, mu: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Complete trips (trip_id, ts, lon, lat) -> (request rows for the model, truth rows).

    Both carry `point`, the row's index in its trip. For odtte the truth is every row of the trip (the
    route, for drawing) and the travel time is its last ts minus its first."""
    df = _sorted(points)
    n = df.groupby("trip_id", sort=False)["point"].transform("size").to_numpy()
    pos = df["point"].to_numpy()
    if task == "tp":
        need, seen = TP_FUTURE + 1, pos < n - TP_FUTURE
    elif task == "tr":
        need = mu + 1
        usable = (n - 1) // mu * mu  # index of the last kept point
        seen = (pos % mu == 0) & (pos <= usable)
        df = df[pos <= usable]
        seen = seen[pos <= usable]
        n = n[pos <= usable]
    elif task == "odtte":
        need, seen = 2, np.ones(len(df), bool)
    else:
        raise HoldoutError(f"unknown task {task!r}; use tp, tr or odtte")
    short = df.loc[n < need, "trip_id"].unique()
    if len(short):
        raise HoldoutError(
            f"trip {short[0]}: holding out for {task} needs at least {need} points"
            + (f" (mu={mu})" if task == "tr" else "")
            + f"; {len(short)} trip(s) are shorter"
        )
    request = df[seen].reset_index(drop=True)
    truth = df if task == "odtte" else df[~seen]
    return request, truth.reset_index(drop=True)


def true_travel_min(truth: pd.DataFrame) -> pd.Series:
    """trip_id -> minutes from the first to the last row of the trip."""
    g = truth.groupby("trip_id", sort=False)["ts"]
    return (g.max() - g.min()) / 60.0


def score(answers: pd.DataFrame, truth: pd.DataFrame, task: str) -> pd.DataFrame:
    """The answers with the truth beside them: tp/tr add true_lon, true_lat, error_m (haversine metres)
    per predicted point; odtte adds true_travel_time_min and error_min (absolute)."""
    out = answers.copy()
    out["trip_id"] = out["trip_id"].astype(str)
    if task == "odtte":
        true = true_travel_min(truth).rename("true_travel_time_min")
        out = out.merge(true, left_on="trip_id", right_index=True, how="left")
        out["error_min"] = (out["travel_time_min"] - out["true_travel_time_min"]).abs()
        return out
    true = truth[["trip_id", "point", "lon", "lat"]].rename(columns={"lon": "true_lon", "lat": "true_lat"})
    out = out.merge(true, on=["trip_id", "point"], how="left")
    out["error_m"] = haversine_m(out["pred_lon"], out["pred_lat"], out["true_lon"], out["true_lat"])
    return out


def error_column(task: str) -> str:
    return "error_min" if task == "odtte" else "error_m"


def trip_errors(scored: pd.DataFrame, task: str) -> tuple[pd.DataFrame, float]:
    """(per trip: trip_id, n, mean error; the mean over every scored point or trip).

    The overall figure is the mean absolute error over all predicted points (tp/tr, metres) or trips
    (odtte, minutes), not a mean of trip means: a long TR trip weighs by its number of gaps."""
    col = error_column(task)
    per_trip = scored.groupby("trip_id", sort=False)[col].agg(["size", "mean"]).reset_index()
    per_trip.columns = ["trip_id", "n", col]
    return per_trip, float(scored[col].mean())
