"""The MLflow pyfunc: raw GPS points in, TP / TR / OD-TTE answers out, features built by the pipeline's code.

    import mlflow
    model = mlflow.pyfunc.load_model("models:/transfertraj-porto@champion")
    model.predict(points_df, params={"task": "tp"})        # or "tr" (params mu: 4|8|16) or "odtte"

Input: one row per GPS point, columns `trip_id`, `ts` (Unix seconds, UTC), `lon`, `lat` in the city's
datum (WGS-84; GCJ-02 for a city whose config says `datum: gcj02`, converted here as ingestion converts
its deliveries, and the answer's points given back in GCJ-02), ordered or not (rows are sorted by `ts`
within a trip). What the rows mean depends on the task:

| task  | input per trip                               | answer per trip                                   |
|-------|----------------------------------------------|---------------------------------------------------|
| tp    | the observed trajectory (>= 1 point), and    | the 5 points at the asked times (else one city    |
|       | optionally the 5 asked times (see below)     | interval apart after the last point), lon/lat     |
| tr    | the sparse points (one every mu intervals)   | the mu-1 missing points between each pair         |
| odtte | origin = first row, destination = last row   | the travel time in minutes (destination row)      |

TP asks "where will the vehicle be at these times?": the model hides the future points' positions, not
their times (model/masking.py). A trip may name the 5 times as rows with a `ts` and empty `lon`/`lat`
(NaN, JSON null, an empty CSV field), all after its last observed point; a trip that names none is
asked at the city's nominal interval (`sampling_interval_s`) after its last point, which is wrong for
irregular sampling (San Francisco's fixes are 20 s to minutes apart: name the times there). The
answer's `ts` is the time each point was asked for.

    asked = pd.DataFrame({"trip_id": "t1", "ts": [t + 40, t + 95, t + 160, t + 200, t + 260]})  # lon/lat NaN
    model.predict(pd.concat([observed, asked]), params={"task": "tp"})

No training/serving skew: the modalities are computed with the very functions that build the training
features in the Spark jobs (transfertraj.features: metric coordinates, temporal fields, POI counts and
road densities, the trajectory row), here in numpy on the request's points. The model carries what they
need (see transfertraj.registry.log_and_register): the checkpoint, the city configs, and each city's
context (road lattice + POIs) as a compressed NPZ exported from the context tables at the Delta versions
the training features were built from. Loading and predicting import neither pyspark nor delta-spark
and need no Java and no data root; a later OSM refresh cannot change what a registered model sees.

Per-task checkpoints (the paper's "full" variant): a model may carry one fine-tuned checkpoint per task
besides the default one (artifacts `checkpoint_tp`, `checkpoint_tr`, `checkpoint_od`; `transfertraj
models register --task-checkpoint tp=PATH`). Each task is answered by its own checkpoint, a task without
one by the default, and the registry's gate scores each task with the checkpoint that answers it.

Points the task hides (the TP future, the TR gaps, the OD arrival time) are placeholders the collate function
zeroes: their values never reach the network.
"""

import json
import logging
import os
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import ThreadpoolController

from transfertraj.core.constants import TP_FUTURE
from transfertraj.core.cores import idle_cores
from transfertraj.features.context import check_context, load_city_context, poi_tree
from transfertraj.features.datum import from_wgs84, to_wgs84
from transfertraj.features.taxonomy import TAXONOMY_VERSION
from transfertraj.features.trajectory import TRAJECTORY_FIELDS, point_features, trajectory_rows

log = logging.getLogger("transfertraj.serving")

INPUT_COLUMNS = ("trip_id", "ts", "lon", "lat")
# torch intra-op threads per predict call; default: core.cores.idle_cores() when the model loads (the
# rule and its reasons are stated there). On the shared 2-core machine (load 8-11) 2 threads made a
# 64-trip request 10x slower than 1 (bench/README.md). Under `mlflow models serve -w N` set it to cores / N.
THREADS_ENV = "TRANSFERTRAJ_SERVING_THREADS"
# Padded points per forward pass: a request's trips are grouped by length up to this many (B x L), so
# short trips are not padded to the longest (transfertraj.model.predict.length_batches). 64 real
# Porto trips (2,556 points with the TP placeholders, padded to 64 x 125) run in 3-4 passes.
MAX_TOKENS = 2048
SERVING_TASKS = ("tp", "tr", "odtte")
# A logged model may carry one fine-tuned checkpoint per task beside its default one (the paper's "full"
# variant: the base fine-tuned on each task alone); artifact `checkpoint_<task>`. A task without its own
# is answered by the default checkpoint.
TASK_CHECKPOINTS = ("tp", "tr", "od")
# ... and one per task and city ("tr@sanfrancisco", artifact `checkpoint_tr@sanfrancisco`): it answers that
# task for that city's requests only, before the task's own and the default (a city whose sampling differs,
# San Francisco's 60 s fixes against Porto's 15 s, gains from a fine-tune of its own).
CITY_SEP = "@"


