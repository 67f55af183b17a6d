"""Shared fixtures: one real Spark session (Delta enabled) for the whole run, isolated data roots."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """Airflow reads its home and database once, on first import, and any test module may import it
    while pytest collects (transfertraj.tasks.policy does): point it at a scratch home for the whole run
    before that happens, so no test touches ~/airflow and the DAG tests migrate the database Airflow uses.

    The one Spark session of the run is started by whichever test needs it first, often a DAG task that
    reads the environment rather than the `spark` fixture: its UI is switched off here, for every starter."""
    os.environ.setdefault("TRANSFERTRAJ_SPARK_UI", "false")
    os.environ.setdefault("TRANSFERTRAJ_RETRY_DELAY_S", "1")  # read when the DAGs are parsed: no 5-minute waits
    if os.environ.get("TRANSFERTRAJ_TEST_AIRFLOW_HOME"):
        return
    home = Path(tempfile.mkdtemp(prefix="transfertraj-tests-airflow-"))
    os.environ.update(
        {
            "TRANSFERTRAJ_TEST_AIRFLOW_HOME": str(home),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        }
    )


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("transfertraj_home")


@pytest.fixture(scope="session")
def settings(spark_home):
    from transfertraj.core.settings import Settings

    return Settings.load(home=spark_home, shuffle_partitions=2, driver_memory="2g", spark_master="local[2]")


def live_spark(settings):
    """The run's real local Spark session with Delta Lake (UI off, 2 shuffle partitions), started on first use.

    Asked for again by each test rather than kept: if Spark stops its context after an error in an
    earlier test, get_spark starts a new one, and that test fails alone instead of every one after it."""
    from transfertraj.jobs.spark_session import get_spark

    os.environ.setdefault("TRANSFERTRAJ_SPARK_LOG_LEVEL", "ERROR")
    session = get_spark("tests", settings)
    session.conf.set("spark.sql.shuffle.partitions", "2")
    return session


@pytest.fixture(scope="session")
def spark_session(settings):
    """`live_spark` for module- and session-scoped fixtures; stops the session when the run ends."""
    yield lambda: live_spark(settings)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


@pytest.fixture
def spark(spark_session):
    return spark_session()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data root for one test, also exported so code that loads Settings sees it."""
    monkeypatch.setenv("TRANSFERTRAJ_HOME", str(tmp_path))
    return tmp_path


@contextlib.contextmanager
def mlflow_uri_restored():
    """`mlflow.set_tracking_uri` (registry.configure) also exports MLFLOW_TRACKING_URI, for subprocesses; left
    set, the next test's `Settings.load(home=...)` would read that store instead of its own (an onboarding
    test found a champion in an empty store when run after the registry tests)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(autouse=True)
def _mlflow_uri_stays_with_its_test():
    with mlflow_uri_restored():
        yield


@pytest.fixture(scope="module", autouse=True)
def _mlflow_uri_stays_with_its_module():
    """The same for module-scoped fixtures that register models: they run before a test's snapshot."""
    with mlflow_uri_restored():
        yield
