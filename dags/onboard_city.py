"""Onboard a new city by trigger: config -> context -> ingest -> zero-shot -> few-shot fine-tune -> register.

A person triggers it with the city's parameters (typed and checked here, then checked again against
the city schema by the first task, which fails at once, without retries, naming every bad field):
name, bbox [min_lon, min_lat, max_lon, max_lat], IANA time zone, the raw GPS file (inside the data
root) with its format and column mapping or a preset (porto_csv, cabspotting, geolife), the sampling
interval, phi, the OSM source, N few-shot trajectories. The first task writes
<data root>/config/cities/<name>.yaml and refuses an existing name unless `replace` is set.
Then: OSM context tables, landing + ingestion + features of the first `max_dates` delivery dates,
the base champion scored zero-shot on the city's validation split, a few-shot fine-tune of it, and
the registration of `transfertraj-<city>` through the challenger -> champion gate (a first version must
beat the zero-shot base model on the same features version, or the base weights become the champion).
Task logic: `transfertraj.tasks.onboard` (trigger checks: `transfertraj.tasks.onboard_params`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from transfertraj.core.constants import CITY_NAME_PATTERN, PHI_DEFAULT_M
from transfertraj.tasks import onboard
from transfertraj.tasks.onboard_params import RAW_PRESETS, OnboardParamsError
from transfertraj.tasks.policy import DEFAULT_ARGS, train_pool, train_queue


@dag(
    dag_id="onboard_city",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["transfertraj", "onboarding", "training", "registry"],
    params={
        "city": Param("newcity", type="string", pattern=CITY_NAME_PATTERN, description="lower case, digits, _"),
        "description": Param("", type="string"),
        "bbox": Param(
            [0.0, 0.0, 0.1, 0.1],
            type="array",
            items={"type": "number"},
            minItems=4,
            maxItems=4,
            description="[min_lon, min_lat, max_lon, max_lat] in WGS-84 degrees",
        ),
        "timezone": Param("UTC", type="string", description="IANA name, e.g. Europe/Lisbon"),
        "raw_path": Param(
            "", type="string", description="raw GPS file, inside the data root (absolute or relative to it)"
        ),
        "raw_preset": Param(
            "",
            type="string",
            enum=["", *sorted(RAW_PRESETS)],
            description="a known format with its column mapping; or give raw_format + columns",
        ),
        "raw_format": Param("", type="string", enum=["", "porto_csv", "point_log"]),
        "columns": Param(
            {}, type="object", description="point_log: {vehicle_id, timestamp, lon, lat[, trip_state]} -> file columns"
        ),
        "timestamp_format": Param("", type="string", description="unix_s | unix_ms | a Spark datetime pattern"),
        "timestamp_timezone": Param("", type="string"),
        "trip_state_value": Param("", type="string"),
        "licence": Param("", type="string", description="licence of the raw data (required)"),
        "sampling_interval_s": Param(15, type="number", exclusiveMinimum=0, maximum=3600),
        "phi_m": Param(PHI_DEFAULT_M, type="number", exclusiveMinimum=0, maximum=2000),
        "osm_kind": Param("none", type="string", enum=["none", "osm_xml", "gis_extract", "overpass"]),
        "osm_path": Param("", type="string"),
        "osm_points_path": Param("", type="string"),
        "poi_categories_covered": Param([], type="array", items={"type": "string"}),
        "cleaning": Param({}, type="object", description="overrides of the cleaning rules (city config `cleaning`)"),
        "quality": Param(
            {}, type="object", description="quality gate overrides (max_rejected_share, min_trajectories)"
        ),
        "max_dates": Param(3, type="integer", minimum=1, description="delivery dates to ingest for onboarding"),
        "n_shot": Param(100, type="integer", minimum=1, description="few-shot: fine-tune on N trajectories"),
        "epochs": Param(10, type="integer", minimum=1),
        "replace": Param(
            False, type="boolean", description="replace a city of this name written by an earlier trigger"
        ),
    },
)
def onboard_city():
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
    built = context(city)
    ingested = ingest(city)
    built >> ingested
    zs = zero_shot(city)
    ingested >> zs
    finetune_register(city, zs)


onboard_city()
