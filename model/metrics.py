"""Task metrics: haversine distance errors in metres (TP, TR) and travel-time errors in minutes (OD-TTE).

    from transfertraj.model.metrics import distance_errors, minutes_errors, task_metrics, trip_sums, sums_metrics
    task_metrics(predictions_df, "tp")          # {"rmse_m": .., "mae_m": .., "n": ..}
    sums = trip_sums(trip_id, error_m)         # per-trajectory sums: the evaluation's bootstrap unit
    sums_metrics("tp", sums)                   # {"rmse_m": .., "mae_m": .., "n_trajectories": ..}

One formula: every metric is computed from sums of squared, absolute and absolute-percentage errors
(`_from_sums`), whether the errors arrive point by point or already summed per trajectory (the
evaluation keeps per-trajectory sums because its bootstrap resamples trajectories, not points).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfertraj.core.geo import haversine_m


def _from_sums(unit: str, sse: float, sae: float, n: float, ape: float = 0.0, ape_n: float = 0.0) -> dict:
    """RMSE and MAE in `unit` ("m" or "min"), and MAPE % (over true values > 0) for minutes."""
    nan = float("nan")
    out = {f"rmse_{unit}": float(np.sqrt(sse / n)) if n else nan, f"mae_{unit}": float(sae / n) if n else nan}
    if unit == "min":
        out["mape_pct"] = float(ape / ape_n) if ape_n else nan
    return out


def _percent_errors(err: np.ndarray, true_min: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(absolute % error, 1 where defined): a travel time of 0 has no percentage error."""
    pos = true_min > 0
    return np.where(pos, np.abs(err) / np.where(pos, true_min, 1.0) * 100, 0.0), pos.astype(np.float64)


def distance_errors(pred_lonlat, true_lonlat) -> dict:
    """RMSE and MAE of the haversine distance, metres; inputs (n, 2) lon, lat."""
    p, t = np.asarray(pred_lonlat, dtype=np.float64), np.asarray(true_lonlat, dtype=np.float64)
    d = haversine_m(p[:, 0], p[:, 1], t[:, 0], t[:, 1]) if p.size else np.zeros(0)
    return {**_from_sums("m", np.sum(d**2), np.sum(np.abs(d)), d.size), "n": int(d.size)}


def minutes_errors(pred_min, true_min) -> dict:
    """RMSE and MAE in minutes, MAPE in % (over true values > 0)."""
    p, t = np.asarray(pred_min, dtype=np.float64), np.asarray(true_min, dtype=np.float64)
    e = p - t
    ape, ape_n = _percent_errors(e, t)
    return {**_from_sums("min", np.sum(e**2), np.sum(np.abs(e)), e.size, ape.sum(), ape_n.sum()), "n": int(p.size)}


def task_metrics(predictions, task: str) -> dict:
    """Metrics of a task from `transfertraj.model.predict.predict` output (rows with scored == True)."""
    s = predictions[predictions["scored"]]
    if task == "od":
        return minutes_errors(s["pred_minutes"], s["true_minutes"])
    return distance_errors(s[["pred_lon", "pred_lat"]].to_numpy(), s[["true_lon", "true_lat"]].to_numpy())


def trip_sums(trip_id, err, *, true_minutes=None) -> pd.DataFrame:
    """Per-trajectory sums of one method's errors: trip_id, sse, sae, n (and ape, ape_n for OD, where
    `err` is predicted minus true minutes). Sorted by trip_id, so two methods pair row by row."""
    err = np.asarray(err, dtype=np.float64)
    df = pd.DataFrame({"trip_id": np.asarray(trip_id, dtype=object), "sse": err**2, "sae": np.abs(err), "n": 1.0})
    if true_minutes is not None:
        df["ape"], df["ape_n"] = _percent_errors(err, np.asarray(true_minutes, dtype=np.float64))
    return df.groupby("trip_id", sort=True).sum().reset_index()


def sums_metrics(task: str, sums: pd.DataFrame) -> dict:
    """RMSE, MAE (metres for TP/TR, minutes and MAPE % for OD) and trajectories scored, from `trip_sums`;
    {} when nothing was scored."""
    n = sums["n"].sum()
    if n == 0:
        return {}
    unit = "min" if task == "od" else "m"
    extra = (sums["ape"].sum(), sums["ape_n"].sum()) if unit == "min" else ()
    return {**_from_sums(unit, sums["sse"].sum(), sums["sae"].sum(), n, *extra), "n_trajectories": int(len(sums))}