def split_task_key(key: str) -> tuple[str, str | None]:
    """A per-task checkpoint key -> (task of TASK_CHECKPOINTS, city or None); an unknown task is refused."""
    task, sep, city = key.partition(CITY_SEP)
    if task not in TASK_CHECKPOINTS or (sep and not city):
        raise LookupError(
            f"per-task checkpoint key {key!r}: use a task of {', '.join(TASK_CHECKPOINTS)}, "
            f"optionally with {CITY_SEP}CITY (tr{CITY_SEP}sanfrancisco)"
        )
    return task, city or None


def checkpoint_task(task: str) -> str:
    """A serving, mask or gate task (tp, tr, tr8, odtte, od ...) -> its key in TASK_CHECKPOINTS."""
    key = "tr" if task.startswith("tr") else "od" if task in ("od", "odtte") else task
    if key not in TASK_CHECKPOINTS:
        raise ServingInputError(f"unknown task {task!r}; use one of {', '.join(SERVING_TASKS)}")
    return key


def task_network(networks: dict, default, task: str, city: str | None = None):
    """The entry of {per-task key: network or checkpoint} that answers `task` (serving, mask or gate name)
    for `city`'s requests: the task's and city's own, else the task's own, else `default`."""
    key = checkpoint_task(task)
    if city is not None and f"{key}{CITY_SEP}{city}" in networks:
        return networks[f"{key}{CITY_SEP}{city}"]
    return networks.get(key, default)


def serving_threads() -> int:
    """torch threads of a serving process: TRANSFERTRAJ_SERVING_THREADS, else core.cores.idle_cores()."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    return idle_cores()


class CityToLonLat:
    """City CRS metres -> WGS-84 lon/lat: the exact inverse of the projection the features use
    (transfertraj.features.metric_coordinates), one pyproj Transformer per city built when the model
    loads. Without it, model.predict fits a cubic map on each request's own points (least squares,
    about 50 ms of a 64-trip request on one core) and extrapolates it to the predicted points."""

    def __init__(self, crs: str):
        from pyproj import Transformer

        self.crs = crs
        self.transformer = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def __call__(self, mxy: np.ndarray) -> np.ndarray:
        mxy = np.asarray(mxy, dtype=np.float64)
        lon, lat = self.transformer.transform(mxy[:, 0], mxy[:, 1])
        return np.stack([np.asarray(lon), np.asarray(lat)], axis=1)  # (n, 2)


class ServingInputError(ValueError):
    """A request the model cannot answer; the message says what to change."""


def model_task(task: str, mu: int = 8) -> str:
    """Serving task name -> the masking task of model.masking."""
    if task == "tp":
        return "tp"
    if task == "tr":
        if mu not in (4, 8, 16):
            raise ServingInputError(f"tr: mu must be 4, 8 or 16, got {mu}")
        return f"tr{mu}"
    if task in ("odtte", "od"):
        return "od"
    raise ServingInputError(f"unknown task {task!r}; use one of {', '.join(SERVING_TASKS)}")


def check_points(points: pd.DataFrame) -> pd.DataFrame:
    """Validate and normalise request rows: the four columns, numbers where numbers belong, sorted.

    A row with a ts and neither lon nor lat is an asked time (TP: "where at this time?"); it keeps NaN
    lon/lat here and expand_for_task places it. A row with only one of lon/lat is refused."""
    missing = [c for c in INPUT_COLUMNS if c not in points.columns]
    if missing:
        raise ServingInputError(f"input lacks columns {missing}; expected {list(INPUT_COLUMNS)} (one row per point)")
    # numpy, not DataFrame operations: this runs on every request (a third of the time the features took)
    trip = points["trip_id"].astype(str).to_numpy(dtype=object)
    ts = pd.to_numeric(points["ts"], errors="coerce").to_numpy()
    lon, lat = (pd.to_numeric(points[c], errors="coerce").to_numpy(dtype=np.float64) for c in ("lon", "lat"))
    lon_na, lat_na = np.isnan(lon), np.isnan(lat)
    bad = pd.isna(ts) | (lon_na != lat_na)
    if bad.any():
        raise ServingInputError(
            f"{int(bad.sum())} row(s) have a missing or non-numeric ts, or only one of lon/lat (a row that asks "
            "about a time leaves both empty)"
        )
    placed = ~lon_na
    if not ((np.abs(lon[placed]) <= 180).all() and (np.abs(lat[placed]) <= 90).all()):
        raise ServingInputError("lon must lie in [-180, 180] and lat in [-90, 90]")
    ts = ts.astype(np.int64)
    codes, _ = pd.factorize(trip, sort=True)  # sorted ids -> int codes: one integer sort, not one of strings
    order = np.lexsort((ts, codes))  # stable: by trip_id, then ts
    return pd.DataFrame({"trip_id": trip[order], "ts": ts[order], "lon": lon[order], "lat": lat[order]})


def asked_rows(points: pd.DataFrame) -> pd.DataFrame:
    """Rows that ask about the (trip_id, ts) of `points`: TP's "where at these times?" (no lon/lat)."""
    return pd.DataFrame(
        {"trip_id": points["trip_id"].to_numpy(), "ts": points["ts"].to_numpy(), "lon": np.nan, "lat": np.nan}
    )


