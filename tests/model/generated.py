"""Fixtures for the model tests: GENERATED features tables (synthetic drives, not real data) and tiny model settings.

The generated rows follow docs/features_contract.md: random-walk drives sampled every 15 s inside a
10 x 5 km box of UTM zone 29N (around Porto), lon/lat by pyproj, POI/road vectors that depend on
position, one trajectory departing every 10 minutes so the chronological split is known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyproj import Transformer

from transfertraj.model.transfertraj import ModelArgs

UTM29N = "EPSG:32629"
TAXONOMY = "generated-taxonomy-1"


def generated_features(
    n_traj: int = 40,
    *,
    seed: int = 0,
    min_points: int = 8,
    max_points: int = 30,
    poi_dim: int = 5,
    road_dim: int = 4,
    city: str = "generated_city",
    taxonomy_version: str = TAXONOMY,
    context_missing: bool = False,
    box=((528_000.0, 538_000.0), (4_552_000.0, 4_557_000.0)),
) -> pd.DataFrame:
    """A generated features table (synthetic drives), one row per trajectory."""
    rng = np.random.default_rng(seed)
    to_lonlat = Transformer.from_crs(UTM29N, "EPSG:4326", always_xy=True)
    base = pd.Timestamp("2024-03-04 06:00", tz="UTC")  # a Monday
    rows = []
    for i in range(n_traj):
        n = int(rng.integers(min_points, max_points + 1))
        speed = rng.uniform(5, 12)
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, n))
        step = np.stack([np.cos(heading), np.sin(heading)], 1) * speed * 15.0
        step[0] = 0
        mxy = np.array([rng.uniform(*box[0]), rng.uniform(*box[1])]) + np.cumsum(step, 0)
        lon, lat = to_lonlat.transform(mxy[:, 0], mxy[:, 1])
        start = base + pd.Timedelta(seconds=600 * i + int(rng.integers(0, 60)))
        ts = start.value // 10**9 + 15 * np.arange(n)
        local = pd.to_datetime(ts, unit="s", utc=True)
        cells = np.sin(mxy[:, :1] / 700.0 + np.arange(poi_dim - 1)) + np.cos(mxy[:, 1:] / 500.0)
        counts = np.maximum(np.round(3 * (cells + 1)), 0)
        poi = np.log1p(np.concatenate([counts, counts.sum(1, keepdims=True)], 1))
        road = np.abs(np.sin(mxy[:, :1] / 300.0 + np.arange(road_dim))) * 2.0
        rows.append(
            {
                "city": city,
                "date": start.strftime("%Y-%m-%d"),
                "trip_id": f"{city}-{i:05d}",
                "vehicle_key": f"v{i % 7}",
                "start_ts": start,
                "n_points": n,
                "lon": np.asarray(lon),
                "lat": np.asarray(lat),
                "ts": ts.astype(np.int64),
                "mx": mxy[:, 0],
                "my": mxy[:, 1],
                "x": (mxy[:, 0] - mxy[0, 0]).astype(np.float32),
                "y": (mxy[:, 1] - mxy[0, 1]).astype(np.float32),
                "weekday": local.weekday.to_numpy().astype(np.int32),
                "hour": local.hour.to_numpy().astype(np.int32),
                "minute": local.minute.to_numpy().astype(np.int32),
                "minutes_since_start": ((ts - ts[0]) / 60.0).astype(np.float32),
                "poi": None if context_missing else [v.astype(np.float32) for v in poi],
                "road": None if context_missing else [v.astype(np.float32) for v in road],
                "poi_missing": None if context_missing else [np.zeros(poi_dim, dtype=bool) for _ in range(n)],
                "road_missing": None if context_missing else np.zeros(n, dtype=bool),
                "context_missing": context_missing,
                "taxonomy_version": taxonomy_version,
            }
        )
    return pd.DataFrame(rows)


def tiny_args(**over) -> ModelArgs:
    kw = dict(
        poi_dim=5,
        road_dim=4,
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_experts=4,
        top_k=2,
        expert_hidden=32,
        ffn_hidden=64,
        mixer_heads=2,
        fourier_freqs=4,
    )
    kw.update(over)
    return ModelArgs(**kw)


TINY_TRAIN = dict(
    d_model=32,
    n_heads=2,
    n_experts=4,
    top_k=2,
    expert_hidden=32,
    ffn_hidden=64,
    mixer_heads=2,
    fourier_freqs=4,
    batch_size=8,
    progress=False,
)
