"""Bootstrap confidence intervals over trajectories: a mean, and paired error ratios of two methods.

    from transfertraj.model.bootstrap import mean_ci, paired_ratio_ci
    mean_ci(x)                                         # (mean, low, high), 95 % percentile interval
    paired_ratio_ci(sse_a, sse_b, n, kind="rmse")      # RMSE_a / RMSE_b with its interval

Errors of the points of one trajectory are correlated (TR scores many points per trajectory), so the
resampling unit is the trajectory: the inputs are per-trajectory sums, the same trajectories for both
methods (paired), and each replicate draws trajectories with replacement.
"""

from __future__ import annotations

import numpy as np


def _draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (n_boot, n) resampled trajectories


def mean_ci(x, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of x with a percentile bootstrap interval."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return (float("nan"),) * 3
    means = x[_draws(x.size, n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(lo), float(hi)


def paired_ratio_ci(
    a, b, n=None, *, kind: str = "rmse", n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Ratio of method a's error to method b's, over the same trajectories, with a percentile interval.

    kind="rmse": a, b are per-trajectory sums of squared errors, n the points per trajectory; the ratio
    is sqrt(sum a / sum n) / sqrt(sum b / sum n). kind="mae": a, b are sums of absolute errors (or of
    absolute percentage errors: the ratio is the same). n defaults to one point per trajectory.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = np.ones_like(a) if n is None else np.asarray(n, dtype=np.float64)
    if not (a.shape == b.shape == n.shape):
        raise ValueError("a, b and n must be per-trajectory arrays of one length")
    if kind not in ("rmse", "mae"):
        raise ValueError(f"kind must be 'rmse' or 'mae', got {kind!r}")
    if a.size == 0:
        return (float("nan"),) * 3

    def ratio(sa, sb):
        r = sa / np.where(sb > 0, sb, np.nan)  # the point counts cancel: both methods score the same points
        return np.sqrt(r) if kind == "rmse" else r

    idx = _draws(a.size, n_boot, seed)
    reps = ratio(a[idx].sum(axis=1), b[idx].sum(axis=1))
    reps = reps[np.isfinite(reps)]
    point = float(ratio(a.sum(), b.sum()))
    if reps.size == 0:
        return point, float("nan"), float("nan")
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return point, float(lo), float(hi)


def verdict(low: float, high: float, target: float | None = None) -> str:
    """A sentence on an interval of a ratio: is the difference from 1 (and from the target) real?"""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval (too few trajectories)"
    if high < 1:
        s = "lower than the reference: the difference is real (95 % CI below 1)"
    elif low > 1:
        s = "higher than the reference: the difference is real (95 % CI above 1)"
    else:
        s = "not distinguishable from the reference (95 % CI contains 1)"
    if target is not None:
        if high <= target:
            s += f"; target <= {target:g} met with confidence"
        elif low > target:
            s += f"; target <= {target:g} missed with confidence"
        else:
            s += f"; target <= {target:g} undecided (CI straddles it)"
    return s