def tp_times(points: pd.DataFrame, trips: np.ndarray, last_ts: np.ndarray, interval_s: float) -> np.ndarray:
    """(trips, TP_FUTURE) Unix seconds of the hidden TP points: the request's asked times where a trip
    names them (rows without lon/lat), else the city's nominal interval after the trip's last point.

    Why the request may name them: the model's TP mask hides positions, not times (model.masking), so
    the answer is "where at these times"; at irregular sampling (San Francisco's fixes are 20 s to
    minutes apart) the nominal steps ask about times nobody wanted. `trips` are the observed trips in
    order (sorted ids), `last_ts` their last observed time; a trip names all TP_FUTURE times or none."""
    step = np.arange(1, TP_FUTURE + 1) * int(round(interval_s))
    times = last_ts[:, None] + step[None, :]
    asked = points[points["lon"].isna()]
    if asked.empty:
        return times
    ids = asked["trip_id"].to_numpy(dtype=object)
    at = np.minimum(np.searchsorted(trips, ids), len(trips) - 1)
    unknown = trips[at] != ids
    if unknown.any():
        raise ServingInputError(f"trip {ids[unknown][0]}: asks about times but has no observed point")
    count = np.bincount(at, minlength=len(trips))
    wrong = (count != 0) & (count != TP_FUTURE)
    if wrong.any():
        t = int(np.flatnonzero(wrong)[0])
        raise ServingInputError(
            f"trip {trips[t]}: asks about {count[t]} time(s); tp answers {TP_FUTURE} points, so name "
            f"{TP_FUTURE} times (rows with ts and no lon/lat) or none (the city's interval after the last point)"
        )
    named = np.flatnonzero(count == TP_FUTURE)
    asked_ts = asked["ts"].to_numpy(dtype=np.int64).reshape(-1, TP_FUTURE)  # sorted by trip, then ts
    after = asked_ts[:, 0] > last_ts[named]
    rising = (np.diff(asked_ts, axis=1) > 0).all(axis=1)
    if not (after & rising).all():
        t = named[~(after & rising)][0]
        raise ServingInputError(
            f"trip {trips[t]}: asked times must be distinct and after its last observed point (ts {last_ts[t]})"
        )
    times[named] = asked_ts
    return times


