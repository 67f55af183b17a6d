"""One masking scheme: pretraining and every task differ only in which modalities of which points are hidden.

    from transfertraj.model.masking import mask_for
    m = mask_for("tr8")(n_points, rng)      # PointMask(keep, spatial, temporal)

A mask says which points enter the model (`keep`, original indices) and, for each kept point, whether
its spatial modality (relative metres, and with it POI and road) and/or its temporal modality (the
four temporal features) is hidden. Hiding both is a fully masked point.

Tasks: "pretrain", "tp" (last 5 points), "tr4" / "tr8" / "tr16" (keep every mu-th point plus first and
last), "od" (first and last point only, last one's time hidden: the travel time), and "multitask" (each
trajectory draws one of the others: one set of weights fine-tuned for every task the served model answers).

TP and TR hide positions, not times: "where is the vehicle at 12:03:15?" names the time it asks about. A
served request knows it (the TP horizon, the TR gap's timestamps), the time-aware baselines read it
(interpolation by time, constant velocity per second), and without it the five hidden TP points were
identical tokens: the model (weights/base/README.md, first version) answered TP like the last known point.
The paper says "mask the last 5 points" without naming the kind; pretraining keeps its full masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from transfertraj.core.constants import TP_FUTURE

TASKS = ("pretrain", "tp", "tr4", "tr8", "tr16", "trmix", "od", "multitask")
MIN_POINTS = {"pretrain": 2, "tp": TP_FUTURE + 1, "tr4": 3, "tr8": 3, "tr16": 3, "trmix": 3, "od": 2, "multitask": 2}
MIXTURE = ("pretrain", "tp", "tr4", "tr8", "tr16", "od")  # what "multitask" draws from, equally
TR_MIXTURE = ("tr4", "tr8", "tr16")  # what "trmix" draws from, equally: the served TR takes any of these mu


@dataclass(frozen=True)
class PointMask:
    keep: np.ndarray  # (m,) int: original indices of the points the model sees, in order
    spatial: np.ndarray  # (m,) bool: spatial modality (and POI, road) hidden
    temporal: np.ndarray  # (m,) bool: temporal modality hidden


MaskFn = Callable[[int, np.random.Generator], PointMask]


def _all(n: int) -> np.ndarray:
    return np.arange(n)


def pretrain_mask(
    n: int,
    rng: np.random.Generator,
    *,
    segment_ratio: float = 0.2,
    segment_mask_ratio: float = 0.4,
    point_mask_ratio: float = 0.2,
) -> PointMask:
    """Cut into ceil(0.2 n) random segments, hide 40 % of them fully; 20 % of the other points get a
    spatial or a temporal mask (50/50). Counts are rounded half up."""
    n_seg = max(1, math.ceil(segment_ratio * n))
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n_seg - 1, n - 1), replace=False))
    seg_id = np.searchsorted(cuts, np.arange(n), side="right")  # (n,) segment of each point
    n_hidden = min(int(math.floor(segment_mask_ratio * n_seg + 0.5)), n_seg - 1)  # always keep one segment
    hidden_segs = rng.choice(n_seg, size=n_hidden, replace=False)
    full = np.isin(seg_id, hidden_segs)
    rest = np.flatnonzero(~full)
    n_point = int(math.floor(point_mask_ratio * len(rest) + 0.5))
    picked = rng.choice(rest, size=n_point, replace=False)
    as_spatial = rng.random(n_point) < 0.5
    spatial, temporal = full.copy(), full.copy()
    spatial[picked[as_spatial]] = True
    temporal[picked[~as_spatial]] = True
    return PointMask(_all(n), spatial, temporal)


def tp_mask(n: int, rng: np.random.Generator | None = None) -> PointMask:
    """Trajectory prediction: the last 5 points' positions hidden, their times given; needs at least 6 points."""
    if n < MIN_POINTS["tp"]:
        raise ValueError(f"TP needs at least {MIN_POINTS['tp']} points, got {n}")
    hidden = np.arange(n) >= n - TP_FUTURE
    return PointMask(_all(n), hidden, np.zeros(n, bool))


def tr_mask(n: int, rng: np.random.Generator | None = None, *, mu: int = 8) -> PointMask:
    """Trajectory recovery: keep every mu-th point plus the first and the last; the others' positions are
    hidden, their times given."""
    kept = np.arange(n) % mu == 0
    kept[[0, n - 1]] = True
    return PointMask(_all(n), ~kept, np.zeros(n, bool))


def od_mask(n: int, rng: np.random.Generator | None = None) -> PointMask:
    """OD travel time: only the first and last point enter; the last one's time is hidden.

    Dropping the middle points (rather than hiding them) matters: their count would reveal the duration.
    """
    if n < 2:
        raise ValueError("OD needs at least 2 points")
    return PointMask(np.array([0, n - 1]), np.array([False, False]), np.array([False, True]))


def multitask_mask(n: int, rng: np.random.Generator) -> PointMask:
    """One mask of MIXTURE per trajectory, drawn equally among those the trajectory is long enough for.

    Why: the paper fine-tunes one model per task ("full"); the registered model answers TP, TR and OD-TTE
    with one set of weights, so it is fine-tuned on all their masks at once. A pretrained-only model ("wo
    ft") learned to recover random segments, and on this data it answered TP like the last known point and
    TR like linear interpolation (weights/base/README.md). The pretraining mask stays in the mixture so the
    representation keeps what it learned.
    """
    options = [t for t in MIXTURE if n >= MIN_POINTS[t]]
    return mask_for(options[int(rng.integers(len(options)))])(n, rng)


def trmix_mask(n: int, rng: np.random.Generator) -> PointMask:
    """One TR mask of TR_MIXTURE per trajectory, drawn equally.

    Why: a served TR request names its mu (4, 8 or 16), and the model that answers TR (a per-task
    fine-tune) answers all three; fine-tuned on TR8 alone it does worse at mu=16 than it could."""
    return mask_for(TR_MIXTURE[int(rng.integers(len(TR_MIXTURE)))])(n, rng)


def scored_tasks(task: str) -> tuple[str, ...]:
    """The single-mask tasks a model trained on `task`'s mask is scored on.

    Why: a mixture ("trmix", "multitask") has no metric of its own; its model answers each task it drew from,
    so it is judged on each of them (the pretraining mask's recovery is not a served task)."""
    if task == "trmix":
        return TR_MIXTURE
    if task == "multitask":
        return tuple(t for t in MIXTURE if t != "pretrain")
    return (task,)


def mask_for(task: str) -> MaskFn:
    if task == "multitask":
        return multitask_mask
    if task == "trmix":
        return trmix_mask
    if task == "pretrain":
        return pretrain_mask
    if task == "tp":
        return tp_mask
    if task in ("tr4", "tr8", "tr16"):
        mu = int(task[2:])
        return lambda n, rng: tr_mask(n, rng, mu=mu)
    if task == "od":
        return od_mask
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def scored(task: str, mask_s: np.ndarray, mask_t: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which points of a padded batch a task is scored on: (spatial (B, L) bool, temporal (B, L) bool).

    TP: the destination's position; TR: every recovered position; OD: the destination's minutes since
    start (the travel time); pretraining: everything hidden.
    """
    L = valid.shape[1]
    last = np.arange(L)[None, :] == (valid.sum(axis=1) - 1)[:, None]  # (B, L) last real point
    none = np.zeros_like(valid)
    if task == "tp":
        return last & mask_s & valid, none
    if task.startswith("tr"):
        return mask_s & valid, none
    if task == "od":
        return none, last & mask_t & valid
    return mask_s & valid, mask_t & valid
