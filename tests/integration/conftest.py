"""The integration stack, started once for tests/integration and stopped at the end.

Runs only under `make integration` (scripts/integration.sh sets TRANSFERTRAJ_INTEGRATION=1): it starts
PostgreSQL, a Spark standalone master + worker and `mlflow server`, which a plain `make test` should
not. Environment knobs: TRANSFERTRAJ_INTEGRATION_RUN (the run folder: data root, logs, pid files;
default a fresh temporary folder), TRANSFERTRAJ_INTEGRATION_WORKER_CORES / _WORKER_MEMORY.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.services import MlflowServer, Postgres, RunFolder, SparkCluster, postgres_bindir

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in ours:
        item.add_marker(pytest.mark.integration)
    if os.environ.get("TRANSFERTRAJ_INTEGRATION") != "1":
        skip = pytest.mark.skip(reason="starts Postgres, Spark and MLflow servers: run `make integration`")
        for item in ours:
            item.add_marker(skip)


@dataclass
class Stack:
    run: RunFolder
    home: Path
    env: dict[str, str]
    postgres: Postgres
    spark: SparkCluster
    mlflow: MlflowServer

    def cli(self, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command with the stack's environment; output goes to the test log and is returned."""
        started = time.monotonic()
        proc = subprocess.run(
            list(args),
            env={**self.env, **(env or {})},
            cwd=self.run.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        print(f"$ {' '.join(args)}   [{time.monotonic() - started:.0f} s, rc {proc.returncode}]")
        print(proc.stdout[-4000:])
        if proc.returncode:
            print(proc.stderr[-8000:])
        return proc

    def transfertraj(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return self.cli(str(VENV_BIN / "transfertraj"), *args, timeout=timeout)

    def airflow(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        return self.cli(str(VENV_BIN / "airflow"), *args, timeout=timeout)


@pytest.fixture(scope="session")
def stack():
    bindir = postgres_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL server binaries not found: scripts/integration.sh installs them (apt-get install postgresql)"
        )
    # Not pytest's tmp_path: its 0700 parents keep out the `postgres` account the server runs as.
    root = Path(os.environ.get("TRANSFERTRAJ_INTEGRATION_RUN") or tempfile.mkdtemp(prefix="transfertraj-integration."))
    root.chmod(0o755)
    run = RunFolder(root)
    home = root / "home"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),  # the executors' Python workers import transfertraj.jobs.* from this checkout
        "PYSPARK_PYTHON": sys.executable,
        "TRANSFERTRAJ_HOME": str(home),
        "TRANSFERTRAJ_CITY_DIRS": os.pathsep.join([str(REPO / "config" / "cities"), str(home / "config" / "cities")]),
        "TRANSFERTRAJ_SPARK_UI": "false",
        "TRANSFERTRAJ_SPARK_LOG_LEVEL": "WARN",
        "TRANSFERTRAJ_DRIVER_MEMORY": "1g",
        "TRANSFERTRAJ_SHUFFLE_PARTITIONS": "2",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }
    postgres = None
    try:
        postgres = Postgres.start(bindir, root / "postgres")
        for db in ("airflow", "mlflow"):
            postgres.create_database(db)
        cores = os.environ.get("TRANSFERTRAJ_INTEGRATION_WORKER_CORES", "2")
        spark = SparkCluster.start(
            run, env, cores=int(cores), memory=os.environ.get("TRANSFERTRAJ_INTEGRATION_WORKER_MEMORY", "3g")
        )
        mlflow = MlflowServer.start(run, env, backend_uri=postgres.url("mlflow"), artifacts=root / "mlflow-artifacts")
        env.update(
            {
                "TRANSFERTRAJ_SPARK_MASTER": spark.master_url,
                "TRANSFERTRAJ_SPARK_CONF": f"spark.executor.memory=1g,spark.cores.max={cores}",
                "MLFLOW_TRACKING_URI": mlflow.url,
                "AIRFLOW_HOME": str(root / "airflow"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.url("airflow"),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(root / "airflow" / "logs"),
            }
        )
        yield Stack(run, home, env, postgres, spark, mlflow)
    finally:
        run.stop_all()
        if postgres is not None:
            postgres.stop()
        print(f"integration run folder (logs, data root): {root}")
