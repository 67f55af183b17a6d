"""The road offset of TR: how far the road path puts a hidden point from the straight line, an input the
model weighs (ModelArgs.road_input) like the curve offset.

    from transfertraj.model.road_offsets import road_offsets, with_road_offsets
    off = road_offsets(data, rows, mu=8, graphs={"porto": graph})        # (T, 2) float32 metres, NaN off `rows`
    data = with_road_offsets(data, rows, mus=(8,), graphs=graphs, cache_dir=settings.cache / "road_offsets")
    data.road_offsets[8]                                                   # what the Collator hands the model

Why an input and not the answer: the road-path baseline (model/road_paths.py) beats the straight line on
Porto (0.894 of it on May 2014 trips) but not everywhere (wrong snaps, U-turns, a GPS fix off the street),
and the model can learn where to trust it, point by point, the way it weighs the curve offset.

The offset of a hidden TR(mu) point is (its place on the road path) - (its place on the straight line),
both at the same fraction of the time between its kept neighbours, in metres: a difference, so the same in
the city's CRS and in the model's coordinates relative to the first point. It is 0 at kept points, where no
road path was found and in cities without a graph, and NaN on rows that were not computed (the Collator
reads NaN as 0; training keeps to the computed rows). It depends only on which points are kept, so any
mask that keeps exactly the TR(mu) points (also one drawn inside "multitask") gets it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from transfertraj.model.road_paths import RoadGraph, road_placements
from transfertraj.model.trajectory_data import TrajectoryData

log = logging.getLogger("transfertraj.model")


def road_offsets(data: TrajectoryData, rows, *, mu: int, graphs: dict[str, RoadGraph]) -> np.ndarray:
    """(T, 2) float32 over every point of `data`: the road offset of TR(mu) on `rows`, 0 at their kept points
    and where no road path was found, NaN on the other rows."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full((len(data.xy), 2), np.nan, np.float32)
    if rows.size:
        out[np.concatenate([np.arange(data.offsets[r], data.offsets[r + 1]) for r in rows])] = 0.0
    placed = road_placements(data, rows, mu=mu, graphs=graphs)
    out[data.offsets[placed.row] + placed.point] = placed.road - placed.line
    return out


def _cache_file(cache_dir: Path, data: TrajectoryData, rows: np.ndarray, city: str, mu: int) -> Path:
    """One file per (features version, city, mu, rows): the rows named by their trip ids."""
    digest = hashlib.sha256("\n".join(data.trip_id[rows].astype(str)).encode()).hexdigest()[:16]
    version = str(data.data_version).replace("/", "_").replace(":", "_")
    return Path(cache_dir) / f"features-{version}" / f"{city}-tr{mu}-{len(rows)}rows-{digest}.npz"


def with_road_offsets(
    data: TrajectoryData, rows, *, mus, graphs: dict[str, RoadGraph], cache_dir=None
) -> TrajectoryData:
    """`data` with the road offsets of TR(mu) for every mu of `mus` on `rows` (`data.road_offsets[mu]`,
    merged into those it already has). With `cache_dir`, each city's offsets are kept in an NPZ keyed by
    the features version, the city, mu and the rows, and read back instead of recomputed; a city without a
    graph is not cached (its offsets are 0)."""
    rows = np.asarray(rows, dtype=np.int64)
    merged = dict(data.road_offsets)
    for mu in mus:
        out = merged.get(mu)
        out = np.full((len(data.xy), 2), np.nan, np.float32) if out is None else out.copy()
        for city in np.unique(data.city[rows]):
            mine = rows[data.city[rows] == city]
            points = np.concatenate([np.arange(data.offsets[r], data.offsets[r + 1]) for r in mine])
            path = _cache_file(cache_dir, data, mine, str(city), mu) if cache_dir and city in graphs else None
            if path is not None and path.exists():
                out[points] = np.load(path)["offsets"]
                log.info("road offsets tr%d %s: %d rows read from %s", mu, city, len(mine), path)
                continue
            out[points] = road_offsets(data, mine, mu=mu, graphs=graphs)[points]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, offsets=out[points])
                log.info("road offsets tr%d %s: %d rows computed, cached in %s", mu, city, len(mine), path)
        merged[mu] = out
    return replace(data, road_offsets=merged)


def computed_rows(data: TrajectoryData, mu: int) -> np.ndarray:
    """(N,) bool: the rows whose TR(mu) road offsets are known (all False without any)."""
    off = data.road_offsets.get(mu)
    if off is None:
        return np.zeros(len(data), bool)
    return ~np.isnan(off[data.offsets[:-1], 0])
