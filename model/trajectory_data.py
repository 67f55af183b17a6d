"""Rows of the `features` table -> a torch Dataset and a collate function producing padded tensors.

    from transfertraj.model.trajectory_data import load_features, chronological_split, TrajectoryDataset, Collator
    data = load_features(features_df, data_version=12)       # pandas DataFrame or pyarrow Table
    train_idx, val_idx, test_idx = chronological_split(data)   # 8:1:1 by start_ts
    ds = TrajectoryDataset(data, train_idx)
    batch, targets = Collator(task="pretrain", seed=0)([ds[i] for i in range(4)])

The columns are those of docs/features_contract.md. `data_version` is the Delta table version the
rows were read at; it travels into every checkpoint, with the facts the rows do not carry but a model
depends on (`with_city_facts`: each city's radius phi and metric CRS, from its city config).
`read_features(path, version=7, cities=["porto"])` reads a Delta folder through
`transfertraj.feature_store.reader` (the lake's one reader) or a plain Parquet file/folder for the CLI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from transfertraj.model.masking import MIN_POINTS, PointMask, mask_for, tr_mask

log = logging.getLogger("transfertraj.model")

TEMPORAL_COLUMNS = ("weekday", "hour", "minute", "minutes_since_start")
# How this reader hands positions to the model: x, y in metres relative to a trajectory's first point,
# measured in the city's metric CRS (UTM of the centre, features contract), lon/lat WGS-84. A checkpoint
# records it, so a later change of convention is refused instead of silently shifting every position.
COORDINATES = "xy-metres-from-first-point/city-metric-crs/wgs84"


class TaxonomyMismatch(ValueError):
    """Input built with another POI taxonomy (or other POI/road dimensions) than the model's."""


@dataclass
class TrajectoryData:
    """All trajectories of a features table, per-point values flattened with row offsets."""

    trip_id: np.ndarray  # (N,) str
    city: np.ndarray  # (N,) str
    start_ts: np.ndarray  # (N,) int64 ns since epoch, UTC
    offsets: np.ndarray  # (N+1,) int64: points of row i are offsets[i]:offsets[i+1]
    xy: np.ndarray  # (T, 2) float32 metres relative to the first point
    time: np.ndarray  # (T, 4) float32 weekday, hour, minute, minutes since start
    mxy: np.ndarray  # (T, 2) float64 metres in the city's metric CRS
    lonlat: np.ndarray  # (T, 2) float64 WGS-84
    poi: np.ndarray  # (T, P) float32
    road: np.ndarray  # (T, R) float32
    poi_missing: np.ndarray  # (T, P) bool: category not covered at this point (never read as zero)
    road_missing: np.ndarray  # (T,) bool: no road data around this point
    context_missing: np.ndarray  # (N,) bool
    taxonomy_version: str
    data_version: int | str | None
    meta: dict = field(default_factory=dict)
    city_facts: dict = field(default_factory=dict)  # city -> {"phi_m", "crs"} from its config (with_city_facts)
    # mu -> (T, 2) float32 metres: the TR(mu) road offset of each point, NaN on rows not computed
    # (model/road_offsets.py: with_road_offsets); empty unless a model with road_input needs it
    road_offsets: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.trip_id)

    @property
    def n_points(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def poi_dim(self) -> int:
        return self.poi.shape[1]

    @property
    def road_dim(self) -> int:
        return self.road.shape[1]

    @property
    def phi_m(self) -> float | list[float] | None:
        """The radius phi (metres) of the POI/road densities of the cities that have context: one value,
        a sorted list when cities differ, None when unknown (no city facts) or irrelevant (no context)."""
        with_context = set(self.city[~self.context_missing].tolist())
        phis = sorted({float(f["phi_m"]) for c, f in self.city_facts.items() if c in with_context and "phi_m" in f})
        if not phis:
            return None
        return phis[0] if len(phis) == 1 else phis

    def describe(self) -> dict:
        """What a checkpoint records about its training data."""
        cities = sorted(set(self.city.tolist()))
        return {
            "data_version": self.data_version,
            "taxonomy_version": self.taxonomy_version,
            "poi_dim": self.poi_dim,
            "road_dim": self.road_dim,
            "phi_m": self.phi_m,
            "coordinates": COORDINATES,
            "crs": {c: self.city_facts[c]["crs"] for c in cities if "crs" in self.city_facts.get(c, {})},
            "cities": cities,
            "n_trajectories": len(self),
            **self.meta,
        }


def _flat(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """list<scalar> column -> (values, offsets); a null row counts as empty."""
    arr = col.combine_chunks()
    if pa.types.is_null(arr.type):  # an all-null column (pandas None everywhere)
        return np.zeros(0), np.zeros(len(arr) + 1, dtype=np.int64)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return arr.flatten().to_numpy(zero_copy_only=False), offsets


def _nested(
    col: pa.ChunkedArray, offsets: np.ndarray, dim: int | None, name: str, dtype=np.float32, fill=0
) -> np.ndarray:
    """list<list<x>> (n_points, dim) per row -> (T, dim); a null or empty row is `fill` (no context)."""
    arr = col.combine_chunks()
    T = int(offsets[-1])
    if pa.types.is_null(arr.type):  # no row has context
        return np.full((T, dim or 0), fill, dtype=dtype)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0), dtype=np.int64)
    has = lengths > 0
    if has.any():
        inner = arr.filter(pa.array(has)).flatten()  # one list per point of the rows with context
        inner_len = np.asarray(pc.list_value_length(inner), dtype=np.int64)
        found = int(inner_len[0])
        if (inner_len != found).any():
            raise ValueError(f"column {name}: per-point vectors of different lengths")
        if dim is not None and dim != found:
            raise TaxonomyMismatch(f"column {name} has {found} values per point, expected {dim}")
        dim = found
        n = np.diff(offsets)
        if (lengths[has] != n[has]).any():
            raise ValueError(f"column {name}: row length differs from n_points")
        out = np.full((T, dim), fill, dtype=dtype)
        rows = np.repeat(has, n)  # (T,) points of the rows with context
        out[rows] = inner.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        return out
    return np.full((T, dim or 0), fill, dtype=dtype)


