"""The DAGs load, follow the policy, and each runs end to end with dag.test() on a slice of real data.

Order matters within this module: ingestion feeds pretraining, whose champion feeds onboarding.
"""

from __future__ import annotations

import gzip

import pendulum
import pytest

from tests.dags.conftest import PORTO_SAMPLE, TINY_MODEL, assert_succeeded, porto_rows

EXPECTED = {"nightly_ingest_tinyporto", "nightly_scoring_tinyporto", "pretrain", "onboard_city", "maintenance"}
NO_RETRY = {"check_params", "write_config"}  # a bad trigger never improves on a retry


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert EXPECTED <= set(dagbag.dag_ids)


def test_policy_tags_retries_docs_alerts(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and "transfertraj" in dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        for t in dag.tasks:
            assert t.on_failure_callback, f"{dag_id}.{t.task_id} has no failure alert"
            if not (dag_id == "onboard_city" and t.task_id in NO_RETRY) and t.task_id != "report":
                assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_nightly_ingest_uses_the_city_timezone_interval(dagbag):
    tt = dagbag.get_dag("nightly_ingest_tinyporto").timetable
    assert type(tt).__name__ == "CronDataIntervalTimetable"
    assert "timezone='Europe/Lisbon'" in repr(tt)


def test_task_ids_and_training_pool(dagbag):
    """What operators, backfills and the Airflow metadata refer to by name."""
    assert {d: sorted(t.task_id for t in dagbag.get_dag(d).tasks) for d in EXPECTED} == {
        "nightly_ingest_tinyporto": ["featurize", "ingest", "report"],
        "nightly_scoring_tinyporto": ["score"],
        "pretrain": ["train_evaluate_register"],
        "onboard_city": [
            "check_params",
            "context",
            "finetune_register",
            "ingest",
            "wait_for_base_champion",
            "write_config",
            "zero_shot",
        ],
        "maintenance": ["optimize_vacuum"],
    }
    for dag_id, task_id in (("pretrain", "train_evaluate_register"), ("onboard_city", "finetune_register")):
        assert dagbag.get_dag(dag_id).get_task(task_id).pool == "default_pool"


def test_maintenance_offers_every_lake_table(dagbag):
    from transfertraj.feature_store.tables import TABLES

    param = dagbag.get_dag("maintenance").params.get_param("tables")
    assert param.value == param.schema["items"]["enum"] == list(TABLES)


def test_nightly_ingest_runs(dagbag, airflow_home, caplog):
    from transfertraj.core.city_config import load_city
    from transfertraj.feature_store.tables import table_path
    from transfertraj.jobs.land_sample import land_sample
    from transfertraj.model.trajectory_data import read_features

    days = list(land_sample(load_city("tinyporto"), _settings()))
    assert days == ["2013-07-01"]
    run = dagbag.get_dag("nightly_ingest_tinyporto").test(
        logical_date=pendulum.datetime(2013, 7, 2, 2, tz="Europe/Lisbon")  # interval starts 2013-07-01 02:00 local
    )
    assert_succeeded(run, caplog)
    table, _ = read_features(table_path(_settings(), "features"))
    assert set(table.column("city").to_pylist()) == {"tinyporto"}
    assert table.num_rows > 50
    assert (airflow_home / "reports" / "tinyporto" / "2013-07-01" / "ingest_quality.html").exists()
    # the features Asset event names its date, which nightly_scoring_<city> scores
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        extras = [e.extra for e in session.query(AssetEvent).filter(AssetEvent.source_dag_id == run.dag_id)]
    assert extras == [{"date": "2013-07-01"}]


def test_nightly_scoring_is_scheduled_on_the_features_asset(dagbag):
    from transfertraj.tasks.ingest import features_asset_uri

    dag = dagbag.get_dag("nightly_scoring_tinyporto")
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [features_asset_uri("tinyporto")]


def test_onboard_params_are_generated_from_the_trigger_model(dagbag):
    from transfertraj.tasks.onboard_params import OnboardTrigger, trigger_schema

    params = dagbag.get_dag("onboard_city").params
    props, required = trigger_schema()
    assert list(params.keys()) == list(OnboardTrigger.model_fields)
    assert "bbox" in required and not params.get_param("bbox").has_value  # no Null Island to fall back on
    assert params.get_param("n_shot").schema["maximum"] == props["n_shot"]["maximum"]
    sensor = dagbag.get_dag("onboard_city").get_task("wait_for_base_champion")
    assert sensor.mode == "reschedule" and sensor.poke_interval == 1  # TRANSFERTRAJ_POKE_INTERVAL_S in conftest


def test_onboard_waits_for_the_base_champion_then_stops(dagbag, airflow_home, caplog):
    """Before pretraining there is no champion: the sensor looks, waits champion_wait_s, and fails the run
    before anything is written (it used to fail in zero_shot with a LookupError and pass on a retry)."""
    import time

    raw = porto_rows(airflow_home / "incoming" / "early" / "trips.csv", 0, 20)
    conf = {
        "city": "early",
        "bbox": [-8.70, 41.12, -8.52, 41.197],
        "timezone": "Europe/Lisbon",
        "raw_path": str(raw),
        "raw_preset": "porto_csv",
        "licence": "CC BY 4.0",
        "sampling_interval_s": 15,
        "champion_wait_s": 2,
    }
    t0 = time.monotonic()
    run = dagbag.get_dag("onboard_city").test(run_conf=conf)
    took = time.monotonic() - t0
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "failed", states
    assert states["check_params"] == "success" and states["wait_for_base_champion"] == "failed"
    assert states["write_config"] == "upstream_failed"
    assert not (airflow_home / "config" / "cities" / "early.yaml").exists()
    assert took < 120, took  # a short champion_wait_s ends the wait; dag.test() does not hang
    assert "does not exist after" in caplog.text and "run the pretrain DAG first" in caplog.text  # the alert


def test_pretrain_registers_a_champion(dagbag, caplog):
    from transfertraj import registry

    run = dagbag.get_dag("pretrain").test(run_conf={**TINY_MODEL, "epochs": 1, "cities": ["tinyporto"]})
    assert_succeeded(run, caplog)
    rows = [r for r in registry.list_models(_settings()) if r["name"] == registry.BASE_MODEL]
    assert [(r["version"], r["aliases"]) for r in rows] == [(1, ["champion"])]  # challenger leaves the winner


def test_nightly_scoring_scores_the_day_with_the_champion(dagbag, caplog):
    from transfertraj.feature_store.tables import table_path
    from transfertraj.jobs.spark_session import get_spark

    # one run: that a rerun replaces the slice is tests/tasks/test_scoring.py's check (slow tier), on the same
    # task code
    run = dagbag.get_dag("nightly_scoring_tinyporto").test(run_conf={"date": "2013-07-01"})
    assert_succeeded(run, caplog)
    spark = get_spark("tests", _settings())
    silver = spark.read.format("delta").load(table_path(_settings(), "silver")).where("date = '2013-07-01'").count()
    preds = spark.read.format("delta").load(table_path(_settings(), "predictions"))
    rows = preds.groupBy("city", "date", "model_uri", "task").count().collect()
    assert {(r["city"], r["date"], r["model_uri"]) for r in rows} == {
        ("tinyporto", "2013-07-01", "models:/transfertraj-base/1")
    }
    per_task = {r["task"]: r["count"] for r in rows}
    assert per_task["odtte"] == silver  # every trajectory of the day gets its travel time
    assert 0 < per_task["tp"] <= silver and 0 < per_task["tr"] <= silver  # TP/TR: those long enough to hold out


def test_onboard_rejects_bad_params_at_trigger(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="does not match"):
        dagbag.get_dag("onboard_city").test(run_conf={"city": "Bad Name!"})


def test_onboard_fails_at_once_with_the_validation_message(dagbag, airflow_home, tmp_path):
    from transfertraj.tasks.onboard import write_city_config
    from transfertraj.tasks.onboard_params import OnboardParamsError

    outside = porto_rows(tmp_path / "elsewhere.csv", 0, 5)
    conf = {
        "city": "badcity",
        "bbox": [-8.5, 41.2, -8.7, 41.1],
        "timezone": "Europe/Lisbon",
        "raw_path": str(outside),
        "raw_preset": "porto_csv",
        "licence": "CC BY 4.0",
        "sampling_interval_s": 15,
    }
    run = dagbag.get_dag("onboard_city").test(run_conf=conf)
    assert str(run.state) == "failed"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["check_params"] == "failed" and states["wait_for_base_champion"] == "upstream_failed"
    assert states["write_config"] == "upstream_failed" and states["context"] == "upstream_failed"
    with pytest.raises(OnboardParamsError) as err:
        write_city_config(conf)
    assert "outside the incoming folder" in str(err.value)
    assert not (airflow_home / "config" / "cities" / "badcity.yaml").exists()
    conf["raw_path"] = str(porto_rows(airflow_home / "incoming" / "badcity.csv", 0, 5))
    with pytest.raises(OnboardParamsError, match="min_lon -8.5 must be below max_lon -8.7"):
        write_city_config(conf)


def test_onboard_city_end_to_end(dagbag, airflow_home, caplog):
    from transfertraj import registry

    raw = porto_rows(airflow_home / "incoming" / "tinycity" / "trips.csv", 160, 320)
    conf = {
        "city": "tinycity",
        "bbox": [-8.70, 41.12, -8.52, 41.197],
        "timezone": "Europe/Lisbon",
        "raw_path": str(raw),
        "raw_preset": "porto_csv",
        "licence": "CC BY 4.0",
        "sampling_interval_s": 15,
        "osm_kind": "none",
        "quality": {"max_rejected_share": 1.0, "min_trajectories": 0},
        "n_shot": 20,
        "epochs": 1,
        "max_dates": 1,
        # test_pretrain_registers_a_champion made the champion; run alone, stop at once rather than wait.
        # Given explicitly: in one process dag.test() keeps an earlier run's conf in the DAG's Params.
        "champion_wait_s": 0,
    }
    run = dagbag.get_dag("onboard_city").test(run_conf=conf)
    assert_succeeded(run, caplog)
    assert (airflow_home / "config" / "cities" / "tinycity.yaml").exists()
    versions = {
        r["version"]: r["aliases"] for r in registry.list_models(_settings()) if r["name"] == "transfertraj-tinycity"
    }
    client = registry.configure(_settings())
    if versions[1] != ["champion"]:  # the 1-epoch fine-tune lost to zero-shot: the base weights are the champion
        assert versions == {1: ["challenger"], 2: ["champion"]}
        assert client.get_model_version("transfertraj-tinycity", "2").tags["source"] == "base-zero-shot"
    tags = client.get_model_version("transfertraj-tinycity", "1").tags
    assert tags["gate.against"] == "zero-shot transfertraj-base/1" and tags["gate.validation_version"].isdigit()
    # the same name again without replace is refused by the first task
    from transfertraj.tasks.onboard import write_city_config
    from transfertraj.tasks.onboard_params import OnboardParamsError

    with pytest.raises(OnboardParamsError, match="exists"):
        write_city_config(conf)


def test_maintenance_keeps_protected_versions(dagbag, caplog):
    from transfertraj import registry
    from transfertraj.feature_store.tables import table_path

    protected = registry.protected_versions(_settings())
    assert "features" in protected
    run = dagbag.get_dag("maintenance").test(run_conf={"tables": ["features"]})
    assert_succeeded(run, caplog)
    from transfertraj.jobs.spark_session import get_spark

    spark = get_spark("tests", _settings())
    old = (
        spark.read.format("delta")
        .option("versionAsOf", protected["features"])
        .load(table_path(_settings(), "features"))
    )
    assert old.count() > 0


def _settings():
    from transfertraj.core.settings import Settings

    return Settings.load()


@pytest.mark.slow
def test_backfill_runs_every_date_and_reports_the_failed_one(dagbag, airflow_home):
    """One DAG run per landed date, in order; a date that fails does not stop the next; exit status says so."""
    from transfertraj import backfill
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.land_sample import land_sample

    settings = _settings()
    land_sample(load_city("tinyporto"), settings)
    broken = settings.landing / "tinyporto" / "2013-06-30" / "taxi_sample.csv.gz"  # its only file: truncated
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(gzip.compress(PORTO_SAMPLE.read_bytes())[:2000])
    dates = backfill.delivery_dates(settings, "tinyporto", None, "2013-07-01")
    assert dates == ["2013-06-30", "2013-07-01"]
    runs = backfill.backfill(settings, "tinyporto", dates, dags=dagbag.dags)
    assert [r.date for r in runs] == dates
    assert runs[0].state != "success" and runs[1].state == "success"
    lines = backfill.table("tinyporto", runs)
    assert lines[-1].startswith("| 2 dates | 1 success, 1 not |")
