"""The pyfunc answers TP, TR and OD-TTE from raw points, in process and through `mlflow models serve`.

The model is tiny and trained on GENERATED features (its answers are not meant to be good); what is
tested is the path: raw rows -> the pipeline's feature code (local Spark) -> the network -> answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.transfertraj.registry_fixtures import features, register, settings_for, train


def trips() -> pd.DataFrame:
    """Two real-looking Porto trips (15 s fixes), as raw rows."""
    rows = []
    for k, (lon0, lat0) in enumerate([(-8.61, 41.15), (-8.60, 41.16)]):
        for i in range(8):
            rows.append(
                {"trip_id": f"t{k}", "ts": 1372636800 + 15 * i, "lon": lon0 + 0.0004 * i, "lat": lat0 + 0.0002 * i}
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def served_store(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve_home")
    settings = settings_for(home)
    feats = features(40)
    register(settings, train(home / "ckpt", feats), feats)
    return settings


def check_answers(answer_of):
    tp = answer_of("tp", trips())
    assert list(tp.columns[:2]) == ["trip_id", "point"] and len(tp) == 10  # 5 future points per trip
    assert tp["pred_lon"].between(-9.5, -7.5).all() and tp["pred_lat"].between(40.5, 42).all()
    sparse = trips().groupby("trip_id").nth([0, 3, 7]).reset_index(drop=True)
    tr = answer_of("tr", sparse, mu=4)
    assert len(tr) == 2 * 2 * 3  # two gaps of 3 missing points per trip
    od = answer_of("odtte", trips())
    assert list(od.columns) == ["trip_id", "travel_time_min"] and len(od) == 2
    assert np.isfinite(od["travel_time_min"]).all()


def test_pyfunc_in_process(served_store, spark):
    from transfertraj import registry

    model = registry.load("models:/transfertraj-base@champion", served_store)
    check_answers(lambda task, df, mu=8: model.predict(df, params={"task": task, "mu": mu}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_all_tasks(served_store, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": served_store.mlflow_tracking_uri,
        "TRANSFERTRAJ_HOME": str(served_store.home),
        "TRANSFERTRAJ_SPARK_MASTER": "local[1]",
        "TRANSFERTRAJ_DRIVER_MEMORY": "1g",
        "TRANSFERTRAJ_SHUFFLE_PARTITIONS": "1",
    }
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    env["PATH"] = f"{mlflow_bin.parent}{os.pathsep}{env.get('PATH', '')}"  # the server execs uvicorn from PATH
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            "models:/transfertraj-base@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/ping", timeout=2).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow models serve did not come up:\n" + (tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(1)

        def answer_of(task, df, mu=8):
            body = json.dumps(
                {"dataframe_split": df.to_dict(orient="split", index=False), "params": {"task": task, "mu": mu}}
            ).encode()
            req = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=180) as resp:
                return pd.DataFrame(json.loads(resp.read())["predictions"])

        check_answers(answer_of)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_cli_predict_writes_answers(served_store, spark, tmp_path, monkeypatch):
    from transfertraj.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    trips().to_csv(tmp_path / "trips.csv", index=False)
    out = tmp_path / "out.csv"
    assert (
        main(
            [
                "--home",
                str(served_store.home),
                "predict",
                "--model",
                "models:/transfertraj-base@champion",
                "--task",
                "odtte",
                "--input",
                str(tmp_path / "trips.csv"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert list(pd.read_csv(out)["trip_id"]) == ["t0", "t1"]
