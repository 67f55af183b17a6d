"""Source and target datasets for the transfer experiments, cut from one TrajectoryData.

    from transfertraj.model.transfer_data import subset, city_data, split_meridian, restrict_poi, covered_categories
    porto = city_data(data, "porto")
    west, east, meridian = split_meridian(porto)          # by each trip's origin, equal trip counts
    shared = covered_categories(porto) & covered_categories(sf)
    sf_shared = restrict_poi(sf, shared)                  # only the categories both sources cover

Every piece keeps its own chronological 8:1:1 split (model.trajectory_data.chronological_split is
applied to whatever is passed to training and prediction).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from transfertraj.model.trajectory_data import TrajectoryData


def subset(data: TrajectoryData, rows, *, name: str | None = None) -> TrajectoryData:
    """The trajectories `rows` (in that order) as a TrajectoryData of their own."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError(f"empty subset {name or ''}".strip())
    lengths = data.n_points[rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pts = np.concatenate([np.arange(data.offsets[r], data.offsets[r + 1]) for r in rows])
    meta = {**data.meta, "subset": name} if name else dict(data.meta)
    return replace(
        data,
        trip_id=data.trip_id[rows],
        city=data.city[rows],
        start_ts=data.start_ts[rows],
        offsets=offsets,
        xy=data.xy[pts],
        time=data.time[pts],
        mxy=data.mxy[pts],
        lonlat=data.lonlat[pts],
        poi=data.poi[pts],
        road=data.road[pts],
        poi_missing=data.poi_missing[pts],
        road_missing=data.road_missing[pts],
        context_missing=data.context_missing[rows],
        meta=meta,
        road_offsets={mu: off[pts] for mu, off in data.road_offsets.items()},
    )


def city_data(data: TrajectoryData, city: str) -> TrajectoryData:
    rows = np.flatnonzero(data.city == city)
    if rows.size == 0:
        raise ValueError(f"no trajectories of city {city!r} (cities: {sorted(set(data.city.tolist()))})")
    return subset(data, rows, name=city)


def split_meridian(data: TrajectoryData) -> tuple[TrajectoryData, TrajectoryData, float]:
    """(west, east, meridian): trips whose origin lies west / east of the median origin longitude."""
    origin_lon = data.lonlat[data.offsets[:-1], 0]
    meridian = float(np.median(origin_lon))
    west = np.flatnonzero(origin_lon < meridian)
    east = np.flatnonzero(origin_lon >= meridian)
    return subset(data, west, name="west"), subset(data, east, name="east"), meridian


def covered_categories(data: TrajectoryData, *, min_share: float = 0.01) -> np.ndarray:
    """(P,) bool: POI categories present (not missing) at >= min_share of the points that have context.

    The last column (the total) counts as covered when any category is."""
    has = ~data.context_missing[np.repeat(np.arange(len(data)), data.n_points)]
    if not has.any():
        return np.zeros(data.poi_dim, bool)
    share = (~data.poi_missing[has]).mean(axis=0)
    covered = share >= min_share
    covered[-1] = covered[:-1].any()
    return covered


def restrict_poi(data: TrajectoryData, keep: np.ndarray) -> TrajectoryData:
    """POI limited to the categories `keep` (P-1 categories + the total): the others become missing,
    and the total (last column, log1p of the count) is recomputed over the kept categories."""
    keep = np.asarray(keep, bool).copy()
    if keep.shape != (data.poi_dim,):
        raise ValueError(f"keep must have {data.poi_dim} flags")
    cats = keep[:-1]
    poi = data.poi.copy()
    missing = data.poi_missing.copy()
    poi[:, :-1][:, ~cats] = 0.0
    missing[:, :-1][:, ~cats] = True
    counts = np.expm1(np.where(missing[:, :-1], 0.0, poi[:, :-1]))
    poi[:, -1] = np.log1p(counts.sum(axis=1))
    missing[:, -1] = missing[:, :-1].all(axis=1)
    poi[missing] = 0.0
    return replace(
        data, poi=poi.astype(np.float32), poi_missing=missing, meta={**data.meta, "poi_categories": int(cats.sum())}
    )