def expand_for_task(points: pd.DataFrame, task: str, *, interval_s: float, mu: int = 8) -> pd.DataFrame:
    """Request points -> the trajectory the task's mask expects, with an `observed` flag per point.

    tp: observed points + 5 future placeholders at the asked times (tp_times); tr: mu-1 placeholders
    between consecutive observed points (so the tr mask keeps exactly the observed ones); odtte: first
    and last point only. Placeholders repeat the previous observed position; the mask hides it.
    """
    if task not in SERVING_TASKS:
        raise ServingInputError(f"unknown task {task!r}")
    if len(points) == 0:
        raise ServingInputError("the request has no rows")
    asking = points["lon"].isna().to_numpy()
    if asking.any():
        if task != "tp":
            raise ServingInputError(
                f"{int(asking.sum())} row(s) without lon/lat: only tp takes asked times (tr asks the times between "
                "its points, odtte the arrival)"
            )
        asked, points = points, points[~asking].reset_index(drop=True)
        if len(points) == 0:
            raise ServingInputError("the request has asked times but no observed point")
    trip = points["trip_id"].to_numpy(dtype=object)
    ts, lon, lat = (points[c].to_numpy() for c in ("ts", "lon", "lat"))
    start = np.flatnonzero(np.r_[True, trip[1:] != trip[:-1]])  # rows are sorted by trip (check_points)
    n = np.diff(np.r_[start, len(trip)])
    last = start + n - 1
    if task != "tp" and (n < 2).any():
        need = "at least 2 observed points" if task == "tr" else "an origin and a destination row"
        raise ServingInputError(f"trip {trip[start[n < 2][0]]}: {task} needs {need}")
    pos = np.arange(len(trip)) - np.repeat(start, n)  # index of each row within its trip
    trip_no = np.repeat(np.arange(len(start)), n)
    if task == "tp":
        k = np.tile(np.arange(1, TP_FUTURE + 1), len(start))
        f = np.repeat(np.arange(len(start)), TP_FUTURE)
        future = tp_times(asked if asking.any() else points, trip[start], ts[last], interval_s)
        parts = [
            (trip_no, pos, ts, lon, lat, np.ones(len(ts), bool)),
            (
                f,
                n[f] - 1 + k,
                future.reshape(-1),
                lon[last][f],
                lat[last][f],
                np.zeros(len(f), bool),
            ),
        ]
    elif task == "tr":
        src = np.flatnonzero(pos < np.repeat(n, n) - 1)  # rows with a next point in the same trip
        r, k = np.repeat(src, mu), np.tile(np.arange(mu), len(src))
        frac = np.tile(np.arange(mu) / mu, len(src))
        parts = [
            (trip_no[r], pos[r] * mu + k, np.round(ts[r] + (ts[r + 1] - ts[r]) * frac), lon[r], lat[r], k == 0),
            (trip_no[last], (n - 1) * mu, ts[last], lon[last], lat[last], np.ones(len(last), bool)),
        ]
    else:  # odtte: the arrival time is what is asked
        parts = [
            (
                trip_no[start],
                np.zeros(len(start), np.int64),
                ts[start],
                lon[start],
                lat[start],
                np.ones(len(start), bool),
            ),
            (trip_no[last], np.ones(len(last), np.int64), ts[last], lon[last], lat[last], np.zeros(len(last), bool)),
        ]
    t_no, idx, e_ts, e_lon, e_lat, observed = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.lexsort((idx, t_no))
    return pd.DataFrame(
        {
            "trip_id": trip[start][t_no[order]],
            "idx": idx[order].astype(np.int64),
            "ts": e_ts[order].astype(np.int64),
            "lon": e_lon[order],
            "lat": e_lat[order],
            "observed": observed[order],
        }
    )


