"""Non-learned and classical baselines for TP, TR and OD-TTE (numpy / scikit-learn, no torch).

    from transfertraj.model.baselines import tp_last_known, tp_constant_velocity, tr_linear_interpolation, OdRegressor
    dest = tp_constant_velocity(data, rows)                  # (n, 2) metres in the city CRS
    recovered = tr_linear_interpolation(data, rows, mu=8)    # DataFrame: row, point, pred_mx, pred_my
    od = OdRegressor("linear").fit(data, train_rows)         # fitted on the train split only
    minutes = od.predict(data, test_rows)

They see exactly what the model's masks show it (model/masking.py) and nothing more, except where noted:
- TP hides the last 5 points' positions; their times are the question (model/masking.py). Last known point
  predicts the last observed position; constant velocity extrapolates the last observed step's velocity
  (metres per minute) to the destination's time (per step where times do not increase).
- TR keeps every mu-th point plus the first and last. Linear interpolation between the kept neighbours,
  by time (`by="time"`: the hidden points' timestamps, which the model sees too) or by point index
  (`by="index"`).
- OD-TTE regresses the travel time in minutes on distance, departure hour and weekday (`od_features`),
  fitted on a train split, or cross-fitted on the scored trajectories themselves when there is none
  (`od_cross_fitted`: scoring a given model on a new delivery).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfertraj.core.constants import TP_FUTURE
from transfertraj.model.trajectory_data import TrajectoryData


def _points(data: TrajectoryData, row: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = data.offsets[row], data.offsets[row + 1]
    return data.mxy[a:b], data.time[a:b, 3]  # (n, 2) metres, (n,) minutes since start


def tp_last_known(data: TrajectoryData, rows) -> np.ndarray:
    """(n, 2) metric destination: the last observed point (the one before the TP_FUTURE hidden ones)."""
    out = np.empty((len(rows), 2))
    for i, row in enumerate(rows):
        xy, _ = _points(data, int(row))
        out[i] = xy[len(xy) - TP_FUTURE - 1]
    return out


def tp_constant_velocity(data: TrajectoryData, rows, *, window: int = 1) -> np.ndarray:
    """(n, 2) metric destination: the last observed point plus the mean velocity of the last `window`
    observed steps times the time from the last observed point to the destination. Where those times do
    not increase, steps instead: TP_FUTURE times the mean step. With one observed point: the last known one."""
    out = np.empty((len(rows), 2))
    for i, row in enumerate(rows):
        xy, minutes = _points(data, int(row))
        last = len(xy) - TP_FUTURE - 1
        w = min(window, last)
        if w == 0:
            out[i] = xy[last]
            continue
        elapsed, ahead = float(minutes[last] - minutes[last - w]), float(minutes[-1] - minutes[last])
        if elapsed > 0 and ahead >= 0:
            out[i] = xy[last] + (xy[last] - xy[last - w]) * (ahead / elapsed)
        else:
            out[i] = xy[last] + TP_FUTURE * (xy[last] - xy[last - w]) / w
    return out


def tr_kept(n: int, mu: int) -> np.ndarray:
    """(n,) bool: the points TR keeps (the same rule as model.masking.tr_mask)."""
    kept = np.arange(n) % mu == 0
    kept[[0, n - 1]] = True
    return kept


def tr_linear_interpolation(data: TrajectoryData, rows, *, mu: int, by: str = "time") -> pd.DataFrame:
    """Every hidden point of TR(mu) interpolated between its kept neighbours.

    Returns one row per hidden point: row, point (index in the trajectory), pred_mx, pred_my.
    by="time": weights from minutes since start (equal times fall back to the index); "index": from indices.
    """
    if by not in ("time", "index"):
        raise ValueError(f"by must be 'time' or 'index', got {by!r}")
    parts = []
    for row in rows:
        xy, minutes = _points(data, int(row))
        n = len(xy)
        kept = tr_kept(n, mu)
        hidden = np.flatnonzero(~kept)
        if hidden.size == 0:
            continue
        k = np.flatnonzero(kept)
        axis = minutes.astype(np.float64) if by == "time" else np.arange(n, dtype=np.float64)
        if by == "time" and np.any(np.diff(axis[k]) <= 0):
            axis = np.arange(n, dtype=np.float64)  # duplicate timestamps: no time order to follow
        px = np.interp(axis[hidden], axis[k], xy[k, 0])
        py = np.interp(axis[hidden], axis[k], xy[k, 1])
        parts.append(pd.DataFrame({"row": int(row), "point": hidden, "pred_mx": px, "pred_my": py}))
    if not parts:
        return pd.DataFrame({"row": [], "point": [], "pred_mx": [], "pred_my": []})
    return pd.concat(parts, ignore_index=True)


OD_FEATURES = ("distance_km", "hour", "weekday")


def od_features(data: TrajectoryData, rows) -> np.ndarray:
    """(n, 3): straight-line origin-destination distance in km, departure hour (local, fractional), weekday."""
    rows = np.asarray(rows, dtype=np.int64)
    first, last = data.offsets[rows], data.offsets[rows + 1] - 1
    dist = np.linalg.norm(data.mxy[last] - data.mxy[first], axis=1) / 1000.0
    hour = data.time[first, 1] + data.time[first, 2] / 60.0
    return np.stack([dist, hour, data.time[first, 0]], axis=1).astype(np.float64)


def od_minutes(data: TrajectoryData, rows) -> np.ndarray:
    """(n,) true travel time in minutes (the last point's minutes since start)."""
    rows = np.asarray(rows, dtype=np.int64)
    return data.time[data.offsets[rows + 1] - 1, 3].astype(np.float64)


def _design_linear(X: np.ndarray) -> np.ndarray:
    """Distance linear; hour and weekday as cyclic (sin, cos) terms, so 23 h sits next to 0 h."""
    h = 2 * np.pi * X[:, 1] / 24.0
    w = 2 * np.pi * X[:, 2] / 7.0
    return np.stack([X[:, 0], np.sin(h), np.cos(h), np.sin(w), np.cos(w)], axis=1)


class OdRegressor:
    """Travel time from OD features: "linear" (least squares on distance, hour and weekday), "distance"
    (least squares on the distance alone) or "gbrt" (gradient-boosted trees on the three features).

    The distance-only line matters on a short sample: a chronological split puts the test trips at hours
    of day the training trips never had, and the hour terms then extrapolate.

    The tree settings are fixed in advance (no search): on about a thousand trips a deeper or longer
    model only fits noise.
    """

    def __init__(self, kind: str = "linear", *, seed: int = 0):
        if kind not in ("linear", "distance", "gbrt"):
            raise ValueError(f"kind must be 'linear', 'distance' or 'gbrt', got {kind!r}")
        self.kind, self.seed, self.model = kind, seed, None

    def _x(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "distance":
            return X[:, :1]
        return _design_linear(X) if self.kind == "linear" else X

    def fit(self, data: TrajectoryData, rows) -> OdRegressor:
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.linear_model import LinearRegression

        X, y = od_features(data, rows), od_minutes(data, rows)
        if len(y) < 2:
            raise ValueError("OD regression needs at least 2 training trajectories")
        if self.kind in ("linear", "distance"):
            self.model = LinearRegression()
        else:
            self.model = GradientBoostingRegressor(
                n_estimators=150,
                max_depth=3,
                learning_rate=0.05,
                subsample=0.8,
                min_samples_leaf=10,
                random_state=self.seed,
            )
        self.model.fit(self._x(X), y)
        return self

    def predict(self, data: TrajectoryData, rows) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the regressor first")
        return np.maximum(self.model.predict(self._x(od_features(data, rows))), 0.0)  # no negative durations


def od_cross_fitted(data: TrajectoryData, rows, kind: str = "linear", *, folds: int = 5) -> np.ndarray:
    """(n,) minutes for `rows`, each predicted by an `OdRegressor` fitted on the other folds only.

    For scoring on trajectories that have no train split of their own (a new delivery): the folds are
    consecutive blocks by departure time, so a trip is never predicted by a fit that saw it, and a fit
    sees mostly other hours of the delivery, as with a chronological split. The baseline still learns
    from the delivery it is scored on, which a trained model does not: it is a strong reference."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(data.start_ts[rows], kind="stable")
    pred = np.empty(len(rows))
    blocks = [b for b in np.array_split(order, min(folds, len(rows))) if b.size]
    if len(blocks) < 2:
        raise ValueError("OD cross-fitting needs at least 2 trajectories")
    for block in blocks:
        rest = np.setdiff1d(order, block, assume_unique=True)
        pred[block] = OdRegressor(kind).fit(data, rows[rest]).predict(data, rows[block])
    return pred
