"""Task metrics: haversine distance errors in metres (TP, TR) and travel-time errors in minutes (OD-TTE).

    from model.metrics import distance_errors, minutes_errors, task_metrics
    task_metrics(predictions_df, "tp")    # {"rmse_m": .., "mae_m": .., "n": ..}
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)


def haversine_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance in metres between WGS-84 points given in degrees (broadcasts)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lon1, lat1, lon2, lat2))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


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
    return {"rmse_min": float(np.sqrt(np.mean(e**2))), "mae_min": float(np.mean(np.abs(e))), "mape_pct": mape, "n": int(p.size)}


def task_metrics(predictions, task: str) -> dict:
    """Metrics of a task from `model.train.predict` output (rows with scored == True)."""
    s = predictions[predictions["scored"]]
    if task == "od":
        return minutes_errors(s["pred_minutes"], s["true_minutes"])
    return distance_errors(s[["pred_lon", "pred_lat"]].to_numpy(), s[["true_lon", "true_lat"]].to_numpy())
