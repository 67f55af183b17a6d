"""The pyfunc answers TP, TR and OD-TTE from raw points, in process, through `mlflow models serve`, and
in a process where Java, pyspark, delta-spark and the lake are absent.

The model is tiny and trained on GENERATED features (its answers are not meant to be good); it carries
the REAL context of central Porto. What is tested is the path: raw rows -> the pipeline's feature
functions (transfertraj.features, numpy) -> the network -> answers, with nothing outside the model.
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

from tests.transfertraj.registry_fixtures import features, porto_trips, register, settings_for, train

MODEL = "models:/transfertraj-base@champion"


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
    real = porto_trips(2)
    numeric = real.assign(trip_id=real["trip_id"].astype("int64"))  # as pandas or JSON read real Porto ids
    tp_real = answer_of("tp", numeric)
    assert sorted(tp_real["trip_id"].astype(str).unique()) == sorted(real["trip_id"].unique())


def test_pyfunc_in_process(served_store):
    from transfertraj import registry

    model = registry.load(MODEL, served_store)
    check_answers(lambda task, df, mu=8: model.predict(df, params={"task": task, "mu": mu}))


def test_the_model_carries_its_context(served_store):
    """The Porto context is in the model, at the versions recorded, and the features use it."""
    from transfertraj import registry

    model = registry.load(MODEL, served_store).unwrap_python_model()
    assert model.spec["cities"]["porto"]["context_versions"] == {"context_pois": 0, "context_grid": 0}
    table, _ = model.features(porto_trips(1), task="tp")
    poi = np.array(table.column("poi")[0].as_py(), dtype=float)  # (points, P)
    assert np.isfinite(poi[0]).all() and poi[0].max() > 0  # the first real trip starts in the box: POIs counted
    assert np.isnan(poi[-1]).all()  # ... and leaves it: missing there, never zero
    assert not table.column("context_missing")[0].as_py()


def test_length_batches_group_by_length_and_cover_every_trip():
    from transfertraj.model.predict import length_batches

    n = np.array([120, 6, 7, 60, 8, 118, 9])
    batches = length_batches(n, batch_size=256, max_tokens=240)
    assert sorted(np.concatenate(batches)) == list(range(len(n)))  # each trip once
    assert all(len(b) * n[b].max() <= 240 for b in batches if len(b) > 1)  # a lone long trip may exceed
    assert [list(b) for b in batches] == [[1, 2, 4, 6], [3, 5], [0]]
    assert [list(b) for b in length_batches(n, batch_size=3, max_tokens=None)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(len(b) <= 2 for b in length_batches(n, batch_size=2, max_tokens=10_000))


def test_serving_threads_are_the_idle_cores(monkeypatch):
    """A serving process sizes torch's pool by core.cores' rule (its cores less the busy ones), unless told."""
    from transfertraj.core import cores
    from transfertraj.serving import THREADS_ENV, serving_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("TRANSFERTRAJ_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda path: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert serving_threads() == 4  # idle: the cores the process may use
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert serving_threads() == 1  # 3 of 4 busy
    monkeypatch.setattr(os, "getloadavg", lambda: (11.0, 0.0, 0.0))
    assert serving_threads() == 1  # oversubscribed: never 0
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda path: 2.0)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.7, 0.0, 0.0))
    assert serving_threads() == 1  # a 2-CPU quota on 4 cores, one busy
    assert serving_threads() == cores.idle_cores()  # the one rule, not a copy of it
    monkeypatch.setenv("TRANSFERTRAJ_THREADS", "3")
    assert serving_threads() == 3  # the project-wide setting wins, as for every pool
    monkeypatch.setenv(THREADS_ENV, "2")
    assert serving_threads() == 2  # the serving setting wins over it


def test_length_batches_answer_as_one_padded_batch(served_store, monkeypatch):
    """Parity: the serving path (trips grouped by length, inference mode, threads from the cores) gives
    the answers of the path before it (one batch padded to the longest trip, torch.no_grad, 1 thread),
    for real Porto trips of very different lengths, in every task and in the same row order."""
    from transfertraj import registry
    from transfertraj.model.predict import length_batches

    model = registry.load(MODEL, served_store)
    py = model.unwrap_python_model()
    request = pd.concat([porto_trips(12), trips()], ignore_index=True)
    py.max_tokens = 128  # small enough that these 14 trips take several passes
    table, _ = py.features(request, task="tp")
    assert len(length_batches(np.asarray(table.column("n_points")), batch_size=256, max_tokens=128)) > 3
    for task, mu in (("tp", 8), ("tr", 4), ("odtte", 8)):
        py.threads, py.max_tokens = 2, 128
        grouped = model.predict(request, params={"task": task, "mu": mu})
        py.threads, py.max_tokens = 1, None
        one_batch = model.predict(request, params={"task": task, "mu": mu})
        assert len(grouped) == len(one_batch) > 0
        assert grouped["trip_id"].tolist() == one_batch["trip_id"].tolist()
        num = grouped.select_dtypes("number").columns
        np.testing.assert_allclose(grouped[num].to_numpy(), one_batch[num].to_numpy(), rtol=0, atol=1e-6)


BLOCKER = """
import sys

