"""Nightly batch scoring for real: a small lake with a silver table of REAL Porto trips (the bundled
sample), a tiny model trained on GENERATED features registered in a throwaway MLflow store, Spark
calling the pyfunc, predictions in Delta; OD, TP and TR rows, the model version on each row, reruns,
and a table written before TP/TR rows existed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tests.transfertraj.registry_fixtures import REPO, features, register, settings_for, train
from transfertraj.core.geo import haversine_m
from transfertraj.jobs.trip_predictions import ModelRef, od_points
from transfertraj.tasks.scoring import featured_dates, shipped_name


def silver_rows(first: int, n: int, date: str) -> list[dict]:
    """Trips [first, first + n) of the real Porto sample as silver rows (15 s sampling), on `date`."""
    raw = pd.read_csv(
        REPO / "data" / "porto" / "taxi_sample.csv", dtype={"TRIP_ID": str}, skiprows=range(1, 1 + first), nrows=n
    )
    rows = []
    for r in raw.itertuples():
        pts = json.loads(r.POLYLINE)
        ts = [int(r.TIMESTAMP) + 15 * i for i in range(len(pts))]
        rows.append(
            {
                "trip_id": r.TRIP_ID,
                "vehicle_key": f"v{r.TAXI_ID}",
                "start_ts": datetime.fromtimestamp(ts[0], UTC),
                "end_ts": datetime.fromtimestamp(ts[-1], UTC),
                "n_points": len(pts),
                "duration_s": ts[-1] - ts[0],
                "length_m": 0.0,
                "ts": ts,
                "lon": [p[0] for p in pts],
                "lat": [p[1] for p in pts],
                "source_file": "taxi_sample.csv",
                "city": "porto",
                "date": date,
            }
        )
    return [r for r in rows if r["n_points"] >= 2]


@pytest.fixture(scope="module")
def lake(spark_session, tmp_path_factory):
    spark = spark_session()
    from transfertraj.feature_store.delta_io import replace_partition
    from transfertraj.feature_store.tables import table_path
    from transfertraj.jobs.schemas import SILVER_SCHEMA

    home = tmp_path_factory.mktemp("scoring_home")
    settings = settings_for(home)
    days = {"2013-07-01": silver_rows(0, 12, "2013-07-01"), "2013-07-02": silver_rows(12, 5, "2013-07-02")}
    for day, rows in days.items():
        df = spark.createDataFrame(rows, SILVER_SCHEMA)
        replace_partition(
            df, table_path(settings, "silver"), {"city": "porto", "date": day}, partition_by=("city", "date")
        )
    checkpoint = train(home / "ckpt", features(40))
    register(settings, checkpoint, features(40))  # transfertraj-base v1, champion; knows porto
    return settings, {d: len(r) for d, r in days.items()}, checkpoint


def _slices(spark, settings) -> dict:
    """(date, model version, uri) -> OD rows (one per trip)."""
    from transfertraj.feature_store.tables import table_path

    rows = (
        spark.read.format("delta")
        .load(table_path(settings, "predictions"))
        .filter("task = 'odtte'")
        .groupBy("date", "model_version", "model_uri")
        .count()
        .collect()
    )
    return {(r["date"], r["model_version"], r["model_uri"]): r["count"] for r in rows}


def write_old_prediction(spark, settings, uri: str) -> None:
    """One OD row of a predictions table as it was before TP/TR rows (its schema then), another date."""
    from transfertraj.feature_store.tables import table_path

    schema = (
        "trip_id string, start_ts timestamp, task string, pred_travel_time_min double, actual_travel_time_min double,"
        " error_min double, model_name string, model_version int, model_uri string, scored_at timestamp,"
        " city string, date string"
    )
    when = datetime(2013, 6, 30, 8, tzinfo=UTC)
    row = ("old", when, "odtte", 9.5, 10.0, -0.5, "transfertraj-base", 0, uri, when, "porto", "2013-06-30")
    df = spark.createDataFrame([row], schema)
    df.write.format("delta").partitionBy("city", "date").save(table_path(settings, "predictions"))


# The slow tier: four scoring runs (Spark's Python workers load the model each time); `make test` scores a
# day with the champion through the nightly_scoring DAG (tests/dags/test_dags.py).
@pytest.mark.slow
def test_scores_a_day_with_the_champion_and_a_rerun_replaces_its_slice(spark, lake, monkeypatch, capsys):
    from transfertraj.feature_store.tables import table_path
    from transfertraj.tasks.scoring import score_city_date

    settings, trips, checkpoint = lake
    old = "models:/transfertraj-base/0"
    write_old_prediction(spark, settings, old)  # a table from before TP/TR rows: it gains their columns
    first = score_city_date("porto", "2013-07-01", settings=settings)
    assert first["trips"] == trips["2013-07-01"] == 12
    assert first["scored"] == 12 and first["model"] == "models:/transfertraj-base/1"
    silver = {s["trip_id"]: s for s in silver_rows(0, 12, "2013-07-01")}
    n = {t: s["n_points"] for t, s in silver.items()}
    assert first["rows"] == {"odtte": 12, "tp": sum(k >= 6 for k in n.values()), "tr": sum(k >= 9 for k in n.values())}
    v1 = "models:/transfertraj-base/1"
    assert _slices(spark, settings) == {("2013-06-30", 0, old): 1, ("2013-07-01", 1, v1): 12}
    table = spark.read.format("delta").load(table_path(settings, "predictions")).filter("date = '2013-07-01'")
    rows = table.collect()
    assert {r["model_name"] for r in rows} == {"transfertraj-base"} and {r["task"] for r in rows} == {
        "odtte",
        "tp",
        "tr",
    }
    od = [r for r in rows if r["task"] == "odtte"]
    assert all(r["pred_travel_time_min"] > 0 and r["n_predicted"] is None for r in od)  # a time, not a placeholder
    actual = {r["trip_id"]: r["actual_travel_time_min"] for r in od}
    assert actual == {t: s["duration_s"] / 60 for t, s in silver.items()}
    for r in (r for r in rows if r["task"] == "tp"):  # the last 5 points, held out and predicted
        s = silver[r["trip_id"]]
        assert r["n_predicted"] == len(r["pred_lon"]) == 5 and r["pred_ts"] == s["ts"][-5:]
        err = haversine_m(
            np.array(r["pred_lon"]), np.array(r["pred_lat"]), np.array(s["lon"][-5:]), np.array(s["lat"][-5:])
        )
        assert r["mean_error_m"] == pytest.approx(err.mean(), rel=1e-9) and r["pred_travel_time_min"] is None
    for r in (r for r in rows if r["task"] == "tr"):  # every 8th point kept: 7 predicted per closed gap
        assert r["mu"] == 8 and r["n_predicted"] == (n[r["trip_id"]] - 1) // 8 * 7 and r["mean_error_m"] > 0
    kept = spark.read.format("delta").load(table_path(settings, "predictions")).filter("date = '2013-06-30'").first()
    assert kept["pred_travel_time_min"] == 9.5 and kept["n_predicted"] is None

    again = score_city_date("porto", "2013-07-01", settings=settings)  # the same slice, replaced
    assert again["version"] == first["version"] + 1
    assert _slices(spark, settings) == {("2013-06-30", 0, old): 1, ("2013-07-01", 1, v1): 12}

    # a new champion: its slice of the day goes beside the old one's; the CLI scores another day
    register(settings, checkpoint, features(40))  # the same weights: no task worse, promoted to v2
    assert score_city_date("porto", "2013-07-01", settings=settings)["model"] == "models:/transfertraj-base/2"
    from transfertraj.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    argv = ["--home", str(settings.home), "score-batch", "--city", "porto", "--date", "2013-07-02", "--model", v1]
    assert main(argv) == 0
    assert "5 of 5 trips scored by models:/transfertraj-base/1" in capsys.readouterr().out
    v2 = "models:/transfertraj-base/2"
    assert _slices(spark, settings) == {
        ("2013-06-30", 0, old): 1,
        ("2013-07-01", 1, v1): 12,
        ("2013-07-01", 2, v2): 12,
        ("2013-07-02", 1, v1): 5,
    }


def test_no_model_and_no_silver_say_what_to_run(tmp_path):
    from transfertraj.tasks.scoring import model_for_city, score_city_date

    settings = settings_for(tmp_path)
    with pytest.raises(LookupError, match="no champion to score lisbon with: run onboard_city"):
        model_for_city(settings, "lisbon")
    with pytest.raises(LookupError, match="models:/transfertraj-lisbon/9: no such model version"):
        score_city_date("lisbon", "2013-07-01", "models:/transfertraj-lisbon/9", settings)


def test_od_requests_are_the_first_and_last_point_of_each_trip():
    req = pd.DataFrame({"trip_id": ["a", "b"], "o_ts": [0, 10], "o_lon": [1.0, 2.0], "o_lat": [3.0, 4.0],
                        "d_ts": [60, 90], "d_lon": [1.5, 2.5], "d_lat": [3.5, 4.5]})  # fmt: skip
    points = od_points(req)
    assert points.to_dict("list") == {
        "trip_id": ["a", "b", "a", "b"],
        "ts": [0, 10, 60, 90],
        "lon": [1.0, 2.0, 1.5, 2.5],
        "lat": [3.0, 4.0, 3.5, 4.5],
    }


def test_the_dates_come_from_the_triggering_asset_events():
    events = [SimpleNamespace(extra={"date": "2013-07-02"}), SimpleNamespace(extra={"date": "2013-07-01"}),
              SimpleNamespace(extra={"date": "2013-07-02"}), SimpleNamespace(extra={})]  # fmt: skip
    assert featured_dates(events) == ["2013-07-01", "2013-07-02"]


def test_the_shipped_model_folder_is_unique_per_registry(tmp_path):
    """Spark's addFile refuses a second, different folder of one name in a session: two data roots each have a
    transfertraj-base version 1 (the suite's DAG and scoring tests did, and the second failed)."""
    from transfertraj.core.settings import Settings

    model = ModelRef("transfertraj-base", "1", "models:/transfertraj-base/1")
    a = shipped_name(Settings(home=tmp_path / "a", cache=tmp_path), model)
    b = shipped_name(Settings(home=tmp_path / "b", cache=tmp_path), model)
    assert a != b and a.startswith("transfertraj-base-v1-")
    assert a == shipped_name(
        Settings(home=tmp_path / "a", cache=tmp_path), model
    )  # stable: downloaded once per version


@pytest.mark.parametrize("task", ["tp", "tr"])
def test_the_job_holds_out_what_transfertraj_holdout_holds_out(task):
    """jobs sit below the shell, so the job has its own held_out: on real trips (6-200 points, some too
    short for TR) it keeps and hides exactly the rows transfertraj.holdout.split does."""
    from transfertraj.holdout import split
    from transfertraj.jobs.trip_predictions import held_out, trip_points

    frame = pd.DataFrame(silver_rows(0, 30, "2013-07-01"))
    points = trip_points(frame)
    request, truth = held_out(points, task, 8)
    need = 6 if task == "tp" else 9
    long_enough = points.groupby("trip_id")["point"].transform("size") >= need
    if task == "tr":
        assert (~long_enough).any()  # some trips are too short and are left out, not an error
    want_request, want_truth = split(points.loc[long_enough, ["trip_id", "ts", "lon", "lat"]], task, 8)
    key = ["trip_id", "ts"]
    assert (
        request.sort_values(key)
        .reset_index(drop=True)
        .equals(want_request[list(request.columns)].sort_values(key).reset_index(drop=True))
    )
    assert (
        truth[["trip_id", "point"]].sort_values(["trip_id", "point"]).values.tolist()
        == want_truth[["trip_id", "point"]].sort_values(["trip_id", "point"]).values.tolist()
    )
