"""An embedded Airflow (SQLite metadata under a temporary data root) with tiny test cities.

The environment is exported before Airflow is imported (Airflow reads it at import) and restored at the
end of the session. The test city `tinyporto` is the first 160 trips of the bundled real Porto sample
with no OSM context (context building is tested in tests/jobs), so the DAG runs stay seconds long.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transfertraj.core.settings import BUNDLED_CITY_DIR, REPO_ROOT

PORTO_SAMPLE = REPO_ROOT / "data" / "porto" / "taxi_sample.csv"
TINY_MODEL = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "n_experts": 2,
    "top_k": 1,
    "expert_hidden": 16,
    "batch_size": 32,
}


def porto_rows(path: Path, first: int, last: int) -> Path:
    """Rows [first, last) of the real Porto sample, with its header."""
    lines = PORTO_SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lines[0] + "".join(lines[1 + first : 1 + last]), encoding="utf-8")
    return path


def tiny_city(name: str, raw: Path) -> dict:
    data = yaml.safe_load((BUNDLED_CITY_DIR / "porto.yaml").read_text())
    data.update(name=name, description="test city: a slice of the Porto sample, no OSM")
    data["raw"]["path"] = str(raw)
    data["osm"] = {"kind": "none"}
    data["quality"] = {"max_rejected_share": 1.0, "min_trajectories": 0}
    return data


@pytest.fixture(scope="package")  # env restored when tests/dags ends, not at session end
def airflow_home(tmp_path_factory):
    """Data root + Airflow home + MLflow store for the DAG tests; yields the data root."""
    home = tmp_path_factory.mktemp("dags_home")
    cities = home / "config" / "cities"
    cities.mkdir(parents=True)
    raw = porto_rows(home / "incoming" / "tinyporto" / "taxi_sample.csv", 0, 160)
    (cities / "tinyporto.yaml").write_text(yaml.safe_dump(tiny_city("tinyporto", raw)))
    env = {
        "TRANSFERTRAJ_HOME": str(home),
        "TRANSFERTRAJ_CITY_DIRS": str(cities),
        "TRANSFERTRAJ_PRETRAIN_CITIES": "tinyporto",
        "TRANSFERTRAJ_SHUFFLE_PARTITIONS": "2",
        "TRANSFERTRAJ_SPARK_MASTER": "local[2]",
        "TRANSFERTRAJ_DRIVER_MEMORY": "2g",
        "TRANSFERTRAJ_SPARK_LOG_LEVEL": "ERROR",
        "TRANSFERTRAJ_POKE_INTERVAL_S": "1",  # onboard_city's wait for the base champion looks every second
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # Airflow's home and database: the run's scratch ones (tests/conftest.py), set before any import.
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="package")  # env restored when tests/dags ends, not at session end
def dagbag(airflow_home):
    from airflow.models.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def assert_succeeded(run, caplog) -> None:
    """The DAG run succeeded; if not, the failure names each failed try and its error, as the policy logged it.

    A retried try's error is logged even when its retry succeeds, so a flaky task shows in the output."""
    if str(run.state) != "success":
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        tries = [r.getMessage() for r in caplog.records if r.name == "transfertraj.pipeline"]
        pytest.fail(f"{run.dag_id} ended {run.state}: {states}; failed tries: {tries or 'none logged'}")
