"""The pipeline against real servers: Spark standalone, `mlflow server` on PostgreSQL, Airflow on PostgreSQL.

Order matters and is the pipeline's: the CLI ingests Porto through the cluster; Airflow's metadata
database is migrated on PostgreSQL and the DAGs are parsed into it; `nightly_ingest_porto` ingests and
featurizes a date; `pretrain` trains a tiny base model and registers it on the MLflow server;
`onboard_city`, triggered and run by a real Airflow scheduler (api-server, scheduler, dag-processor,
LocalExecutor), onboards a new city from a raw file and registers its model. Every check reads what the
servers hold (the master's application list, Delta logs and Parquet footers, Airflow's and MLflow's
PostgreSQL tables, the registry API), not what the commands print.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import version
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import REPO, VENV_BIN
from tests.integration.services import wait_until
from transfertraj.core.settings import Settings

PORTO_DATE = "2013-07-01"  # the bundled Porto sample's one delivery date
NEW_CITY = "sfonboard"


def delta_rows(table: Path, **partition) -> int:
    """Rows in a Delta table's current snapshot (optionally one partition), from its log and Parquet footers.

    Replays every JSON commit (no checkpoint is written below 10 commits; a checkpoint would mean more
    history than these tests make, so it is refused rather than half-read)."""
    log = table / "_delta_log"
    assert not list(log.glob("*.checkpoint*.parquet")), f"{table}: has a checkpoint; extend delta_rows"
    live: dict[str, dict] = {}
    for commit in sorted(log.glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = action["add"]["partitionValues"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    from urllib.parse import unquote

    return sum(
        pq.read_metadata(table / unquote(path)).num_rows
        for path, values in live.items()
        if all(values.get(k) == v for k, v in partition.items())
    )


def completed_apps(stack, name: str) -> list[dict]:
    return [app for app in stack.spark.state()["completedapps"] if app["name"] == name]


def test_spark_standalone_cluster_has_a_live_worker(stack):
    state = stack.spark.state()
    assert state["status"] == "ALIVE" and state["aliveworkers"] == 1
    assert state["workers"][0]["cores"] >= 1


def test_cli_ingest_runs_its_executors_on_the_cluster(stack):
    landed = stack.transfertraj("land", "--city", "porto")
    assert landed.returncode == 0
    ingested = stack.transfertraj("ingest", "--city", "porto", "--date", PORTO_DATE, "--no-report")
    assert ingested.returncode == 0, ingested.stderr[-3000:]

    apps = completed_apps(stack, "transfertraj-ingest")
    assert len(apps) == 1 and apps[0]["state"] == "FINISHED" and apps[0]["cores"] >= 1
    executors = list((stack.run.root / "spark-work" / apps[0]["id"]).iterdir())
    assert executors, "the worker ran no executor for the ingest application"

    lake = stack.home / "lake"
    bronze = delta_rows(lake / "bronze", city="porto", date=PORTO_DATE)  # Porto: one row per landed trip
    silver = delta_rows(lake / "silver", city="porto", date=PORTO_DATE)  # one row per clean trajectory
    assert bronze > 1000 and silver > 1000
    # What the executors wrote is what the job accounted for.
    summary = ingested.stdout + ingested.stderr
    assert f"rows read {bronze} " in summary and f"trajectories {silver};" in summary


def test_spark_submit_runs_a_job_on_the_master_it_is_given(stack):
    """A job's main() under spark-submit: the launcher's --master wins over TRANSFERTRAJ_SPARK_MASTER."""
    silver = stack.home / "lake" / "silver"
    rows_before = delta_rows(silver, city="porto", date=PORTO_DATE)
    apps_before = len(completed_apps(stack, "transfertraj-ingest"))
    # The launcher's JVM is up before get_spark runs, so Delta's jars go on its command line: the list
    # the first session resolved (jobs/spark_session.py), as docs/cluster.md says.
    manifest = Settings.load().ivy_dir / f"delta-jars-{version('delta-spark')}-spark-{version('pyspark')}.txt"
    submitted = stack.cli(
        str(VENV_BIN / "spark-submit"),
        "--master",
        stack.spark.master_url,
        "--jars",
        manifest.read_text().strip(),
        str(REPO / "jobs" / "ingest.py"),
        "--city",
        "porto",
        "--date",
        PORTO_DATE,
        "--no-report",
        env={"TRANSFERTRAJ_SPARK_MASTER": "local[1]"},  # must lose to --master
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert len(completed_apps(stack, "transfertraj-ingest")) == apps_before + 1
    # The rerun of the date replaced its partition rather than appending a second copy.
    assert delta_rows(silver, city="porto", date=PORTO_DATE) == rows_before


def test_airflow_metadata_database_is_postgres_and_holds_the_dags(stack):
    assert stack.airflow("db", "migrate").returncode == 0
    assert stack.airflow("db", "check").returncode == 0
    (version,) = stack.postgres.query("airflow", "SELECT version_num FROM alembic_version")[0]
    assert version
    if not (REPO / "dags" / "nightly_ingest.py").exists():
        pytest.skip("dags/ not in this checkout yet")
    assert stack.airflow("dags", "reserialize").returncode == 0
    dag_ids = {row[0] for row in stack.postgres.query("airflow", "SELECT dag_id FROM serialized_dag")}
    assert {"nightly_ingest_porto", "pretrain", "onboard_city"} <= dag_ids
    errors = stack.postgres.query("airflow", "SELECT filename, stacktrace FROM import_error")
    assert not errors, errors


def dag_run_states(stack, dag_id: str) -> list[str]:
    return [row[0] for row in stack.postgres.query("airflow", f"SELECT state FROM dag_run WHERE dag_id = '{dag_id}'")]


def dags_test(stack, dag_id: str, conf: dict):
    if not (REPO / "dags" / f"{dag_id.removesuffix('_porto')}.py").exists():
        pytest.skip(f"dags/{dag_id}.py not in this checkout yet")
    done = stack.airflow("dags", "test", dag_id, "--conf", json.dumps(conf))
    assert done.returncode == 0, done.stderr[-6000:]
    assert dag_run_states(stack, dag_id)[-1:] == ["success"]
    return done


def test_nightly_ingest_dag_ingests_and_featurizes_through_the_cluster(stack):
    before = len(completed_apps(stack, "transfertraj-transfertraj-airflow"))
    dags_test(stack, "nightly_ingest_porto", {"date": PORTO_DATE})
    assert len(completed_apps(stack, "transfertraj-transfertraj-airflow")) > before
    lake = stack.home / "lake"
    features = delta_rows(lake / "features", city="porto")
    # A rerun of the date replaced its partition: still one copy of the day's trajectories.
    assert 0 < features <= delta_rows(lake / "silver", city="porto", date=PORTO_DATE)


TINY_MODEL = {
    "epochs": 1,
    "batch_size": 64,
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "n_experts": 2,
    "top_k": 1,
    "expert_hidden": 16,
}


def registry(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow.url, registry_uri=stack.mlflow.url)


def test_pretrain_dag_registers_the_base_model_on_the_mlflow_server(stack):
    dags_test(stack, "pretrain", {"cities": ["porto"], **TINY_MODEL})
    client = registry(stack)
    champion = client.get_model_version_by_alias("transfertraj-base", "champion")
    assert champion.status == "READY"
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED" and any(k.startswith("val/") for k in run.data.metrics)
    # The server's backend is PostgreSQL: the alias is a row there.
    rows = stack.postgres.query("mlflow", "SELECT name, alias, version FROM registered_model_aliases")
    assert ("transfertraj-base", "champion", int(champion.version)) in rows


@pytest.fixture(scope="module")
def airflow_servers(stack):
    from tests.integration.services import AirflowServers

    return AirflowServers.start(stack.run, stack.env)  # stopped with the rest of the stack


def test_onboard_city_runs_on_the_airflow_scheduler_and_registers_the_city_model(stack, airflow_servers):
    """Triggered like a person would, and run by the scheduler's executor, not in-process."""
    if not (REPO / "dags" / "onboard_city.py").exists():
        pytest.skip("dags/onboard_city.py not in this checkout yet")
    delivery = stack.home / "incoming" / NEW_CITY / "sf_cabspotting.csv.gz"  # the trigger reads only incoming/
    delivery.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "data" / "sanfrancisco" / "cabspotting_2008-05-20.csv.gz", delivery)
    conf = {
        "city": NEW_CITY,
        "bbox": [-122.45, 37.76, -122.38, 37.80],
        "timezone": "America/Los_Angeles",
        "raw_path": str(delivery.relative_to(stack.home / "incoming")),
        "raw_preset": "cabspotting",
        "licence": "CC BY 4.0 (CRAWDAD epfl/mobility)",
        "sampling_interval_s": 60,
        "osm_kind": "none",
        "quality": {"max_rejected_share": 0.6, "min_trajectories": 1},
        "max_dates": 1,
        "n_shot": 20,
        "epochs": 1,
    }
    env = airflow_servers.env
    assert stack.cli(str(VENV_BIN / "airflow"), "dags", "unpause", "onboard_city", env=env).returncode == 0
    triggered = stack.cli(
        str(VENV_BIN / "airflow"),
        "dags",
        "trigger",
        "onboard_city",
        "--run-id",
        "integration",
        "--conf",
        json.dumps(conf),
        env=env,
    )
    assert triggered.returncode == 0
    where = "WHERE dag_id = 'onboard_city' AND run_id = 'integration'"

    def finished() -> str | None:
        (state,) = stack.postgres.query("airflow", f"SELECT state FROM dag_run {where}")[0]
        retrying = stack.postgres.query("airflow", f"SELECT 1 FROM task_instance {where} AND state = 'up_for_retry'")
        # A retry waits the DAG's retry_delay (minutes): report the first failure instead of waiting it out.
        return "up_for_retry" if retrying else state if state in ("success", "failed") else None

    state = wait_until(finished, "onboard_city run", 1800)
    tasks = stack.postgres.query(
        "airflow", f"SELECT task_id, state, queued_by_job_id FROM task_instance {where} ORDER BY task_id"
    )
    print("onboard_city tasks:", tasks)
    if state != "success":
        for log in sorted((stack.run.root / "airflow" / "logs").rglob("*.log")):
            print(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
    assert state == "success"
    assert {"check_params", "wait_for_base_champion", "write_config", "context", "ingest", "zero_shot"} <= {
        t[0] for t in tasks
    }
    assert all(t[1] == "success" and t[2] is not None for t in tasks), "every task queued by the scheduler, and done"
    assert (stack.home / "config" / "cities" / f"{NEW_CITY}.yaml").exists()
    assert delta_rows(stack.home / "lake" / "features", city=NEW_CITY) > 0
    client = registry(stack)
    name = f"transfertraj-{NEW_CITY}"
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 1, "onboard_city registered no city model"
    # search results carry no aliases; the registered model does. The first version meets no champion.
    aliases = client.get_registered_model(name).aliases
    assert aliases.get("champion") == versions[0].version
    rows = stack.postgres.query("mlflow", f"SELECT alias, version FROM registered_model_aliases WHERE name = '{name}'")
    assert ("champion", int(versions[0].version)) in rows