class _NoSpark:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyspark", "delta", "py4j"):
            raise ImportError(f"{name} is blocked: a served model must not need it")
        return None

sys.meta_path.insert(0, _NoSpark())
"""

CHILD = """
import json, os, shutil, sys
import pandas as pd
import mlflow.pyfunc

assert shutil.which("java") is None, "java is on PATH"
try:
    import pyspark  # noqa: F401
    raise SystemExit("pyspark imported")
except ImportError:
    pass
model = mlflow.pyfunc.load_model(sys.argv[1])
out = {}
for task, mu in (("tp", 8), ("tr", 4), ("odtte", 8)):
    df = pd.read_json(sys.argv[2], dtype={"trip_id": str})
    out[task] = model.predict(df, params={"task": task, "mu": mu}).to_dict(orient="list")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "delta", "py4j"))
assert not loaded, loaded
print("ANSWERS " + json.dumps(out))
"""


def test_served_without_java_spark_or_lake(served_store, tmp_path):
    """The registered model, copied out of the store, answers in a process with no java on PATH, no
    importable pyspark/delta-spark/py4j and an empty data root; the answers equal the in-process ones."""
    import mlflow.artifacts

    from transfertraj import registry

    registry.configure(served_store)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=MODEL, dst_path=str(tmp_path / "model")))
    request = pd.concat([porto_trips(3), trips()], ignore_index=True)
    request.to_json(tmp_path / "request.json", orient="records")
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "empty_home").mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JAVA_HOME", "SPARK_HOME", "MLFLOW_TRACKING_URI", "PYSPARK_PYTHON", "PYTHONPATH")
    }
    env.update(
        PATH=str(Path(sys.executable).parent),  # the venv's bin only: no /usr/bin/java
        PYTHONPATH=str(tmp_path / "blocker"),
        TRANSFERTRAJ_HOME=str(tmp_path / "empty_home"),
    )
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(local), str(tmp_path / "request.json")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (wheel,) = (local / "code").glob("transfertraj-*.whl")  # the model carries its code, and installs it:
    assert f"code/{wheel.name}" in (local / "requirements.txt").read_text().split()
    child = json.loads(done.stdout.split("ANSWERS ", 1)[1])
    assert list((tmp_path / "empty_home").iterdir()) == []  # nothing read or written under the data root

    model = registry.load(MODEL, served_store)
    for task, mu in (("tp", 8), ("tr", 4), ("odtte", 8)):
        here = model.predict(request, params={"task": task, "mu": mu})
        there = pd.DataFrame(child[task])
        pd.testing.assert_frame_equal(there, here.reset_index(drop=True), check_dtype=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_all_tasks(served_store, tmp_path):
    port = _free_port()
    (tmp_path / "empty_home").mkdir()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": served_store.mlflow_tracking_uri,
        "TRANSFERTRAJ_HOME": str(tmp_path / "empty_home"),
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


def test_cli_predict_writes_answers(served_store, tmp_path, monkeypatch):
    """Real Porto TRIP_IDs (19-digit numbers) in the CSV stay strings, from the input to the answers."""
    from transfertraj.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    real = porto_trips(2)
    real.to_csv(tmp_path / "trips.csv", index=False)
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
    assert list(pd.read_csv(out, dtype={"trip_id": str})["trip_id"]) == sorted(real["trip_id"].unique())


def test_answers_use_the_exact_inverse_projection(served_store):
    """Predicted points go back to lon/lat through the city's projection (one pyproj inverse per city,
    built at load), not a map fitted on each request's points; the two agree to well under a metre,
    and the inverse undoes the projection the features use."""
    from transfertraj import registry
    from transfertraj.core.geo import haversine_m
    from transfertraj.features.metric_coordinates import metric_xy

    model = registry.load(MODEL, served_store)
    py = model.unwrap_python_model()
    city = py.cities["porto"]
    lon, lat = np.array([-8.62, -8.60, -8.55]), np.array([41.14, 41.16, 41.18])
    back = py.to_lonlat["porto"](np.stack(metric_xy(lon, lat, city.crs), axis=1))
    np.testing.assert_allclose(back, np.stack([lon, lat], axis=1), rtol=0, atol=1e-9)

    request = porto_trips(6)
    exact = model.predict(request, params={"task": "tp"})
    exact_map, py.to_lonlat = py.to_lonlat, {}  # the path before: MetricToLonLat fitted per request
    try:
        fitted = model.predict(request, params={"task": "tp"})
    finally:
        py.to_lonlat = exact_map
    assert exact[["trip_id", "point"]].equals(fitted[["trip_id", "point"]])
    gap = haversine_m(exact["pred_lon"], exact["pred_lat"], fitted["pred_lon"], fitted["pred_lat"])
    assert 0 < gap.max() < 0.5  # not the same computation, the same answer
