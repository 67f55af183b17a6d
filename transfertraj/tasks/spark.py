"""The Spark session the Airflow tasks run on.

    from transfertraj.tasks.spark import task_spark
    spark = task_spark(settings)

One application name for every task, so the Spark UI and event logs tell a scheduled job from a CLI
run; master and configuration come from Settings as for every job (jobs.spark_session).
"""

from __future__ import annotations

from transfertraj.core.settings import Settings

APP_NAME = "transfertraj-airflow"


def task_spark(settings: Settings):
    from transfertraj.jobs.spark_session import get_spark

    return get_spark(APP_NAME, settings)