def features_from_points(points: pd.DataFrame, city, context, tree=None) -> pa.Table:
    """Expanded points (trip_id, idx, ts, lon, lat) -> features rows (the features table's layout).

    `context` is the city's transfertraj.features.context.CityContext (None: a city without OSM),
    `tree` its poi_tree. Points in the city's datum are moved to WGS-84 first, as ingestion moves them."""
    lon, lat = to_wgs84(points["lon"].to_numpy(dtype=np.float64), points["lat"].to_numpy(dtype=np.float64), city.datum)
    table = pa.table(
        {
            "trip_id": pa.array(points["trip_id"].to_numpy(dtype=object), pa.string()),
            "idx": pa.array(points["idx"].to_numpy(dtype=np.int32)),
            "ts": pa.array(points["ts"].to_numpy(dtype=np.int64)),
            "lon": pa.array(lon),
            "lat": pa.array(lat),
        }
    )
    if context is not None and tree is None:
        tree = poi_tree(context)
    per_point = point_features(
        table,
        crs=city.crs,
        timezone=city.timezone,
        context=context,
        tree=tree,
        phi_m=city.phi_m,
        categories_covered=city.osm.poi_categories_covered,
    )
    rows = trajectory_rows(per_point)
    n = rows.num_rows
    first_ts = pc.list_element(rows.column("ts"), 0)
    return pa.table(
        {
            "trip_id": rows.column("trip_id"),
            "vehicle_key": pa.array(["serving"] * n, pa.string()),
            "start_ts": first_ts.cast(pa.timestamp("s", tz="UTC")).cast(pa.timestamp("us", tz="UTC")),
            "n_points": rows.column("n_points"),
            "city": pa.array([city.name] * n, pa.string()),
            "date": pa.array(["serving"] * n, pa.string()),
            **{name: rows.column(name) for name in TRAJECTORY_FIELDS},
            "context_missing": pa.array([context is None] * n, pa.bool_()),
            "taxonomy_version": pa.array([TAXONOMY_VERSION] * n, pa.string()),
        }
    )


def answer(preds: pd.DataFrame, expanded: pd.DataFrame, task: str, datum: str = "wgs84") -> pd.DataFrame:
    """transfertraj.model.predict.predict rows -> the answer rows of a serving task (only what was asked),
    predicted points in `datum`: the city's, the one its requests come in."""
    # expanded is sorted by trip with each trip's idx consecutive (expand_for_task): a prediction's row
    # there is found by arithmetic from its trip's first row (a pandas merge cost 10x more); rows that do
    # not check out are looked up by (trip_id, idx).
    e_trip, e_idx = expanded["trip_id"].to_numpy(dtype=object), expanded["idx"].to_numpy(dtype=np.int64)
    p_trip, point = preds["trip_id"].to_numpy(dtype=object), preds["point"].to_numpy(dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, e_trip[1:] != e_trip[:-1]])
    first = starts[pd.Index(e_trip[starts]).get_indexer(p_trip)]
    row = np.clip(first + point - e_idx[first], 0, len(e_idx) - 1)
    if not ((e_idx[row] == point) & (e_trip[row] == p_trip)).all():
        keys = pd.MultiIndex.from_arrays([e_trip, e_idx])
        row = keys.get_indexer(pd.MultiIndex.from_arrays([p_trip, point]))
    if task == "odtte":
        dest = preds["masked_temporal"].to_numpy(dtype=bool)
        return pd.DataFrame({"trip_id": p_trip[dest], "travel_time_min": preds["pred_minutes"].to_numpy()[dest]})
    hidden = preds["masked_spatial"].to_numpy(dtype=bool) & ~expanded["observed"].to_numpy(dtype=bool)[row]
    lon, lat = from_wgs84(preds["pred_lon"].to_numpy()[hidden], preds["pred_lat"].to_numpy()[hidden], datum)
    return pd.DataFrame(
        {
            "trip_id": p_trip[hidden],
            "point": point[hidden],
            "ts": expanded["ts"].to_numpy()[row[hidden]],
            "pred_lon": lon,
            "pred_lat": lat,
            "pred_minutes_since_start": preds["pred_minutes"].to_numpy()[hidden],
        }
    )


def road_graphs(networks: list, spec: dict, artifacts: dict) -> dict:
    """{city: RoadGraph} the networks answer TR with when one of them has road_input (often only TR's own
    checkpoint): the drive graphs the model was logged with (registry.serving_artifacts), no lake. A city
    without one gets road offsets 0, said once here."""
    if not any(net.args.road_input for net in networks):
        return {}
    from transfertraj.model.road_paths import RoadGraph

    graphs = {}
    for name, city in spec["cities"].items():
        artifact = city.get("roads_artifact")
        if artifact is None:
            log.warning("%s: the model reads road offsets but carries no road graph: its TR road offsets are 0", name)
            continue
        graphs[name] = RoadGraph.load(artifacts[artifact])
        log.info("%s: road graph of %s (context_roads version %s)", name, artifact, city.get("roads_version"))
    return graphs


