"""Onboard a new city by trigger: base champion? -> config -> context -> ingest -> zero-shot -> few-shot -> register.

A person triggers it with the city's parameters: name, bbox [min_lon, min_lat, max_lon, max_lat], IANA
time zone, the raw GPS file (under <data root>/incoming) with its format and column mapping or a preset
(porto_csv, cabspotting, geolife), the licence, the sampling interval, phi, the OSM source, N few-shot
trajectories. The Params are generated from the trigger's pydantic model
(`transfertraj.tasks.onboard_params.OnboardTrigger`), so the trigger form refuses a wrong type, a number
out of range or a missing required field, and the first task refuses the rest (unknown keys, files
outside the incoming folder, time zones, the city schema) at once, without retries, naming every bad
field. docs/onboarding.md is the walk-through, with every error and what to do about it.

0. `check_params`: the whole trigger validated (nothing written), so a bad one fails in seconds, not
   after the wait below.
1. `wait_for_base_champion`: onboarding fine-tunes `models:/transfertraj-base@champion`; a sensor (reschedule
   mode, so it holds no worker slot) looks for it every TRANSFERTRAJ_POKE_INTERVAL_S and stops after
   `champion_wait_s`, saying to run the pretrain DAG first.
2. `write_config`: <data root>/config/cities/<name>.yaml; an existing name is refused unless `replace`.
3. OSM context tables, landing + ingestion + features of the first `max_dates` delivery dates, the base
   champion scored zero-shot on the city's validation split, a few-shot fine-tune of it, and the
   registration of `transfertraj-<city>` through the challenger -> champion gate (a first version must
   beat the zero-shot base model on the same features version, or the base weights become the champion).
Task logic: `transfertraj.tasks.onboard` (trigger checks: `transfertraj.tasks.onboard_params`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import PokeReturnValue, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from transfertraj.core.settings import Settings
from transfertraj.tasks import onboard
from transfertraj.tasks.onboard_params import MAX_CHAMPION_WAIT_S, OnboardParamsError, airflow_params
from transfertraj.tasks.policy import DEFAULT_ARGS, train_pool, train_queue


@dag(
    dag_id="onboard_city",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["transfertraj", "onboarding", "training", "registry"],
    params=airflow_params(),
)
def onboard_city():
    # The param champion_wait_s (at most MAX_CHAMPION_WAIT_S) ends the wait with a message; the
    # sensor's own timeout is only the backstop behind it.
    @task.sensor(mode="reschedule", poke_interval=Settings.load().poke_interval_s, timeout=MAX_CHAMPION_WAIT_S + 3600)
    def wait_for_base_champion() -> PokeReturnValue:
        ctx = get_current_context()
        first = ctx["ti"].get_first_reschedule_date(ctx)
        waited = (pendulum.now("UTC") - first).total_seconds() if first else 0.0
        try:
            ready = onboard.base_champion_ready(waited_s=waited, wait_s=ctx["params"]["champion_wait_s"])
        except onboard.BaseChampionMissing as err:
            raise AirflowFailException(str(err)) from None  # waiting longer is the trigger's choice, not a retry
        return PokeReturnValue(is_done=ready)

    @task(retries=0)
    def check_params() -> None:
        try:
            onboard.check_params(dict(get_current_context()["params"]))
        except OnboardParamsError as err:
            raise AirflowFailException(str(err)) from None  # a bad trigger never improves on retry

    @task(retries=0)
    def write_config() -> str:
        params = dict(get_current_context()["params"])
        try:
            onboard.write_city_config(params)
        except OnboardParamsError as err:
            raise AirflowFailException(str(err)) from None  # a bad trigger never improves on retry
        return params["city"]

    @task
    def context(city: str) -> dict:
        return onboard.build_city_context(city)

    @task
    def ingest(city: str) -> dict:
        return onboard.land_and_ingest(city, get_current_context()["params"]["max_dates"])

    @task
    def zero_shot(city: str) -> dict:
        return onboard.zero_shot(city)

    @task(pool=train_pool(), queue=train_queue(), retries=1)
    def finetune_register(city: str, zs: dict) -> dict:
        ctx = get_current_context()
        p = ctx["params"]
        return onboard.finetune_city(
            city,
            n_shot=p["n_shot"],
            run_key=ctx["run_id"],
            zero_shot_metrics=zs["metrics"],
            features_version=zs["features_version"],  # the zero-shot's validation rows, pinned
            epochs=p["epochs"],
        )

    city = write_config()
    check_params() >> wait_for_base_champion() >> city
    built = context(city)
    ingested = ingest(city)
    built >> ingested
    zs = zero_shot(city)
    ingested >> zs
    finetune_register(city, zs)


onboard_city()