def _row_has(col: pa.ChunkedArray) -> np.ndarray:
    """(N,) bool: the row's list column is non-null and non-empty."""
    arr = col.combine_chunks()
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), bool)
    return np.asarray(pc.fill_null(pc.list_value_length(arr), 0)) > 0


def _poi_missing(table: pa.Table, offsets: np.ndarray, P: int, row_has_poi: np.ndarray) -> np.ndarray:
    """(T, P) bool from poi_missing, per point (array<array<boolean>>) or per trajectory (array<boolean>).

    Rows without any POI data are missing everywhere."""
    lengths = np.diff(offsets)
    col = table.column("poi_missing")
    out = np.repeat(~row_has_poi, lengths)[:, None] & np.ones((1, P), bool)  # (T, P)
    if pa.types.is_null(col.type):
        return out
    if pa.types.is_list(col.type.value_type) or pa.types.is_large_list(col.type.value_type):
        return out | _nested(col, offsets, P, "poi_missing", dtype=bool, fill=False)
    values, pm_offsets = _flat(col)  # one flag per category for the whole trajectory
    pm_len = np.diff(pm_offsets)
    per_row = np.zeros((table.num_rows, P), bool)
    for i in np.flatnonzero(pm_len):
        if pm_len[i] != P:
            raise TaxonomyMismatch(f"poi_missing has {pm_len[i]} flags, poi has {P} values per point")
        per_row[i] = values[pm_offsets[i] : pm_offsets[i + 1]]
    return out | np.repeat(per_row, lengths, axis=0)


