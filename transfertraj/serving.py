"""The MLflow pyfunc: raw GPS points in, TP / TR / OD-TTE answers out, features built by the pipeline's code.

    import mlflow
    model = mlflow.pyfunc.load_model("models:/transfertraj-porto@champion")
    model.predict(points_df, params={"task": "tp"})        # or "tr" (params mu: 4|8|16) or "odtte"

Input: one row per GPS point, columns `trip_id`, `ts` (Unix seconds, UTC), `lon`, `lat` (WGS-84), ordered
or not (rows are sorted by `ts` within a trip). What the rows mean depends on the task:

| task  | input per trip                               | answer per trip                                   |
|-------|----------------------------------------------|---------------------------------------------------|
| tp    | the observed trajectory (>= 1 point)         | the next 5 points (interval of the city), lon/lat |
| tr    | the sparse points (one every mu intervals)   | the mu-1 missing points between each pair         |
| odtte | origin = first row, destination = last row   | the travel time in minutes (destination row)      |

No training/serving skew: the modalities are computed with the very functions that built the training
features (`jobs.metric_coordinates.add_metric_xy`, `jobs.featurize.add_temporal` and `assemble`,
`jobs.context_density.add_loaded_context` / `add_missing_context`), on a local Spark session started
inside the model process on first use (about 10-30 s once; then about a second per request). The
context tables are read at the Delta versions recorded in the model when it was logged, from the data
root (`TRANSFERTRAJ_HOME`, else the root recorded in the model), so a later OSM refresh cannot change
what a registered model sees. Points the task hides (the TP future, the TR gaps, the OD arrival time)
are placeholders the collate function zeroes: their values never reach the network.
"""

import json
import logging
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from transfertraj.core.constants import TP_FUTURE

log = logging.getLogger("transfertraj.serving")

