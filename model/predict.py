"""Predictions of a trained model under a task's mask, and their metrics.

    from transfertraj.model.predict import predict, evaluate
    preds = predict("var/ckpt/porto/best.pt", features_df, "tp", split="test")   # one row per hidden point
    evaluate("var/ckpt/porto/best.pt", features_df, "tp", split="test")          # {"rmse_m": .., "n": ..}

Needs the checkpoint and the network only, not the training loop: registry, serving and evaluation
import this module, `transfertraj.model.train` imports none of it.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from transfertraj.core.constants import MAX_POINTS
from transfertraj.core.geo import haversine_m
from transfertraj.model.checkpoint import check_compatible, load_model
from transfertraj.model.coordinates import MetricToLonLat
from transfertraj.model.device import limit_threads, resolve_device
from transfertraj.model.masking import scored
from transfertraj.model.metrics import task_metrics
from transfertraj.model.trajectory_data import (
    Collator,
    TaxonomyMismatch,
    TrajectoryDataset,
    as_data,
    chronological_split,
    eligible,
    to_device,
)
from transfertraj.model.transfertraj import TransferTraj

log = logging.getLogger("transfertraj.model")


def length_batches(n_points: np.ndarray, *, batch_size: int, max_tokens: int | None) -> list[np.ndarray]:
    """Positions 0..len(n_points)-1 grouped into batches. Without `max_tokens`: in order, `batch_size`
    per batch. With it: by length, a batch closed when its padded size (rows x longest) would exceed
    `max_tokens`, so short trips are not padded to the longest of the request.

    Why: attention runs over the padded (B, L) grid; 64 real Porto trips (6-125 points) padded to 125
    are 3x the real tokens. Each trajectory's outputs depend on its own points only (padded keys are
    masked), so the grouping changes the cost, not the answers (tests/transfertraj/test_serve.py)."""
    if max_tokens is None:
        return [np.arange(s, min(s + batch_size, len(n_points))) for s in range(0, len(n_points), batch_size)]
    order = np.argsort(n_points, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):  # lengths ascend: the last row of a batch is its longest
        if end - start > batch_size or (end - start) * n_points[order[end - 1]] > max_tokens:
            if end - 1 > start:
                batches.append(order[start : end - 1])
                start = end - 1
    batches.append(order[start:])
    return [b for b in batches if len(b)]


def batches_in_parallel(answered, batches: list[np.ndarray], workers: int) -> list:
    """`answered` over `batches`, in order; with several workers and batches, on that many threads of one
    torch thread each.

    Why: a serving request of 64 trips is three or four batches of small tensors, and torch's intra-op
    threads barely split such operations (a 64-trip TP request took as long on 2 threads as on 1), while
    whole batches on separate cores do. torch releases the GIL inside its operations, and the threads
    only read the network's weights. Each new thread takes torch's thread count when it first computes,
    so the count is 1 while the pool runs and restored after."""
    if workers <= 1 or len(batches) <= 1:
        return [answered(b) for b in batches]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(workers, len(batches))) as pool:
            return list(pool.map(answered, batches))
    finally:
        torch.set_num_threads(previous)


@torch.inference_mode()
def predict(
    checkpoint_or_model,
    features_df,
    task: str,
    *,
    data_version=None,
    split: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
    max_points: int | None = MAX_POINTS,
    max_tokens: int | None = None,
    to_lonlat: dict | None = None,
    road_graphs: dict | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Predictions for every hidden point of `task`'s mask: one row per (trajectory, hidden point).

    Columns: trip_id, city, point (original index), masked_spatial, masked_temporal, scored (what the
    task is scored on), pred_/true_ x_m, y_m (metres from the first point), pred_/true_ lon, lat (the
    first point's metric position added back, then mapped to WGS-84), error_m (haversine),
    pred_/true_ minutes (minutes since start; for OD the travel time). split: None (all rows) or
    "train" / "val" / "test" of the chronological 8:1:1 split. max_tokens: group trajectories of
    similar length, at most that many padded points per batch (see length_batches); the rows come
    back in the same order either way. Only for the fixed masks (tp, tr*, od): the random
    pretraining mask draws per trajectory in batch order. to_lonlat: city -> callable((n, 2) metres)
    -> (n, 2) lon/lat, the inverse of the city's projection known exactly (serving holds one per city,
    built once at load); a city without one gets MetricToLonLat fitted on the input's own points, a
    least-squares fit that costs more than the forward pass of a small request. road_graphs: city ->
    model.road_paths.RoadGraph, read by a model with `road_input` on TR tasks (`tr_road_input`).
    workers: on CPU, batches run on that many threads of one torch thread each (batches_in_parallel); the
    answers are the same. The random pretraining mask draws in batch order, so it runs on one.
    """
    if isinstance(checkpoint_or_model, TransferTraj):
        model, state = checkpoint_or_model, None
    else:
        model, state = load_model(checkpoint_or_model)
    data = as_data(features_df, data_version, poi_dim=model.args.poi_dim, road_dim=model.args.road_dim)
    if state is not None:
        check_compatible(state, data)
    elif (data.poi_dim, data.road_dim) != (model.args.poi_dim, model.args.road_dim):
        raise TaxonomyMismatch(f"input POI/road dims {data.poi_dim}/{data.road_dim} differ from the model's")
    if split is None:
        indices = np.arange(len(data))
    else:
        indices = dict(zip(("train", "val", "test"), chronological_split(data)))[split]
    indices = eligible(data, indices, task, max_points)
    if model.args.road_input and task.startswith("tr"):
        data = tr_road_input(data, indices, int(task[2:]), road_graphs)
    dev = resolve_device(device)
    limit_threads()
    if next(model.parameters()).device != dev:  # .to() walks every module: a cost per call when serving
        model = model.to(dev)
    model.eval()
    point_city = np.repeat(data.city, data.n_points)  # (T,)
    known = to_lonlat or {}
    converters = {  # one inverse projection per city, fitted on its points (a CRS fact, not a label)
        c: known[c] if c in known else MetricToLonLat.fit(data.mxy[point_city == c], data.lonlat[point_city == c])
        for c in np.unique(data.city[indices])
    }
    if max_tokens is not None and task == "pretrain":
        raise ValueError("max_tokens regroups trajectories; the pretraining mask would then differ")
    collator = Collator(task=task, seed=seed)

    @torch.inference_mode()  # thread-local: a worker thread of the pool below needs its own
    def answered(positions: np.ndarray) -> dict:
        """One batch through the network: a dict of numpy columns of its hidden points."""
        ds = TrajectoryDataset(data, indices[positions])
        batch, _ = collator([ds[i] for i in range(len(ds))])
        with torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext():
            inputs = to_device(batch, dev)
            # only the hidden points' answers are read below: the last layer runs its feed-forward there only
            out, _ = model(inputs, outputs_at=inputs["mask_s"] | inputs["mask_t"])
        valid, ms, mt = batch["valid"].numpy(), batch["mask_s"].numpy(), batch["mask_t"].numpy()
        score_s, score_t = scored(task, ms, mt, valid)
        b, pos = np.nonzero(valid & (ms | mt))
        row = batch["row"].numpy()[b]
        point = batch["point_index"].numpy()[b, pos]
        pred_xy = out["xy"].float().cpu().numpy()[b, pos]
        return {
            "row": row,
            "point": point,
            "masked_spatial": ms[b, pos],
            "masked_temporal": mt[b, pos],
            "scored": score_s[b, pos] | score_t[b, pos],
            "pred_xy": pred_xy,
            "pred_minutes": out["time"].float().cpu().numpy()[b, pos, 3],
            "pmxy": batch["origin"].numpy()[b] + pred_xy,
            "flat": data.offsets[row] + point,  # index into the per-point arrays
            "order": positions[b],
        }

    batches = length_batches(data.n_points[indices], batch_size=batch_size, max_tokens=max_tokens)
    # per batch: a dict of numpy columns, one DataFrame at the end (a frame per batch cost more)
    parallel = workers if dev.type == "cpu" and task != "pretrain" else 1
    parts = batches_in_parallel(answered, batches, parallel)
    if not parts:
        raise ValueError(f"no trajectories qualify for task {task}")
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if max_tokens is not None:  # back to the order of `indices`; points stay in order within a trajectory
        keep = np.argsort(cols["order"], kind="stable")
        cols = {k: v[keep] for k, v in cols.items()}
    row, flat, pred_xy = cols["row"], cols["flat"], cols["pred_xy"]
    df = pd.DataFrame(
        {
            "trip_id": data.trip_id[row],
            "city": data.city[row],
            "point": cols["point"],
            "masked_spatial": cols["masked_spatial"],
            "masked_temporal": cols["masked_temporal"],
            "scored": cols["scored"],
            "pred_x_m": pred_xy[:, 0],
            "pred_y_m": pred_xy[:, 1],
            "true_x_m": data.xy[flat, 0],
            "true_y_m": data.xy[flat, 1],
            "pred_minutes": cols["pred_minutes"],
            "true_minutes": data.time[flat, 3],
        }
    )
    pred_ll = np.zeros((len(df), 2))
    city = data.city[row]
    for c, conv in converters.items():
        sel = city == c
        pred_ll[sel] = conv(cols["pmxy"][sel])
    true_ll = data.lonlat[flat]
    df["pred_lon"], df["pred_lat"] = pred_ll[:, 0], pred_ll[:, 1]
    df["true_lon"], df["true_lat"] = true_ll[:, 0], true_ll[:, 1]
    df["error_m"] = haversine_m(pred_ll[:, 0], pred_ll[:, 1], true_ll[:, 0], true_ll[:, 1])
    return df