def load_features(
    features, data_version: int | str | None, *, poi_dim: int | None = None, road_dim: int | None = None
) -> TrajectoryData:
    """Rows of the features table (pandas DataFrame or pyarrow Table) -> TrajectoryData.

    `data_version` is recorded as given (the Delta version the rows were read at). poi_dim/road_dim
    are needed only when no row has context (a city without OSM) and the model defines them.
    """
    table = features if isinstance(features, pa.Table) else pa.Table.from_pandas(features, preserve_index=False)
    if table.num_rows == 0:
        raise ValueError("the features input has no rows")
    versions = pc.unique(table.column("taxonomy_version")).to_pylist()
    if len(versions) != 1:
        raise TaxonomyMismatch(f"rows built with several POI taxonomy versions: {versions}")
    x, offsets = _flat(table.column("x"))
    y, _ = _flat(table.column("y"))
    lengths = np.diff(offsets)
    n_points = np.asarray(table.column("n_points").to_numpy(), dtype=np.int64)
    if (lengths != n_points).any():
        raise ValueError("per-point arrays differ in length from n_points")
    time = np.stack([_flat(table.column(c))[0].astype(np.float32) for c in TEMPORAL_COLUMNS], axis=1)
    mx, my = _flat(table.column("mx"))[0], _flat(table.column("my"))[0]
    lon, lat = _flat(table.column("lon"))[0], _flat(table.column("lat"))[0]
    poi = _nested(table.column("poi"), offsets, poi_dim, "poi")
    road = _nested(table.column("road"), offsets, road_dim, "road")
    poi_missing = _poi_missing(table, offsets, poi.shape[1], _row_has(table.column("poi")))
    poi_missing |= np.isnan(poi)  # NaN where missing (contract); never read as zero
    poi = np.nan_to_num(poi, nan=0.0)
    road_missing = np.repeat(~_row_has(table.column("road")), lengths)  # (T,) rows without road data
    if "road_missing" in table.column_names:
        values, rm_offsets = _flat(table.column("road_missing"))
        rm_len = np.diff(rm_offsets)
        if ((rm_len != 0) & (rm_len != lengths)).any():
            raise ValueError("column road_missing: row length differs from n_points")
        road_missing[np.repeat(rm_len == lengths, lengths)] |= values.astype(bool)
    road_missing |= np.isnan(road).any(axis=1) if road.shape[1] else False
    road = np.nan_to_num(road, nan=0.0)
    start = (
        table.column("start_ts").cast(pa.timestamp("ns", tz="UTC")).to_numpy().astype("datetime64[ns]").astype(np.int64)
    )
    ctx_missing = np.asarray(table.column("context_missing").fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)
    return TrajectoryData(
        trip_id=np.asarray(table.column("trip_id").to_pylist(), dtype=object),
        city=np.asarray(table.column("city").to_pylist(), dtype=object),
        start_ts=start,
        offsets=offsets,
        xy=np.stack([x, y], axis=1).astype(np.float32),
        time=time,
        mxy=np.stack([mx, my], axis=1).astype(np.float64),
        lonlat=np.stack([lon, lat], axis=1).astype(np.float64),
        poi=poi,
        road=road,
        poi_missing=poi_missing,
        road_missing=road_missing,
        context_missing=ctx_missing,
        taxonomy_version=str(versions[0]),
        data_version=data_version,
    )


def as_data(features, data_version, *, poi_dim=None, road_dim=None) -> TrajectoryData:
    """`TrajectoryData` as it is, or feature rows (pandas or Arrow) loaded at `data_version`."""
    if isinstance(features, TrajectoryData):
        return features
    return load_features(features, data_version, poi_dim=poi_dim, road_dim=road_dim)


