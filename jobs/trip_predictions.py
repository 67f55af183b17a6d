"""Batch predictions: a registered model's OD travel-time answer for every clean trip of a day, in Delta.

    from transfertraj.jobs.trip_predictions import score_date
    score_date(spark, "porto", "2013-07-01", model_dir, ModelRef("transfertraj-porto", "3", uri), settings)
    # -> {"city": "porto", "date": "2013-07-01", "trips": 1212, "scored": 1212, "version": 7}

Input: the day's silver partition (one row per clean trajectory). Each trip is asked what the served
model answers for OD-TTE: its origin (first point) and destination (last point), the travel time in
minutes. The arrival time is a placeholder the model never sees (serving.expand_for_task), so the actual
duration beside the prediction is a fair comparison: the nightly record of how the champion does.

The model is the MLflow pyfunc itself, as served (features built by the pyfunc from the points, no
training/serving skew), loaded once per Python worker from a local copy that Spark ships to the
executors (SparkContext.addFile). `mapInPandas` and not `mlflow.pyfunc.spark_udf`: a spark_udf must
answer one row per input row, and an OD request is two point rows per answer.

Output: the `predictions` table, partitioned by city and date, one row per (trip, model version), with
the model's name, version and URI on each row. A rerun replaces its (city, date, model version) slice
in one Delta commit (replaceWhere); other versions' predictions of the day stay beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transfertraj.core.settings import Settings

log = logging.getLogger(__name__)

TASK = "odtte"
_MODELS: dict[str, object] = {}  # local model folder -> loaded pyfunc, per Python worker


@dataclass(frozen=True)
class ModelRef:
    """The registered model version the predictions come from (written on every row)."""

    name: str
    version: str
    uri: str


def od_requests(silver):
    """Silver trips -> one row per trip with its origin and destination point (built-in functions only)."""
    from pyspark.sql import functions as F

    return silver.select(
        "trip_id",
        "start_ts",
        (F.col("duration_s") / 60.0).alias("actual_travel_time_min"),
        *[F.element_at(c, 1).alias(f"o_{c}") for c in ("ts", "lon", "lat")],
        *[F.element_at(c, -1).alias(f"d_{c}") for c in ("ts", "lon", "lat")],
    )


def od_points(requests):
    """pandas rows of od_requests -> the pyfunc's input: two point rows per trip (origin, destination)."""
    import pandas as pd

    ends = [
        requests[["trip_id", f"{e}_ts", f"{e}_lon", f"{e}_lat"]].set_axis(["trip_id", "ts", "lon", "lat"], axis=1)
        for e in ("o", "d")
    ]
    return pd.concat(ends, ignore_index=True)


def _model(folder: str):
    import mlflow.pyfunc

    if folder not in _MODELS:
        _MODELS[folder] = mlflow.pyfunc.load_model(folder)
    return _MODELS[folder]


def predict_travel_times(requests, model_file: str, city: str):
    """od_requests -> (trip_id, start_ts, actual_travel_time_min, pred_travel_time_min), the pyfunc called
    in mapInPandas on each batch. `model_file`: the name the model folder was shipped under (addFile)."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType, TimestampType

    out_schema = StructType(
        [
            StructField("trip_id", StringType(), False),
            StructField("start_ts", TimestampType(), False),
            StructField("actual_travel_time_min", DoubleType(), False),
            StructField("pred_travel_time_min", DoubleType(), True),
        ]
    )

    def batches(frames):
        from pyspark import SparkFiles

        model = _model(SparkFiles.get(model_file))
        for frame in frames:
            if frame.empty:
                continue
            answer = model.predict(od_points(frame), params={"task": TASK, "city": city})
            answer = answer.rename(columns={"travel_time_min": "pred_travel_time_min"})
            answer["trip_id"] = answer["trip_id"].astype(str)
            merged = frame[["trip_id", "start_ts", "actual_travel_time_min"]].merge(answer, on="trip_id", how="left")
            yield merged[[f.name for f in out_schema.fields]].astype({"pred_travel_time_min": "float64"})

    return requests.mapInPandas(batches, out_schema)


def with_model(predictions, model: ModelRef, city: str, date: str):
    """Name the model on every row, and the slice's partition and time of scoring."""
    from pyspark.sql import functions as F

    return predictions.select(
        "trip_id",
        "start_ts",
        F.lit(TASK).alias("task"),
        "pred_travel_time_min",
        "actual_travel_time_min",
        (F.col("pred_travel_time_min") - F.col("actual_travel_time_min")).alias("error_min"),
        F.lit(model.name).alias("model_name"),
        F.lit(int(model.version)).alias("model_version"),
        F.lit(model.uri).alias("model_uri"),
        F.current_timestamp().alias("scored_at"),
        F.lit(city).alias("city"),
        F.lit(date).alias("date"),
    )


def score_date(spark, city: str, date: str, model_dir: str, model: ModelRef, settings: Settings) -> dict:
    """Score the day's silver trips of `city` with the pyfunc in `model_dir` (a local copy of `model`) and
    replace the (city, date, model version) slice of `predictions`."""
    from pathlib import Path

    from pyspark.sql import functions as F

    from transfertraj.feature_store.delta_io import read_table, replace_partition
    from transfertraj.feature_store.tables import TABLES, table_path

    try:
        silver, silver_version = read_table(spark, table_path(settings, "silver"), where={"city": city, "date": date})
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no silver table at {table_path(settings, 'silver')}: run nightly_ingest_{city} for {date} first"
        ) from None
    spark.sparkContext.addFile(model_dir, recursive=True)  # ships the model to every executor
    predictions = predict_travel_times(od_requests(silver), Path(model_dir).name, city)
    rows = with_model(predictions, model, city, date).cache()
    trips, scored = rows.agg(F.count("*"), F.count("pred_travel_time_min")).first()
    version = replace_partition(
        rows,
        table_path(settings, "predictions"),
        {"city": city, "date": date, "model_version": int(model.version)},
        partition_by=TABLES["predictions"].partition_by,
        user_metadata=f"{model.uri} on silver v{silver_version}",
    )
    rows.unpersist()
    log.info("%s %s: %d of %d trips scored by %s (predictions v%s)", city, date, scored, trips, model.uri, version)
    return {
        "city": city,
        "date": date,
        "trips": int(trips),
        "scored": int(scored),
        "model": model.uri,
        "version": version,
    }
