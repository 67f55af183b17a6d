"""Nightly ingestion, one DAG per configured city: `nightly_ingest_<city>`.

Each run ingests the delivery date of its data interval (a day in the city's own time zone, from a
`CronDataIntervalTimetable`, never the wall clock): landing -> bronze, rejects, silver, runs; then
silver -> features; then the HTML quality report (written even when the quality gate fails the run).
The features task publishes the Asset `transfertraj_features_<city>` (event extra: the date), on which
`pretrain` and `nightly_scoring_<city>` are scheduled.
Backfill a range with `airflow backfill create --dag-id nightly_ingest_porto --from-date ... --to-date ...`.

Task logic lives in `transfertraj.tasks.ingest`; this file is wiring only.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, get_current_context, task

from transfertraj.tasks.ingest import (
    configured_cities,
    features_asset_uri,
    featurize_city_date,
    ingest_city_date,
    quality_report,
)
from transfertraj.tasks.policy import DEFAULT_ARGS


def _delivery_date(tz: str) -> str:
    """The run's delivery date: the start of its data interval, in the city's time zone."""
    ctx = get_current_context()
    override = ctx["params"].get("date")
    if override:
        return override
    return pendulum.instance(ctx["data_interval_start"]).in_timezone(tz).to_date_string()


def nightly_ingest_dag(name: str, tz: str):
    features = Asset(name=f"transfertraj_features_{name}", uri=features_asset_uri(name))

    @dag(
        dag_id=f"nightly_ingest_{name}",
        schedule=CronDataIntervalTimetable("0 2 * * *", timezone=tz),  # day D's files are in by 02:00 on D+1
        start_date=pendulum.datetime(2008, 1, 1, tz=tz),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        doc_md=__doc__,
        tags=["transfertraj", "ingest", name],
        params={
            "date": Param(
                None,
                type=["null", "string"],
                format="date",
                description="ingest this delivery date instead of the data interval's (YYYY-MM-DD)",
            ),
        },
    )
    def nightly():
        @task
        def ingest() -> dict:
            return ingest_city_date(name, _delivery_date(tz))

        @task(outlets=[features])
        def featurize(report: dict) -> dict:
            result = featurize_city_date(name, report["date"])
            # the date the event is about, for the Asset's consumers (nightly_scoring)
            get_current_context()["outlet_events"][features].extra = {"date": report["date"]}
            return result

        @task(trigger_rule="all_done", retries=0)
        def report() -> str:
            return quality_report(name, _delivery_date(tz))

        # report runs whatever ingest did (all_done) but is not the only leaf: a failed ingest leaves
        # featurize upstream_failed, so the run is failed instead of "success" by its report alone.
        ingested = ingest()
        featurize(ingested)
        ingested >> report()

    return nightly()


for _name, _city in configured_cities().items():
    globals()[f"nightly_ingest_{_name}"] = nightly_ingest_dag(_name, _city.timezone)
