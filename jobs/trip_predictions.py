"""Batch predictions: a registered model's answers for every clean trip of a day, in Delta.

    from transfertraj.jobs.trip_predictions import score_date
    score_date(spark, "porto", "2013-07-01", model_dir, ModelRef("transfertraj-porto", "3", uri), settings)
    # -> {"city": "porto", "date": "2013-07-01", "trips": 1212, "scored": 1212,
    #     "rows": {"odtte": 1212, "tp": 1190, "tr": 1104}, "version": 7}

Input: the day's silver partition (one row per clean trajectory). Each trip is asked, as a recorded
drive with the task's part held out (the rule of transfertraj.holdout), what the served model answers:

| task  | the model is given                         | predicted, on the row                          |
|-------|--------------------------------------------|------------------------------------------------|
| odtte | origin (first point), destination (last)   | travel time (min), beside the actual duration  |
| tp    | all points but the last 5                  | those 5 points (ts, lon, lat), mean error (m)  |
| tr    | every 8th point from the first (mu = 8)    | the points between, mean error (m)             |

What is held out never reaches the model (serving.expand_for_task makes placeholders the mask hides), so
the truth beside each prediction is a fair comparison: the nightly record of how the champion does.
A trip too short for a task (TP: under 6 points; TR: under 9) has no row for it.

The model is the MLflow pyfunc itself, as served (features built by the pyfunc from the points, no
training/serving skew), loaded once per Python worker from a local copy that Spark ships to the
executors (SparkContext.addFile). `mapInPandas` and not `mlflow.pyfunc.spark_udf`: a spark_udf must
answer one row per input row, and an OD request is two point rows per answer.

Output: the `predictions` table, partitioned by city and date, one row per (trip, task, model version),
with the model's name, version and URI on each row. A rerun replaces its (city, date, model version)
slice in one Delta commit (replaceWhere); other versions' predictions of the day stay beside it. A
table written before TP/TR rows existed gains their columns on the next write (mergeSchema); its OD
rows keep theirs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transfertraj.core.settings import Settings

log = logging.getLogger(__name__)

TASKS = ("odtte", "tp", "tr")  # what a nightly run answers for each trip
TR_MU = 8  # TR: one point kept every 8 sampling intervals (the paper's middle setting)
_MODELS: dict[str, object] = {}  # local model folder -> loaded pyfunc, per Python worker


@dataclass(frozen=True)
class ModelRef:
    """The registered model version the predictions come from (written on every row)."""

    name: str
    version: str
    uri: str


def od_requests(silver):
    """Silver trips -> one row per trip with its origin and destination point and its whole path
    (ts, lon, lat arrays, for the TP and TR requests), built-in functions only."""
    from pyspark.sql import functions as F

    return silver.select(
        "trip_id",
        "start_ts",
        (F.col("duration_s") / 60.0).alias("actual_travel_time_min"),
        *[F.element_at(c, 1).alias(f"o_{c}") for c in ("ts", "lon", "lat")],
        *[F.element_at(c, -1).alias(f"d_{c}") for c in ("ts", "lon", "lat")],
        "ts",
        "lon",
        "lat",
    )


def od_points(requests):
    """pandas rows of od_requests -> the pyfunc's input: two point rows per trip (origin, destination)."""
    import pandas as pd

    ends = [
        requests[["trip_id", f"{e}_ts", f"{e}_lon", f"{e}_lat"]].set_axis(["trip_id", "ts", "lon", "lat"], axis=1)
        for e in ("o", "d")
    ]
    return pd.concat(ends, ignore_index=True)


def trip_points(requests):
    """pandas rows of od_requests -> one row per point: trip_id, point (index in the trip), ts, lon, lat."""
    import numpy as np
    import pandas as pd

    n = np.array([len(t) for t in requests["ts"]], dtype=np.int64)
    return pd.DataFrame(
        {
            "trip_id": np.repeat(requests["trip_id"].astype(str).to_numpy(), n),
            "point": np.concatenate([np.arange(k) for k in n]) if len(n) else np.zeros(0, np.int64),
            "ts": np.concatenate([np.asarray(t, np.int64) for t in requests["ts"]]) if len(n) else [],
            "lon": np.concatenate([np.asarray(v, float) for v in requests["lon"]]) if len(n) else [],
            "lat": np.concatenate([np.asarray(v, float) for v in requests["lat"]]) if len(n) else [],
        }
    )