def chronological_split(data: TrajectoryData, fractions=(0.8, 0.1, 0.1)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train / val / test, 8:1:1 by departure time (ties broken by trip_id), within each city.

    Per city: the cities of a multi-city table cover different years (San Francisco 2008, Porto 2013-14), so
    one split over all rows would train on one city and validate and test on the other.
    """
    parts: list[list[np.ndarray]] = [[], [], []]
    for city in np.unique(data.city):
        rows = np.flatnonzero(data.city == city)
        order = rows[np.lexsort((data.trip_id[rows].astype(str), data.start_ts[rows]))]
        n_train = int(round(fractions[0] * len(order)))
        n_val = int(round(fractions[1] * len(order)))
        for part, chunk in zip(parts, (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])):
            part.append(chunk)
    return tuple(np.concatenate(p) if p else np.array([], dtype=np.int64) for p in parts)


def eligible(data: TrajectoryData, indices: np.ndarray, task: str, max_points: int | None = None) -> np.ndarray:
    """The rows a task can use: enough points for its mask (TP >= 6), at most max_points."""
    n = data.n_points[indices]
    ok = n >= MIN_POINTS[task]
    if max_points:
        ok &= n <= max_points
    return indices[ok]


class TrajectoryDataset(torch.utils.data.Dataset):
    """One trajectory per item, as numpy arrays (the collate function pads and masks)."""

    def __init__(self, data: TrajectoryData, indices: np.ndarray | None = None):
        self.data = data
        self.indices = np.arange(len(data)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        d, row = self.data, int(self.indices[i])
        a, b = d.offsets[row], d.offsets[row + 1]
        return {
            "row": row,
            "xy": d.xy[a:b],
            "time": d.time[a:b],
            "poi": d.poi[a:b],
            "road": d.road[a:b],
            "poi_missing": d.poi_missing[a:b],
            "road_missing": d.road_missing[a:b],
            "context_missing": bool(d.context_missing[row]),
            "origin": d.mxy[a],
            "road_offsets": {mu: off[a:b] for mu, off in d.road_offsets.items()},
        }


class Collator:
    """Mask each trajectory with its task's mask, pad to the longest, zero every hidden value.

    Returns (batch, targets). batch: "xy" (B, L, 2), "time" (B, L, 4), "poi" (B, L, P), "road" (B, L, R),
    "poi_missing" (B, L, P), "road_missing" (B, L), "context_missing" (B,), "valid" (B, L), "mask_s"/"mask_t" (B, L),
    "origin" (B, 2) float64, "row" (B,), "point_index" (B, L) original point indices (-1 on padding),
    "road_offset" (B, L, 2) metres: a trajectory's TR(mu) road offset where its mask keeps exactly the TR(mu)
    points and the sample carries that offset (`tr_road_offset`), 0 otherwise.
    targets: true "xy" and "time". Context dropout (pretraining) marks a whole trajectory's POI and
    road as missing with probability `context_dropout`.
    """

    def __init__(self, *, task: str, seed: int = 0, context_dropout: float = 0.0):
        self.task, self.seed, self.context_dropout = task, seed, context_dropout
        self.mask_fn = mask_for(task)
        self.set_epoch(0)

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Reseed: the masks of an epoch depend only on (seed, epoch, rank), so a resumed run repeats them."""
        self.rng = np.random.default_rng([self.seed, epoch, rank])

    def __call__(self, samples: list[dict]) -> tuple[dict, dict]:
        masks: list[PointMask] = [self.mask_fn(len(s["xy"]), self.rng) for s in samples]
        B, L = len(samples), max(len(m.keep) for m in masks)
        P, R = samples[0]["poi"].shape[1], samples[0]["road"].shape[1]
        xy = np.zeros((B, L, 2), np.float32)
        time = np.zeros((B, L, 4), np.float32)
        poi = np.zeros((B, L, P), np.float32)
        road = np.zeros((B, L, R), np.float32)
        poi_missing = np.zeros((B, L, P), bool)
        road_missing = np.zeros((B, L), bool)
        valid = np.zeros((B, L), bool)
        mask_s = np.zeros((B, L), bool)
        mask_t = np.zeros((B, L), bool)
        point_index = np.full((B, L), -1, np.int64)
        road_offset = np.zeros((B, L, 2), np.float32)
        for b, (s, m) in enumerate(zip(samples, masks)):
            n = len(m.keep)
            road_offset[b, :n] = tr_road_offset(s, m)
            xy[b, :n], time[b, :n] = s["xy"][m.keep], s["time"][m.keep]
            poi[b, :n], road[b, :n] = s["poi"][m.keep], s["road"][m.keep]
            poi_missing[b, :n], road_missing[b, :n] = s["poi_missing"][m.keep], s["road_missing"][m.keep]
            valid[b, :n], mask_s[b, :n], mask_t[b, :n] = True, m.spatial, m.temporal
            point_index[b, :n] = m.keep
        ctx_missing = np.array([s["context_missing"] for s in samples], bool)
        if self.context_dropout > 0:
            ctx_missing |= self.rng.random(B) < self.context_dropout
        targets = {"xy": torch.from_numpy(xy.copy()), "time": torch.from_numpy(time.copy())}
        hide_s, hide_t = mask_s[..., None], mask_t[..., None]
        batch = {
            "xy": torch.from_numpy(np.where(hide_s, 0, xy)),
            "time": torch.from_numpy(np.where(hide_t, 0, time)),
            "poi": torch.from_numpy(np.where(hide_s, 0, poi)),
            "road": torch.from_numpy(np.where(hide_s, 0, road)),
            "poi_missing": torch.from_numpy(poi_missing & ~hide_s),  # coverage could hint at a hidden position
            "road_missing": torch.from_numpy(road_missing & ~mask_s),
            "context_missing": torch.from_numpy(ctx_missing),
            "valid": torch.from_numpy(valid),
            "mask_s": torch.from_numpy(mask_s),
            "mask_t": torch.from_numpy(mask_t),
            "origin": torch.from_numpy(np.stack([s["origin"] for s in samples]).astype(np.float64)),
            "row": torch.tensor([s["row"] for s in samples], dtype=torch.long),
            "point_index": torch.from_numpy(point_index),
            "road_offset": torch.from_numpy(road_offset),
        }
        return batch, targets


def tr_road_offset(sample: dict, mask: PointMask) -> np.ndarray | float:
    """The sample's TR(mu) road offset (n, 2) if `mask` keeps exactly the TR(mu) points of a mu it carries
    (every point in, their times given, the others' positions hidden: also when "multitask" drew tr*), else 0.

    The offset depends only on which points are kept (model/road_offsets.py), so matching the mask is
    enough to know it applies; NaN (rows not computed) reads as 0, the model's "no road path"."""
    offsets = sample.get("road_offsets") or {}
    n = len(sample["xy"])
    if not offsets or len(mask.keep) != n or mask.temporal.any():
        return 0.0
    for mu, off in offsets.items():
        if np.array_equal(mask.spatial, tr_mask(n, mu=mu).spatial):
            return np.nan_to_num(off, nan=0.0)
    return 0.0


def to_device(tensors: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}


def with_city_facts(data: TrajectoryData, settings) -> TrajectoryData:
    """`data` with each city's phi and metric CRS from its city config (cities without a config stay unknown).

    The features rows do not carry phi (the context grid's commit metadata and the city config do), so
    the commands that read features attach it here and checkpoints record it (`describe`)."""
    from transfertraj.core.city_config import CityConfigError, load_city

    facts = dict(data.city_facts)
    for name in sorted(set(data.city.tolist())):
        try:
            city = load_city(name, settings)
        except (CityConfigError, FileNotFoundError, OSError) as err:
            log.warning("city %s: no config (%s); its phi and CRS are recorded as unknown", name, err)
            continue
        facts[name] = {"phi_m": float(city.phi_m), "crs": str(city.crs)}
    return replace(data, city_facts=facts)


def read_features(
    path: str | Path, *, version: int | None = None, cities: list[str] | None = None
) -> tuple[pa.Table, int | str]:
    """A Delta folder or a Parquet file/folder -> (table, version read), optionally some cities only.

    Delta: through `transfertraj.feature_store.reader` at `version` (latest when None); every city is
    read at the same version. Parquet: read with pyarrow, the version is "parquet:<path>" (unversioned
    input, recorded as such); `version` is refused there, it names a Delta version.
    """
    from transfertraj.feature_store.reader import read_path

    path = Path(path) if "://" not in str(path) else path
    if isinstance(path, Path) and not (path / "_delta_log").is_dir():
        if version is not None:
            raise ValueError(f"{path} is not a Delta table: --version applies to a Delta folder only")
        table = pq.read_table(path)
        if cities:
            table = table.filter(pc.is_in(table.column("city"), value_set=pa.array(list(cities))))
        return table, f"parquet:{path}"
    return read_path(path, version=version, city=list(cities) if cities else None)
