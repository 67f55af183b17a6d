"""Weekly Delta maintenance: OPTIMIZE (compact small files) and VACUUM every lake table.

Each step runs only where the Delta log (read with delta-rs, without Spark) shows it has work: OPTIMIZE
on partitions with many small files, VACUUM where a dry run finds files to delete; on a small lake the
task takes seconds, not minutes.

VACUUM's retention is at least `min_retention_hours` (Delta's default 7 days) and is stretched, per
table, back past the commit of the oldest table version that a registered champion or challenger
records (its training data and context versions, as model version tags), so those versions stay
readable. Task logic: `transfertraj.tasks.maintenance.maintain_lake` (the Delta work:
`transfertraj.feature_store.maintenance`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from transfertraj.feature_store.tables import TABLES
from transfertraj.tasks.maintenance import maintain_lake
from transfertraj.tasks.policy import DEFAULT_ARGS


@dag(
    dag_id="maintenance",
    schedule=CronDataIntervalTimetable("0 4 * * 0", timezone="UTC"),  # Sunday 04:00, after the nightly runs
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["transfertraj", "maintenance", "delta"],
    params={
        "min_retention_hours": Param(
            168, type="number", minimum=168, description="never below Delta's 7-day safety default"
        ),
        "tables": Param(
            list(TABLES),
            type="array",
            items={"type": "string", "enum": list(TABLES)},
            description="lake tables to maintain",
        ),
    },
)
def maintenance():
    @task
    def optimize_vacuum() -> list:
        params = get_current_context()["params"]
        return maintain_lake(params["min_retention_hours"], list(params["tables"]))

    optimize_vacuum()


maintenance()