INPUT_COLUMNS = ("trip_id", "ts", "lon", "lat")
SERVING_TASKS = ("tp", "tr", "odtte")


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
    """Validate and normalise request rows: the four columns, numbers where numbers belong, sorted."""
    missing = [c for c in INPUT_COLUMNS if c not in points.columns]
    if missing:
        raise ServingInputError(f"input lacks columns {missing}; expected {list(INPUT_COLUMNS)} (one row per point)")
    df = points.loc[:, list(INPUT_COLUMNS)].copy()
    df["trip_id"] = df["trip_id"].astype(str)
    for col in ("ts", "lon", "lat"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    bad = df[["ts", "lon", "lat"]].isna().any(axis=1)
    if bad.any():
        raise ServingInputError(f"{int(bad.sum())} row(s) have a missing or non-numeric ts/lon/lat")
    if not (df["lon"].between(-180, 180).all() and df["lat"].between(-90, 90).all()):
        raise ServingInputError("lon must lie in [-180, 180] and lat in [-90, 90]")
    df["ts"] = df["ts"].astype(np.int64)
    return df.sort_values(["trip_id", "ts"], kind="stable").reset_index(drop=True)


def expand_for_task(points: pd.DataFrame, task: str, *, interval_s: float, mu: int = 8) -> pd.DataFrame:
    """Request points -> the trajectory the task's mask expects, with an `observed` flag per point.

    tp: observed points + 5 future placeholders; tr: mu-1 placeholders between consecutive observed
    points (so the tr mask keeps exactly the observed ones); odtte: first and last point only.
    Placeholders repeat the previous observed position and step the time; the mask hides them.
    """
    out = []
    for trip_id, g in points.groupby("trip_id", sort=True):
        ts, lon, lat = g["ts"].to_numpy(), g["lon"].to_numpy(), g["lat"].to_numpy()
        if task == "tp":
            step = int(round(interval_s))
            fut = ts[-1] + step * np.arange(1, TP_FUTURE + 1)
            e_ts = np.concatenate([ts, fut])
            e_lon = np.concatenate([lon, np.full(TP_FUTURE, lon[-1])])
            e_lat = np.concatenate([lat, np.full(TP_FUTURE, lat[-1])])
            observed = np.arange(len(e_ts)) < len(ts)
        elif task == "tr":
            if len(ts) < 2:
                raise ServingInputError(f"trip {trip_id}: tr needs at least 2 observed points")
            frac = np.arange(mu) / mu
            e_ts = np.concatenate([np.round(ts[:-1, None] + (ts[1:, None] - ts[:-1, None]) * frac).ravel(), ts[-1:]])
            e_lon = np.concatenate([np.repeat(lon[:-1], mu), lon[-1:]])
            e_lat = np.concatenate([np.repeat(lat[:-1], mu), lat[-1:]])
            observed = np.arange(len(e_ts)) % mu == 0
        elif task == "odtte":
            if len(ts) < 2:
                raise ServingInputError(f"trip {trip_id}: odtte needs an origin and a destination row")
            e_ts, e_lon, e_lat = ts[[0, -1]], lon[[0, -1]], lat[[0, -1]]
            observed = np.array([True, False])  # the arrival time is what is asked
        else:
            raise ServingInputError(f"unknown task {task!r}")
        out.append(
            pd.DataFrame(
                {
                    "trip_id": trip_id,
                    "idx": np.arange(len(e_ts)),
                    "ts": e_ts.astype(np.int64),
                    "lon": e_lon,
                    "lat": e_lat,
                    "observed": observed,
                }
            )
        )
    if not out:
        raise ServingInputError("the request has no rows")
    return pd.concat(out, ignore_index=True)


def features_from_points(spark, points: pd.DataFrame, city, context):
    """Expanded points (trip_id, idx, ts, lon, lat) -> features rows (pyarrow) with the pipeline's code.

    `context` is a jobs.context_density.CityContext, or None for a city without OSM.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from transfertraj.jobs.context_density import add_loaded_context, add_missing_context
    from transfertraj.jobs.featurize import add_temporal, assemble
    from transfertraj.jobs.metric_coordinates import add_metric_xy

    schema = T.StructType(
        [
            T.StructField("trip_id", T.StringType(), False),
            T.StructField("idx", T.IntegerType(), False),
            T.StructField("ts", T.LongType(), False),
            T.StructField("lon", T.DoubleType(), False),
            T.StructField("lat", T.DoubleType(), False),
        ]
    )
    rows = points[["trip_id", "idx", "ts", "lon", "lat"]].astype({"idx": "int32"})
    pts = spark.createDataFrame(rows, schema=schema).withColumn("point_id", F.monotonically_increasing_id())
    pts = pts.transform(add_metric_xy, city.crs).transform(add_temporal, timezone=city.timezone)
    if context is None:
        pts = pts.transform(add_missing_context)
    else:
        pts = add_loaded_context(pts, context, phi_m=city.phi_m, categories_covered=city.osm.poi_categories_covered)
    trips = (
        pts.groupBy("trip_id")
        .agg(F.min("ts").alias("_t0"), F.count("*").cast("int").alias("n_points"))
        .select(
            "trip_id",
            F.lit("serving").alias("vehicle_key"),
            F.timestamp_seconds("_t0").alias("start_ts"),
            "n_points",
            F.lit(city.name).alias("city"),
            F.lit("serving").alias("date"),
        )
    )
    return assemble(pts, trips, context_missing=not city.has_osm).toArrow()


def answer(preds: pd.DataFrame, expanded: pd.DataFrame, task: str) -> pd.DataFrame:
    """transfertraj.model.predict.predict rows -> the answer rows of a serving task (only what was asked)."""
    cols = ["trip_id", "point", "ts", "pred_lon", "pred_lat", "pred_minutes"]
    merged = preds.merge(
        expanded[["trip_id", "idx", "ts", "observed"]],
        left_on=["trip_id", "point"],
        right_on=["trip_id", "idx"],
        how="left",
    )
    if task == "odtte":
        dest = merged[merged["masked_temporal"]].copy()
        dest["travel_time_min"] = dest["pred_minutes"]
        return dest[["trip_id", "travel_time_min"]].reset_index(drop=True)
    hidden = merged[merged["masked_spatial"] & ~merged["observed"].astype(bool)]
    return hidden[cols].rename(columns={"pred_minutes": "pred_minutes_since_start"}).reset_index(drop=True)


class TransferTrajModel(mlflow.pyfunc.PythonModel):
    """A TransferTraj checkpoint plus what it needs to build features for its cities."""

    def load_context(self, context):
        from transfertraj.core.city_config import parse_city
        from transfertraj.model.checkpoint import load_model

        self.torch_model, self.checkpoint = load_model(context.artifacts["checkpoint"])
        spec = json.loads(Path(context.artifacts["serving"]).read_text())
        self.spec = spec
        self.cities = {name: parse_city(c["config"], f"model city {name}") for name, c in spec["cities"].items()}
        self._contexts: dict = {}
        self._spark = None

    # -- features ------------------------------------------------------------------------------
    def _settings(self):
        import os

        from transfertraj.core.settings import Settings

        home = os.environ.get("TRANSFERTRAJ_HOME") or self.spec["data_root"]
        return Settings.load(home=home)

    def _spark_session(self):
        if self._spark is None:
            import os

            from transfertraj.jobs.spark_session import get_spark

            os.environ.setdefault("TRANSFERTRAJ_SPARK_LOG_LEVEL", "ERROR")
            self._spark = get_spark("transfertraj-serving", self._settings())
        return self._spark

    def _context(self, name: str):
        """The city's context at the versions recorded in the model (None: a city without OSM)."""
        if name not in self._contexts:
            city, versions = self.cities[name], self.spec["cities"][name]["context_versions"]
            if not city.has_osm or not versions:
                self._contexts[name] = None
            else:
                from transfertraj.feature_store.delta_io import read_table
                from transfertraj.feature_store.tables import table_path
                from transfertraj.jobs.context_density import load_context

                spark, settings = self._spark_session(), self._settings()
                frames = [
                    read_table(spark, table_path(settings, t), version=int(versions[t]), where={"city": name})[0]
                    for t in ("context_pois", "context_grid")
                ]
                log.info("%s: context tables at versions %s", name, versions)
                self._contexts[name] = load_context(*frames)
        return self._contexts[name]

    # -- inference -----------------------------------------------------------------------------
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from transfertraj.model.predict import predict as model_predict

        params = dict(params or {})
        task = str(params.get("task") or "tp")
        mu = int(params.get("mu") or 8)
        name = str(params.get("city") or self.spec["default_city"])
        if name not in self.cities:
            raise ServingInputError(f"this model knows cities {sorted(self.cities)}, not {name!r}")
        mask_task = model_task(task, mu)
        city = self.cities[name]
        points = check_points(pd.DataFrame(model_input))
        expanded = expand_for_task(
            points, task if task != "od" else "odtte", interval_s=city.sampling_interval_s, mu=mu
        )
        table = features_from_points(self._spark_session(), expanded, city, self._context(name))
        preds = model_predict(self.torch_model, table, mask_task, device="cpu", max_points=None)
        return answer(preds, expanded, "odtte" if mask_task == "od" else task)
