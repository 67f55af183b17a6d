"""The nightly scoring task: a city's registered champion applied to a day's silver trips, on Spark.

    from transfertraj.tasks import scoring
    scoring.score_city_date("porto", "2013-07-01")                                   # the champion
    scoring.score_city_date("porto", "2013-07-01", "models:/transfertraj-porto/3")  # a given version
    scoring.score_city_date("porto", "2013-07-01", tasks=("odtte",))                 # OD-TTE only
    transfertraj score-batch --city porto --date 2013-07-01 [--model URI]           # the same, by hand

The model: `models:/transfertraj-<city>@champion`, or for a city without a city model (a source city
of the base model) `models:/transfertraj-base@champion`. An alias is resolved once, here, to a version,
so every row of a run names the same version and a rerun after a promotion writes the new version's
slice beside the old one. The Spark work is jobs.trip_predictions; dates come from the features Asset
events that trigger dags/nightly_scoring.py (`featured_dates`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transfertraj.core.settings import Settings
from transfertraj.tasks.spark import task_spark

log = logging.getLogger("transfertraj.pipeline")


def model_for_city(settings: Settings, city: str, model_uri: str | None = None):
    """(ModelRef with a version number, never an alias) of `model_uri`, or of the city's default model."""
    from mlflow.exceptions import MlflowException

    from transfertraj import registry
    from transfertraj.jobs.trip_predictions import ModelRef

    client = registry.configure(settings)
    if model_uri is None:
        for name in (registry.city_model_name(city), registry.BASE_MODEL):
            if registry.champion_model(client, name) is not None:
                model_uri = f"models:/{name}@{registry.CHAMPION}"
                break
        else:
            raise LookupError(
                f"no champion to score {city} with: run onboard_city for it (or pretrain, for a source city)"
            )
    try:
        name, version = registry.resolve_version(client, model_uri)
        client.get_model_version(name, version)
    except MlflowException as err:
        raise LookupError(
            f"{model_uri}: no such model version ({err.message}); see `transfertraj models list`"
        ) from None
    return ModelRef(name, version, f"models:/{name}/{version}")


def shipped_name(settings: Settings, model) -> str:
    """<name>-v<version>-<digest of data root, registry and URI>: unique per model version and registry."""
    import hashlib

    key = f"{settings.home.resolve()}|{settings.mlflow_tracking_uri}|{model.uri}"
    return f"{model.name}-v{model.version}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def local_copy(settings: Settings, model) -> Path:
    """The model's files under <data root>/scoring/models/<name>-v<version>-<registry digest> (downloaded
    once: a version never changes), the folder Spark ships to its executors.

    The digest of the registry (data root + model URI) is in the name because Spark's addFile refuses a
    second, different folder of the same name in one session: two data roots (or registries) each have a
    `transfertraj-base` version 1."""
    import mlflow.artifacts

    from transfertraj import registry

    registry.configure(settings)
    target = settings.home / "scoring" / "models" / shipped_name(settings, model)
    if not (target / "MLmodel").exists():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=model.uri, dst_path=str(target))
    return target


def score_city_date(
    city: str, date: str, model_uri: str | None = None, settings: Settings | None = None, tasks=None
) -> dict:
    """Score the city's silver trips of `date` with the champion (or `model_uri`) into `predictions`:
    OD-TTE, TP and TR (mu 8) per trip, or only `tasks` (see jobs.trip_predictions.TASKS)."""
    from transfertraj.jobs.trip_predictions import TASKS, score_date

    settings = settings or Settings.load()
    model = model_for_city(settings, city, model_uri)
    local = str(local_copy(settings, model))
    result = score_date(task_spark(settings), city, date, local, model, settings, tuple(tasks or TASKS))
    if not result["trips"]:
        log.warning("%s %s: no silver trips to score (was the date ingested?)", city, date)
    return result


def featured_dates(events) -> list[str]:
    """The delivery dates named by the features Asset events that triggered a run (event.extra["date"],
    written by nightly_ingest's featurize task), oldest first, each once."""
    return sorted({e.extra["date"] for e in events if (e.extra or {}).get("date")})