class TransferTrajModel(mlflow.pyfunc.PythonModel):
    """A TransferTraj checkpoint (and optionally one per task) plus the context of its cities; everything
    it reads is in the model. Input rows, asked TP times and answers: this module's docstring."""

    def load_context(self, context):
        from transfertraj.core.city_config import parse_city
        from transfertraj.model.checkpoint import load_model

        self.torch_model, self.checkpoint = load_model(context.artifacts["checkpoint"])
        self.task_models = {}  # per-task (and per-city) fine-tunes the model carries: split_task_key keys
        for name, path in context.artifacts.items():
            if name.startswith("checkpoint_"):
                key = name.removeprefix("checkpoint_")
                split_task_key(key)  # a key this code cannot route is refused at load, not at a request
                self.task_models[key] = load_model(path)[0]
        self.threads = serving_threads()
        self.blas = ThreadpoolController()  # the BLAS libraries loaded now (numpy's, scipy's), capped per request
        self.max_tokens = MAX_TOKENS  # None: one padded batch per request (the path before length batches)
        spec = json.loads(Path(context.artifacts["serving"]).read_text())
        self.spec = spec
        self.cities = {name: parse_city(c["config"], f"model city {name}") for name, c in spec["cities"].items()}
        self.to_lonlat = {name: CityToLonLat(city.crs) for name, city in self.cities.items()}
        self.contexts: dict = {}
        for name, city in self.cities.items():
            artifact = spec["cities"][name].get("context_artifact")
            if artifact is None:
                if city.has_osm and spec["cities"][name].get("context_versions"):
                    raise RuntimeError(
                        f"{name}: this model was logged before models carried their context (it read the lake "
                        "through Spark); register it again to serve it"
                    )
                self.contexts[name] = (None, None)  # a city without OSM: context missing everywhere
                continue
            ctx = load_city_context(context.artifacts[artifact])
            check_context(ctx, phi_m=city.phi_m, taxonomy_version=TAXONOMY_VERSION)
            self.contexts[name] = (ctx, poi_tree(ctx))
            log.info(
                "%s: context of %s (tables at versions %s)", name, artifact, spec["cities"][name]["context_versions"]
            )
        self.road_graphs = road_graphs([self.torch_model, *self.task_models.values()], spec, context.artifacts)

    def model_for(self, task: str, city: str | None = None):
        """The network that answers `task` (serving, mask or gate name) for `city`: task_network's order."""
        return task_network(self.task_models, self.torch_model, task, city)

    def features(self, model_input: pd.DataFrame, *, task: str = "tp", mu: int = 8, city: str | None = None):
        """(features rows, expanded points) of a request: what predict feeds the network."""
        name = str(city or self.spec["default_city"])
        if name not in self.cities:
            raise ServingInputError(f"this model knows cities {sorted(self.cities)}, not {name!r}")
        cfg = self.cities[name]
        points = check_points(pd.DataFrame(model_input))
        expanded = expand_for_task(points, task if task != "od" else "odtte", interval_s=cfg.sampling_interval_s, mu=mu)
        ctx, tree = self.contexts[name]
        return features_from_points(expanded, cfg, ctx, tree), expanded

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = dict(params or {})
        task = str(params.get("task") or "tp")
        mu = int(params.get("mu") or 8)
        mask_task = model_task(task, mu)
        city = str(params.get("city") or self.spec["default_city"])
        # numpy's BLAS at 1 thread for the request (restored after): its arrays are small, and OpenBLAS's
        # idle threads spin on the cores the network's threads need (7-10 ms of CPU per 64-trip request).
        with self.blas.limit(limits=1, user_api="blas"):
            return self._predict(model_input, task, mu, mask_task, city)

    def _predict(self, model_input, task: str, mu: int, mask_task: str, city: str) -> pd.DataFrame:
        import torch

        from transfertraj.model.predict import predict as model_predict

        table, expanded = self.features(model_input, task=task, mu=mu, city=city)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # for this call only: an in-process caller keeps its setting
        try:
            preds = model_predict(
                self.model_for(mask_task, city),
                table,
                mask_task,
                device="cpu",
                max_points=None,
                max_tokens=self.max_tokens,
                to_lonlat=self.to_lonlat,
                road_graphs=self.road_graphs,
                workers=self.threads,  # several batches: one core each (model.predict.batches_in_parallel)
            )
        finally:
            torch.set_num_threads(previous)
        datum = self.cities[city].datum
        return answer(preds, expanded, "odtte" if mask_task == "od" else task, datum)
