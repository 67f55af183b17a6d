"""Nightly batch scoring, one DAG per configured city: `nightly_scoring_<city>`.

Scheduled on the city's features Asset (`transfertraj_features_<city>`), which nightly_ingest publishes
after a delivery date is cleaned and featurized: each run scores the date(s) named by the triggering
Asset events with the city's champion (`models:/transfertraj-<city>@champion`, or the base champion
for a source city without a city model) and replaces that (city, date, model version) slice of the
`predictions` table. A separate DAG, not a task of nightly_ingest: a registry outage or a city with no
champion yet must not fail or retry the ingestion run the training DAGs wait on, and re-scoring a day
with a new champion (trigger with `date` and `model`) must not re-ingest it.
Task logic: `transfertraj.tasks.scoring`; Spark work: `transfertraj.jobs.trip_predictions`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from transfertraj.tasks.ingest import configured_cities, features_asset_uri
from transfertraj.tasks.policy import DEFAULT_ARGS


def nightly_scoring_dag(name: str):
    features = Asset(name=f"transfertraj_features_{name}", uri=features_asset_uri(name))

    @dag(
        dag_id=f"nightly_scoring_{name}",
        schedule=[features],
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        doc_md=__doc__,
        tags=["transfertraj", "scoring", name],
        params={
            "date": Param(
                None,
                type=["null", "string"],
                format="date",
                description="score this delivery date instead of the triggering events' dates (YYYY-MM-DD)",
            ),
            "model": Param(
                None,
                type=["null", "string"],
                description="a model URI (models:/transfertraj-<city>/3) instead of the champion",
            ),
        },
    )
    def scoring():
        @task
        def score() -> list[dict]:
            from airflow.sdk.exceptions import AirflowSkipException

            from transfertraj.tasks.scoring import featured_dates, score_city_date

            ctx = get_current_context()
            p = ctx["params"]
            events = (ctx.get("triggering_asset_events") or {}).get(features, [])
            dates = [p["date"]] if p.get("date") else featured_dates(events)
            if not dates:
                raise AirflowSkipException("no date to score: trigger with the `date` param")
            try:
                return [score_city_date(name, d, p.get("model")) for d in dates]
            except LookupError as err:  # no champion for this city yet: nothing to score with
                raise AirflowSkipException(str(err)) from None

        score()

    return scoring()


for _name in configured_cities():
    globals()[f"nightly_scoring_{_name}"] = nightly_scoring_dag(_name)
