"""Task metrics: haversine distance errors in metres (TP, TR) and travel-time errors in minutes (OD-TTE).

from transfertraj.model.metrics import distance_errors, minutes_errors, task_metrics
task_metrics(predictions_df, "tp")    # {"rmse_m": .., "mae_m": .., "n": ..}
"""

from __future__ import annotations

import numpy as np

from transfertraj.core.geo import haversine_m


def distance_errors(pred_lonlat, true_lonlat) -> dict:
    """RMSE and MAE of the haversine distance, metres; inputs (n, 2) lon, lat."""
    p, t = np.asarray(pred_lonlat, dtype=np.float64), np.asarray(true_lonlat, dtype=np.float64)
    d = haversine_m(p[:, 0], p[:, 1], t[:, 0], t[:, 1])
    if d.size == 0:
        return {"rmse_m": float("nan"), "mae_m": float("nan"), "n": 0}
    return {"rmse_m": float(np.sqrt(np.mean(d**2))), "mae_m": float(np.mean(d)), "n": int(d.size)}


def minutes_errors(pred_min, true_min) -> dict:
    """RMSE and MAE in minutes, MAPE in % (over true values > 0)."""
    p, t = np.asarray(pred_min, dtype=np.float64), np.asarray(true_min, dtype=np.float64)
    if p.size == 0:
        return {"rmse_min": float("nan"), "mae_min": float("nan"), "mape_pct": float("nan"), "n": 0}
    e = p - t
    pos = t > 0
    mape = float(np.mean(np.abs(e[pos]) / t[pos]) * 100) if pos.any() else float("nan")
    return {
        "rmse_min": float(np.sqrt(np.mean(e**2))),
        "mae_min": float(np.mean(np.abs(e))),
        "mape_pct": mape,
        "n": int(p.size),
    }


def task_metrics(predictions, task: str) -> dict:
    """Metrics of a task from `transfertraj.model.predict.predict` output (rows with scored == True)."""
    s = predictions[predictions["scored"]]
    if task == "od":
        return minutes_errors(s["pred_minutes"], s["true_minutes"])
    return distance_errors(s[["pred_lon", "pred_lat"]].to_numpy(), s[["true_lon", "true_lat"]].to_numpy())