def held_out(points, task: str, mu: int = TR_MU):
    """trip_points -> (request rows the model may see, truth rows it predicts) for tp or tr, as
    transfertraj.holdout.split holds them out (the shell's module; jobs sit below it): TP hides the
    last 5 points, TR keeps every mu-th point up to the last one that closes a gap. Trips too short
    for the task are in neither."""
    from transfertraj.core.constants import TP_FUTURE

    pos = points["point"].to_numpy()
    n = points.groupby("trip_id", sort=False)["point"].transform("size").to_numpy()
    if task == "tp":
        keep, seen = n >= TP_FUTURE + 1, pos < n - TP_FUTURE
    elif task == "tr":
        keep, seen = (n >= mu + 1) & (pos <= (n - 1) // mu * mu), pos % mu == 0
    else:
        raise ValueError(f"held_out: tp or tr, not {task!r}")
    cols = ["trip_id", "ts", "lon", "lat"]
    return points.loc[keep & seen, cols].reset_index(drop=True), points[keep & ~seen].reset_index(drop=True)


def point_rows(answers, truth):
    """Point answers (serving: trip_id, point, ts, pred_lon, pred_lat) and the truth they predict -> one
    row per trip: the predicted points in order (arrays), how many, and their mean haversine error."""
    from transfertraj.core.geo import haversine_m

    scored = answers.assign(trip_id=answers["trip_id"].astype(str)).merge(
        truth[["trip_id", "point", "lon", "lat"]], on=["trip_id", "point"], how="left"
    )
    scored["error_m"] = haversine_m(scored["pred_lon"], scored["pred_lat"], scored["lon"], scored["lat"])
    g = scored.sort_values(["trip_id", "point"], kind="stable").groupby("trip_id", sort=False)
    out = g.agg(
        n_predicted=("point", "size"),
        pred_ts=("ts", list),
        pred_lon=("pred_lon", list),
        pred_lat=("pred_lat", list),
        mean_error_m=("error_m", "mean"),
    )
    return out.reset_index()


def _model(folder: str):
    import mlflow.pyfunc

    if folder not in _MODELS:
        _MODELS[folder] = mlflow.pyfunc.load_model(folder)
    return _MODELS[folder]


def output_schema():
    """One row per (trip, task): OD fills the travel-time columns, TP and TR the point columns."""
    from pyspark.sql.types import (
        ArrayType,
        DoubleType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    return StructType(
        [
            StructField("trip_id", StringType(), False),
            StructField("start_ts", TimestampType(), False),
            StructField("task", StringType(), False),
            StructField("mu", IntegerType(), True),  # TR only: one point kept every mu
            StructField("actual_travel_time_min", DoubleType(), False),
            StructField("pred_travel_time_min", DoubleType(), True),  # OD
            StructField("n_predicted", IntegerType(), True),  # TP / TR: points predicted
            StructField("pred_ts", ArrayType(LongType()), True),
            StructField("pred_lon", ArrayType(DoubleType()), True),
            StructField("pred_lat", ArrayType(DoubleType()), True),
            StructField("mean_error_m", DoubleType(), True),  # TP / TR: against the held-out points
        ]
    )


def answer_frame(model, frame, city: str, tasks=TASKS):
    """One batch of od_requests rows -> the output rows of every task (pandas), the pyfunc called once
    per task on the whole batch."""
    import pandas as pd

    trips = frame[["trip_id", "start_ts", "actual_travel_time_min"]].assign(trip_id=frame["trip_id"].astype(str))
    parts = []
    if "odtte" in tasks:
        answer = model.predict(od_points(frame), params={"task": "odtte", "city": city})
        answer = answer.rename(columns={"travel_time_min": "pred_travel_time_min"})
        answer["trip_id"] = answer["trip_id"].astype(str)
        parts.append(trips.merge(answer, on="trip_id", how="left").assign(task="odtte"))
    points = trip_points(frame)
    for task in (t for t in tasks if t != "odtte"):
        request, truth = held_out(points, task, TR_MU)
        if request.empty:
            continue
        answer = model.predict(request, params={"task": task, "mu": TR_MU, "city": city})
        rows = trips.merge(point_rows(answer, truth), on="trip_id", how="inner")
        parts.append(rows.assign(task=task, mu=TR_MU if task == "tr" else None))
    names = [f.name for f in output_schema().fields]
    parts = [p.dropna(axis=1, how="all") for p in parts]  # the other tasks' columns come back in reindex
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)
    out = out.reindex(columns=names)
    for col in ("pred_ts", "pred_lon", "pred_lat"):  # OD rows: null arrays (None; Spark would iterate a NaN)
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out.astype(
        {"pred_travel_time_min": "float64", "mean_error_m": "float64", "n_predicted": "Int32", "mu": "Int32"}
    )


def predict_trips(requests, model_file: str, city: str, tasks=TASKS):
    """od_requests -> output_schema rows, the pyfunc called in mapInPandas on each batch. `model_file`:
    the name the model folder was shipped under (addFile)."""

    def batches(frames):
        from pyspark import SparkFiles

        model = _model(SparkFiles.get(model_file))
        for frame in frames:
            if not frame.empty:
                yield answer_frame(model, frame, city, tasks)

    return requests.mapInPandas(batches, output_schema())


def with_model(predictions, model: ModelRef, city: str, date: str):
    """Name the model on every row, and the slice's partition and time of scoring."""
    from pyspark.sql import functions as F

    return predictions.select(
        "trip_id",
        "start_ts",
        "task",
        "mu",
        "pred_travel_time_min",
        "actual_travel_time_min",
        (F.col("pred_travel_time_min") - F.col("actual_travel_time_min")).alias("error_min"),
        "n_predicted",
        "pred_ts",
        "pred_lon",
        "pred_lat",
        "mean_error_m",
        F.lit(model.name).alias("model_name"),
        F.lit(int(model.version)).alias("model_version"),
        F.lit(model.uri).alias("model_uri"),
        F.current_timestamp().alias("scored_at"),
        F.lit(city).alias("city"),
        F.lit(date).alias("date"),
    )


def replace_slice(rows, path: str, partition: dict, *, partition_by, user_metadata: str) -> int:
    """feature_store.delta_io.replace_partition with mergeSchema: a predictions table written before the
    TP/TR columns existed gains them (its old rows read them as null) instead of refusing the write."""
    from transfertraj.feature_store.delta_io import latest_version, partition_predicate

    predicate = partition_predicate(partition)
    (
        rows.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("mergeSchema", "true")
        .option("userMetadata", user_metadata)
        .partitionBy(*partition_by)
        .save(path)
    )
    version = latest_version(rows.sparkSession, path)
    log.info("replaced %s in %s (version %s)", predicate, path, version)
    return version


def score_date(spark, city: str, date: str, model_dir: str, model: ModelRef, settings: Settings, tasks=TASKS) -> dict:
    """Score the day's silver trips of `city` with the pyfunc in `model_dir` (a local copy of `model`) for
    `tasks` and replace the (city, date, model version) slice of `predictions`."""
    from pathlib import Path

    from pyspark.sql import functions as F

    from transfertraj.feature_store.delta_io import read_table
    from transfertraj.feature_store.tables import TABLES, table_path

    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; use {', '.join(TASKS)}")
    try:
        silver, silver_version = read_table(spark, table_path(settings, "silver"), where={"city": city, "date": date})
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no silver table at {table_path(settings, 'silver')}: run nightly_ingest_{city} for {date} first"
        ) from None
    spark.sparkContext.addFile(model_dir, recursive=True)  # ships the model to every executor
    predictions = predict_trips(od_requests(silver), Path(model_dir).name, city, tuple(tasks))
    rows = with_model(predictions, model, city, date).cache()
    per_task = {r["task"]: int(r["count"]) for r in rows.groupBy("task").count().collect()}
    scored = rows.filter((F.col("task") == "odtte") & F.col("pred_travel_time_min").isNotNull()).count()
    trips = silver.count()
    version = replace_slice(
        rows,
        table_path(settings, "predictions"),
        {"city": city, "date": date, "model_version": int(model.version)},
        partition_by=TABLES["predictions"].partition_by,
        user_metadata=f"{model.uri} on silver v{silver_version}",
    )
    rows.unpersist()
    log.info(
        "%s %s: %d of %d trips scored by %s, rows per task %s (predictions v%s)",
        city,
        date,
        scored,
        trips,
        model.uri,
        per_task,
        version,
    )
    return {
        "city": city,
        "date": date,
        "trips": int(trips),
        "scored": int(scored),
        "rows": {t: per_task.get(t, 0) for t in tasks},
        "model": model.uri,
        "version": version,
    }
