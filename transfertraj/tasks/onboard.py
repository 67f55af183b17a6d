"""The onboard_city tasks: a triggered city, from its config file to a gated `transfertraj-<city>` model.

    from transfertraj.tasks import onboard
    onboard.check_params(params)                         # the city config dict, or OnboardParamsError
    onboard.base_champion_ready(waited_s=0, wait_s=3600) # True, False (look again) or BaseChampionMissing
    onboard.write_city_config(params)                    # <data root>/config/cities/<name>.yaml
    onboard.build_city_context("lisbon")                 # OSM context tables
    onboard.land_and_ingest("lisbon", max_dates=3)       # landing, ingest, features of 3 delivery dates
    zs = onboard.zero_shot("lisbon")                     # the base champion, before fine-tuning
    onboard.finetune_city("lisbon", n_shot=100, run_key="manual", zero_shot_metrics=zs["metrics"],
                          features_version=zs["features_version"])

The trigger's params are checked first (onboard_params, nothing written); a bad trigger raises
OnboardParamsError, which the DAG turns into a failure without retries. Onboarding fine-tunes the base
model's champion, so the DAG then waits for one (a sensor over base_champion_ready) and stops, saying
to run the pretrain DAG, when none comes in time. A bad city file, and a city none of whose dates pass the gate,
fail without retries too (AirflowFailException, see tasks.ingest.no_retry); I/O errors are retried.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from transfertraj.core.settings import Settings
from transfertraj.tasks.ingest import no_retry
from transfertraj.tasks.onboard_params import OnboardParamsError, onboard_config
from transfertraj.tasks.spark import task_spark
from transfertraj.tasks.training_data import read_city_data
from transfertraj.tasks.training_run import checkpoint_dir, finite, registered, train_overrides

log = logging.getLogger("transfertraj.pipeline")


def check_params(params: dict) -> dict:
    """The trigger and the city config it makes, checked without writing anything (onboard_city's first task)."""
    return onboard_config(params, Settings.load())


class BaseChampionMissing(LookupError):
    """No `transfertraj-base@champion` after the trigger's champion_wait_s: nothing to fine-tune yet."""


def base_champion_ready(*, waited_s: float, wait_s: float, settings: Settings | None = None) -> bool:
    """True once models:/transfertraj-base@champion exists; False to look again; raises when waited long enough.

    Onboarding before pretraining has finished used to fail in zero_shot with a LookupError and pass on a
    retry; the DAG now says what it needs and waits for it, or stops with this message."""
    from transfertraj import registry

    settings = settings or Settings.load()
    if registry.champion_model(registry.configure(settings), registry.BASE_MODEL) is not None:
        return True
    if waited_s >= wait_s:
        raise BaseChampionMissing(
            f"models:/{registry.BASE_MODEL}@{registry.CHAMPION} does not exist after {waited_s:.0f} s "
            f"(champion_wait_s={wait_s:.0f}): onboarding fine-tunes the base model's champion, so run the "
            "pretrain DAG first (`airflow dags trigger pretrain`, or `transfertraj demo`) and let its gate name "
            f"a champion (`transfertraj models list`), then trigger onboard_city again or with a longer champion_wait_s"
        )
    log.info(
        "no %s@%s yet after %.0f s of %.0f s; looking again", registry.BASE_MODEL, registry.CHAMPION, waited_s, wait_s
    )
    return False


def write_city_config(params: dict) -> str:
    """First onboarding task: validate the trigger, write <data root>/config/cities/<name>.yaml, load it back."""
    from transfertraj.core.city_config import CityConfigError, city_to_yaml, list_cities, load_city_file, parse_city

    settings = Settings.load()
    data = onboard_config(params, settings)  # the trigger, and the city config it makes, checked by field
    try:
        city = parse_city(data, f"onboard_city params for {data['name']}")
    except CityConfigError as err:  # onboard_config checked the same schema; kept for a config it missed
        raise OnboardParamsError(f"onboard_city: bad parameters:\n  {err}") from None
    folder = (settings.home / "config" / "cities").resolve()
    if folder not in [Path(d).resolve() for d in settings.city_dirs]:
        raise OnboardParamsError(
            f"onboard_city: {folder} is not on the city search path ({os.pathsep.join(map(str, settings.city_dirs))}); "
            "add it to TRANSFERTRAJ_CITY_DIRS"
        )
    existing = list_cities(settings).get(city.name)
    target = folder / f"{city.name}.yaml"
    if existing is not None:
        if not params.get("replace"):
            raise OnboardParamsError(
                f"onboard_city: a city named {city.name!r} exists ({existing}); trigger with replace=true to replace it"
            )
        if Path(existing).resolve() != target:
            raise OnboardParamsError(
                f"onboard_city: {city.name!r} is defined by {existing}, ahead of {folder} on the search path; "
                "choose another name (bundled cities are not replaced by a trigger)"
            )
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# written by onboard_city at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n" + city_to_yaml(city))
    load_city_file(target)  # what every later task will read, checked once more from disk
    log.info("wrote %s", target)
    return str(target)


def build_city_context(city_name: str) -> dict:
    """The city's OSM context tables (roads, POIs, density grid)."""
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.context_tables import build_context_tables

    settings = Settings.load()
    with no_retry():
        city = load_city(city_name, settings)
    return build_context_tables(task_spark(settings), city, settings)


def land_and_ingest(city_name: str, max_dates: int) -> dict:
    """Land the city's raw file by delivery date, ingest and featurize the first `max_dates` dates.

    A date failing the quality gate, or whose files could not be read, is reported and skipped; no date
    at all is an error."""
    from airflow.sdk.exceptions import AirflowFailException

    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.featurize import featurize_date
    from transfertraj.jobs.ingest import QualityGateError, ingest_date
    from transfertraj.jobs.land_sample import land_sample
    from transfertraj.jobs.landed_files import LandingError
    from transfertraj.jobs.quality_report import write_quality_report

    settings = Settings.load()
    with no_retry():
        city = load_city(city_name, settings)
    spark = task_spark(settings)
    dates = list(land_sample(city, settings))[: max(1, int(max_dates))]
    done, failed = [], {}
    for day in dates:
        try:
            report = ingest_date(spark, city, day, settings)
        except (QualityGateError, LandingError) as err:
            failed[day] = str(err)
            continue
        finally:
            write_quality_report(spark, city, day, settings)
        if report.trajectories_out:
            feats = featurize_date(spark, city, day, settings)
            done.append(
                {"date": day, "trajectories": feats["trajectories"], "features_version": feats["features_version"]}
            )
    if not done:
        # Every date refused or without trajectories: the same input gives the same answer on a retry.
        raise AirflowFailException(
            f"{city.name}: no delivery date produced features ({failed or 'no trajectories'}); "
            "see the quality reports, fix the city file or the data, then trigger onboard_city again"
        )
    return {"city": city.name, "dates": done, "failed": failed}


def zero_shot(city_name: str) -> dict:
    """The base champion on the new city's validation split, before any fine-tuning."""
    from transfertraj import registry

    settings = Settings.load()
    registry.configure(settings)
    uri = f"models:/{registry.BASE_MODEL}@{registry.CHAMPION}"
    _require_champion(settings, registry.BASE_MODEL)
    data, version, _ = read_city_data(settings, [city_name])
    metrics = registry.validation_metrics(registry.served_networks(uri, settings), data, version, settings=settings)
    log.info("zero-shot %s on %s (features v%s): %s", uri, city_name, version, metrics)
    return {"model": uri, "features_version": version, "metrics": finite(metrics)}


def _require_champion(settings: Settings, name: str) -> None:
    from transfertraj import registry

    if registry.champion_model(registry.configure(settings), name) is None:
        raise LookupError(f"{name} has no champion yet: run the pretrain DAG (or `transfertraj demo`) first")


def finetune_city(
    city_name: str,
    *,
    n_shot: int,
    run_key: str,
    zero_shot_metrics: dict | None = None,
    features_version: int | None = None,
    **overrides,
) -> dict:
    """Few-shot fine-tune the base champion on the city, log the run, register transfertraj-<city>, gate it.

    The fine-tune uses the pretraining mask (every modality of random points and segments hidden), so one
    city model answers TP, TR and OD-TTE; the task masks differ only at inference (model.masking).
    features_version pins the city's features (the zero-shot task's version, so both are scored on the same
    validation rows; latest when None). The city's first version must beat the base model it started from
    on that validation set, or the base weights become the city's champion (registry.register_zero_shot)."""
    from transfertraj import registry
    from transfertraj.core.city_config import load_city
    from transfertraj.model.train import finetune

    settings = Settings.load()
    _require_champion(settings, registry.BASE_MODEL)
    base_version = registry.champion_model(registry.configure(settings), registry.BASE_MODEL).version
    base_uri = f"models:/{registry.BASE_MODEL}/{base_version}"  # one version for the fine-tune and the gate
    base_ckpt = registry.checkpoint_of(base_uri, settings)
    data, version, ctx = read_city_data(settings, [city_name], features_version)
    out_dir = checkpoint_dir(settings, registry.city_model_name(city_name), run_key)
    ckpt = finetune(
        base_ckpt,
        "pretrain",
        data,
        data_version=version,
        out_dir=out_dir,
        n_shot=int(n_shot),
        progress=False,
        **train_overrides(overrides),
    )
    extra = {f"zero_shot/{k}": v for k, v in (zero_shot_metrics or {}).items() if v is not None}
    reg = registry.log_and_register(
        settings=settings,
        experiment=registry.CITY_EXPERIMENT,
        model_name=registry.city_model_name(city_name),
        checkpoint=ckpt,
        cities=[load_city(city_name, settings)],
        data_versions={"features_version": version},
        context_versions=ctx,
        features=data,
        features_version=version,
        run_name=f"{city_name} {n_shot}-shot {run_key}",
        extra_metrics=extra,
        extra_tags={"base_model": f"{registry.BASE_MODEL}/{base_version}", "n_shot": str(n_shot)},
        zero_shot_base=base_uri,
    )
    return registered(reg)