def tr_road_input(data, rows, mu: int, road_graphs: dict | None):
    """`data` with the TR(mu) road offsets of `rows` (model/road_offsets.py), computed for the rows that lack
    them. A city without a graph in `road_graphs` gets 0 offsets (the model's "no road path"), said in a
    log line: its answers are then the model's without the map."""
    from transfertraj.model.road_offsets import computed_rows, with_road_offsets

    graphs = road_graphs or {}
    rows = np.asarray(rows, dtype=np.int64)
    missing = rows[~computed_rows(data, mu)[rows]]
    if len(missing) == 0:
        return data
    for city in np.unique(data.city[missing]):
        if city not in graphs:
            log.warning("the model reads road offsets but %s has no road graph: its TR road offsets are 0", city)
    return with_road_offsets(data, missing, mus=(mu,), graphs=graphs)


def evaluate(checkpoint_or_model, features_df, task: str, **kwargs) -> dict:
    """Task metrics (metres for TP/TR, minutes and % for OD) plus the number of trajectories scored."""
    return scored_metrics(predict(checkpoint_or_model, features_df, task, **kwargs), task)


def scored_metrics(preds: pd.DataFrame, task: str) -> dict:
    """evaluate()'s metrics of predict() rows (several predict() calls concatenated alike)."""
    return {**task_metrics(preds, task), "n_trajectories": int(preds.loc[preds["scored"], "trip_id"].nunique())}
