"""Serving benchmark: load a registered model, answer TP for real Porto trips, and `mlflow models serve`.

    .venv/bin/python bench/serve.py --home var/bench-serve   # the committed small base and a real-size model
    mkdir -p var/serve-before && git archive <commit> transfertraj model | tar -x -C var/serve-before \
        && mv var/serve-before/model var/serve-before/transfertraj/model         # earlier code, its network too
    .venv/bin/python bench/serve.py --model var/bench-serve/model-v1 --model var/bench-serve/model-v2 \
        --before-code var/serve-before                         # ... measured beside this one, same run

Models (several per run, each its own rows): `--checkpoint PATH` (repeatable; default the committed small
base weights/base/transfertraj-base.pt) and `--real-size` (d = 128, 2 layers, 8 experts, pretrained one
epoch on GENERATED features; on by default when no --checkpoint or --model is given), or `--model
FOLDER` (repeatable) for folders an earlier run left under --home. `--before-code CHECKOUT`: every
in-process measurement is also made with the serving code of that checkout (an older commit; the same
model folders), interleaved model by model, and both answers are compared. Its `transfertraj.model` is the
checkout's own when model/ lies at transfertraj/model there (as the commands above put it), else this one's.

Setup (timed apart, not part of the figures): Porto's full context (the bundled OSM extract: a 5 m
lattice of ~5 M nodes, every POI) is written to a throwaway lake with delta-rs and each model is
registered with `registry.log_and_register`, which exports that context into it. The model is then copied
out of the store: every measurement loads it from a plain folder, as a serving machine would, in
processes where pyspark, delta-spark and py4j cannot be imported and java is not on PATH. Torch uses
the serving default of threads (the idle cores, TRANSFERTRAJ_SERVING_THREADS, see transfertraj/serving.py);
with several, a request's batches run side by side, one thread each. The idle cores are read from the load
average when the model loads, which the benchmark's own work raises: set TRANSFERTRAJ_THREADS and
TRANSFERTRAJ_SERVING_THREADS to the cores to measure (2 here) for a figure that does not depend on it.

In-process figures come from a fresh child process (this file with --child): import time, load time
(`mlflow.pyfunc.load_model`), the first request, then repeated requests of 64 real Porto trips of the
bundled sample (TP: the observed trip in, the next 5 points out) for p50 / p99, wall and CPU time
(time.process_time: on a shared machine, what the request costs on idle cores), interleaved with the
same request at 1 thread and at 1 thread with the lon/lat map fitted per request (the path before the
exact inverse projection). Server figures (this checkout's code only): `mlflow
models serve --env-manager local` on 127.0.0.1 only, one worker, time until /ping answers, then a bounded
load test (N client threads for S seconds, each posting one request at a time; at most --max-requests
in all): requests/s, p50 / p99 latency, errors. Results: a printed table, and dated rows (one per model
and code) appended to bench/results/serve.csv (bench/history.py; the Markdown table goes next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.history import append_rows  # noqa: E402

RESULTS = REPO / "bench" / "results"
TARGETS = {"load_s": 5.0, "first_request_s": 2.0, "p50_ms": 50.0}
MODEL_NAME = "transfertraj-porto"
DEFAULT_CHECKPOINT = REPO / "weights" / "base" / "transfertraj-base.pt"  # the committed small base


# ------------------------------------------------------------------------------------------ inputs


def porto_request(n_trips: int, skip: int = 0):
    """Request rows of real Porto trips (bundled sample; trip_id as in the file, 6-120 points)."""
    import numpy as np
    import pandas as pd

    raw = pd.read_csv(REPO / "data" / "porto" / "taxi_sample.csv", dtype={"TRIP_ID": str})
    rows, used = [], 0
    for r in raw.iloc[skip:].itertuples():
        pts = np.array(json.loads(r.POLYLINE), dtype=float).reshape(-1, 2)[:120]
        if len(pts) < 6:
            continue
        ts = int(r.TIMESTAMP) + 15 * np.arange(len(pts))
        rows.append(pd.DataFrame({"trip_id": r.TRIP_ID, "ts": ts, "lon": pts[:, 0], "lat": pts[:, 1]}))
        used += 1
        if used == n_trips:
            break
    return pd.concat(rows, ignore_index=True)


def build_model(home: Path, checkpoint: Path | None = None) -> tuple[Path, dict]:
    """Register a model with Porto's full context in a store under `home`; copy it out. The model: a
    real-size one pretrained one epoch on GENERATED features, or `checkpoint` (for example the committed
    small base weights/base/transfertraj-base.pt). Context tables already in `home` are reused."""
    import mlflow.artifacts
    import torch
    from deltalake import write_deltalake

    from tests.model.generated import generated_features
    from transfertraj import registry
    from transfertraj.core.city_config import load_city_file
    from transfertraj.core.settings import BUNDLED_CITY_DIR, Settings
    from transfertraj.feature_store.reader import table_version
    from transfertraj.feature_store.tables import table_path
    from transfertraj.features.taxonomy import N_POI, N_ROAD, TAXONOMY_VERSION
    from transfertraj.jobs.context_tables import grid_table, pois_table
    from transfertraj.jobs.osm_context import read_osm_xml
    from transfertraj.model.train import pretrain

    settings = Settings.load(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    porto = load_city_file(BUNDLED_CITY_DIR / "porto.yaml")
    t0, t_context = time.perf_counter(), None
    if table_version(settings, "context_grid") is None:
        ctx = read_osm_xml(porto.osm.path, porto.crs)
        for name, data in (("context_pois", pois_table(ctx, porto)), ("context_grid", grid_table(ctx, porto))):
            write_deltalake(table_path(settings, name), data, partition_by=["city"], mode="overwrite")
        t_context = round(time.perf_counter() - t0, 1)
    feats = generated_features(64, city="porto", poi_dim=N_POI, road_dim=N_ROAD, taxonomy_version=TAXONOMY_VERSION)
    torch.set_num_threads(2)
    if checkpoint is None:
        ckpt = pretrain(feats, "generated", home / "ckpt", epochs=1, seed=0, progress=False)
    else:
        ckpt = checkpoint
    versions = {name: table_version(settings, name) for name in ("context_pois", "context_grid")}
    t1 = time.perf_counter()
    registered = registry.log_and_register(
        settings=settings,
        experiment="bench",
        model_name=MODEL_NAME,
        checkpoint=ckpt,
        cities=[porto],
        data_versions={"features_version": "generated"},
        context_versions={"porto": versions},
        features=feats,
        features_version="generated",
        run_name="bench serve",
    )
    t_register = time.perf_counter() - t1
    registry.configure(settings)
    out = home / f"model-v{registered.version}"
    uri = f"models:/{MODEL_NAME}/{registered.version}"
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(out)))
    return folder, {
        "context_tables_s": t_context,
        "register_s": round(t_register, 1),
        **artifact_sizes(folder),
    }


def artifact_sizes(folder: Path) -> dict:
    npz = next(folder.rglob("context_porto.npz"))
    ckpt_file = next(folder.rglob("best.pt"))
    return {
        "context_npz_mb": round(npz.stat().st_size / 1e6, 2),
        "checkpoint_mb": round(ckpt_file.stat().st_size / 1e6, 2),
    }


# ------------------------------------------------------------------------------------ in process


def child(model_dir: str, batch: int, repeats: int, code: str | None = None) -> dict:
    """In a fresh process: import, load, first request, then `repeats` requests of `batch` trips.
    `code`: a checkout whose transfertraj.serving answers instead of this one's (the 'before' code)."""
    import numpy as np

    if code:
        sys.path.insert(0, code)  # ahead of this checkout (put first at import of this file)
    t0 = time.perf_counter()
    import mlflow.pyfunc

    import transfertraj.serving

    t_import = time.perf_counter() - t0
    request = porto_request(batch)
    t1 = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_dir)
    t_load = time.perf_counter() - t1
    t2 = time.perf_counter()
    first = model.predict(request, params={"task": "tp"})
    t_first = time.perf_counter() - t2
    py = model.unwrap_python_model()
    # A/B in this process, interleaved so that the machine's load falls on each alike: the serving path
    # as loaded, the same at 1 thread, and at 1 thread with the lon/lat map fitted on each request's
    # points (the path before serving held one pyproj inverse per city). CPU time (time.process_time,
    # all threads) beside wall time: on a machine shared with other work, CPU time per request is close
    # to what the request costs on idle cores, wall time is not.
    exact = py.to_lonlat
    paths = {"": (py.threads, exact), "_1thread": (1, exact), "_fitted_1thread": (1, {})}
    lat: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    answers: dict[str, object] = {}
    # The network's share: CPU time inside the forward passes of the 1-thread path's requests (what
    # cutting the request path around it cannot reach).
    net, forward_cpu, network = py.torch_model, [], []
    network_forward = net.forward

    def timed_forward(*a, **k):
        c = time.process_time()
        out = network_forward(*a, **k)
        forward_cpu.append(time.process_time() - c)
        return out

    net.forward = timed_forward  # nn.Module.__call__ calls the instance's forward
    for _ in range(repeats):
        for key, (threads, to_lonlat) in paths.items():
            py.threads, py.to_lonlat = threads, to_lonlat
            n_forward = len(forward_cpu)
            t, c = time.perf_counter(), time.process_time()
            answers[key] = model.predict(request, params={"task": "tp"})
            lat[key].append(time.perf_counter() - t)
            cpu[key].append(time.process_time() - c)
            if key == "_1thread":  # one batch at a time: process time inside a forward is that forward's own
                network.append(sum(forward_cpu[n_forward:]))
    del net.forward
    py.threads, py.to_lonlat = paths[""]
    same = all(  # float noise of other thread counts only: 1e-7 degrees is 1 cm
        answers[k][["trip_id", "point"]].equals(first[["trip_id", "point"]])
        and np.allclose(answers[k][["pred_lon", "pred_lat"]], first[["pred_lon", "pred_lat"]], rtol=0, atol=1e-7)
        and np.allclose(answers[k]["pred_minutes_since_start"], first["pred_minutes_since_start"], rtol=0, atol=1e-4)
        for k in ("", "_1thread")
    )
    from transfertraj.core.geo import haversine_m

    a, b = answers[""], answers["_fitted_1thread"]
    fitted_m = haversine_m(a["pred_lon"], a["pred_lat"], b["pred_lon"], b["pred_lat"])
    args = py.torch_model.args
    lattice = py.contexts["porto"][0].lattice
    import resource

    return {
        "import_s": t_import,
        "load_s": t_load,
        "first_request_s": t_first,
        "batch_trips": batch,
        "batch_points": len(request),
        "answers": len(first),
        "threads": paths[""][0],
        "max_tokens": py.max_tokens,
        "model": f"d={args.d_model}, {args.n_layers} layer(s), {args.n_experts} experts (top {args.top_k}), "
        f"{sum(p.numel() for p in py.torch_model.parameters()) / 1e6:.2f} M parameters",
        **{f"p50{k}_ms": float(np.percentile(v, 50) * 1000) for k, v in lat.items()},
        **{f"p99{k}_ms": float(np.percentile(v, 99) * 1000) for k, v in lat.items()},
        **{f"cpu_p50{k}_ms": float(np.percentile(v, 50) * 1000) for k, v in cpu.items()},
        "cpu_p50_network_ms": float(np.percentile(network, 50) * 1000),
        "cpu_p50_rest_ms": float(np.percentile(np.array(cpu["_1thread"]) - np.array(network), 50) * 1000),
        "same_answers": same,
        "fitted_vs_exact_max_m": float(fitted_m.max()),
        "repeats": repeats,
        "lattice_nodes": int(lattice.shape[0] * lattice.shape[1]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "spark_imported": any(m.split(".")[0] in ("pyspark", "delta", "py4j") for m in sys.modules),
        "serving_code": str(Path(transfertraj.serving.__file__).resolve().parent.parent),
        "model_code": str(Path(sys.modules[type(py.torch_model).__module__].__file__).resolve().parent),
        "first_answers": first[["pred_lon", "pred_lat", "pred_minutes_since_start"]].to_numpy().tolist(),
    }


BLOCKER = """
import sys

class _NoSpark:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyspark", "delta", "py4j"):
            raise ImportError(f"{name}: not installed on a serving machine")
        return None

sys.meta_path.insert(0, _NoSpark())
"""


def serving_env(tmp: Path) -> dict:
    """A serving machine's environment: pyspark / delta-spark / py4j not importable (mlflow's optional
    `import pyspark` then fails fast, as it does where they are not installed), no java on PATH."""
    (tmp / "blocker").mkdir(exist_ok=True)
    (tmp / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    (tmp / "bin").mkdir(exist_ok=True)
    for tool in ("bash", "sh"):  # `mlflow models serve` execs uvicorn through bash
        if not (tmp / "bin" / tool).exists():
            (tmp / "bin" / tool).symlink_to(shutil.which(tool))
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SPARK_HOME", "PYTHONPATH")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{tmp / 'bin'}"
    return {**env, "PYTHONPATH": str(tmp / "blocker"), "PATH": path}


def run_child(model_dir: Path, batch: int, repeats: int, env: dict, code: Path | None = None) -> dict:
    arg = [str(model_dir), batch, repeats, str(code.resolve()) if code else None]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(arg)],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{REPO}"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_test(
    model_dir: Path, *, clients: int, seconds: float, trips: int, max_requests: int, log: Path, env: dict
) -> dict:
    """`mlflow models serve` on 127.0.0.1, `clients` threads posting TP requests for `seconds`."""
    import numpy as np

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin), "models", "serve", "-m", str(model_dir), "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    t0 = time.perf_counter()
    with log.open("w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                urllib.request.urlopen(base + "/ping", timeout=2).close()
                break
            except OSError:
                if time.perf_counter() - t0 > 180 or server.poll() is not None:
                    raise RuntimeError("mlflow models serve did not come up:\n" + log.read_text()[-3000:]) from None
                time.sleep(0.2)
        ready_s = time.perf_counter() - t0
        pool = [porto_request(trips, skip=k * trips) for k in range(8)]  # different real trips per request
        bodies = [
            json.dumps({"dataframe_split": df.to_dict(orient="split", index=False), "params": {"task": "tp"}}).encode()
            for df in pool
        ]
        t_first = time.perf_counter()
        _post(base, bodies[0])
        first_s = time.perf_counter() - t_first
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop = time.perf_counter() + seconds

        def client(k: int):
            i = k
            while time.perf_counter() < stop:
                with lock:
                    if len(latencies) + len(errors) >= max_requests:
                        return
                t = time.perf_counter()
                try:
                    _post(base, bodies[i % len(bodies)])
                    ok = True
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the test
                    ok, msg = False, repr(exc)[:200]
                with lock:
                    (latencies.append(time.perf_counter() - t) if ok else errors.append(msg))
                i += 1

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        t_start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=seconds + 120)
        wall = time.perf_counter() - t_start
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "ready_s": ready_s,
        "server_first_s": first_s,
        "clients": clients,
        "seconds": round(wall, 1),
        "trips_per_request": trips,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def _post(base: str, body: bytes) -> None:
    req = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        json.loads(resp.read())["predictions"]


# ---------------------------------------------------------------------------------------- report


def model_label(inproc: dict, weights: str) -> str:
    return f"{weights} ({inproc['model']})"


def report(runs: list[dict], load: tuple[float, float], before_code: str | None) -> str:
    """One Markdown table: per model, this code's figures (and the --before-code ones beside them)."""

    def verdict(key, value):
        return "met" if value <= TARGETS[key] else "NOT met"

    lines = [
        "TransferTraj serving benchmark (requests: real Porto trips of the bundled sample, TP, "
        "64 trips a request in process; context: Porto's full OSM extract in every model)",
        "",
        "| model | code | model load (<= 5 s) | first request (<= 2 s) | TP p50 wall (<= 50 ms) | p99 wall "
        "| TP p50 CPU | at 1 thread: network forward / the rest | p50 wall / CPU at 1 thread | threads | peak RSS "
        "| same answers as after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        for code, i in r["inproc"].items():
            lines.append(
                f"| {r['label']} | {code} | {i['load_s']:.2f} s {verdict('load_s', i['load_s'])} "
                f"| {i['first_request_s']:.3f} s {verdict('first_request_s', i['first_request_s'])} "
                f"| {i['p50_ms']:.1f} ms {verdict('p50_ms', i['p50_ms'])} | {i['p99_ms']:.1f} ms "
                f"| {i['cpu_p50_ms']:.1f} ms {verdict('p50_ms', i['cpu_p50_ms'])} "
                f"| {i['cpu_p50_network_ms']:.1f} / {i['cpu_p50_rest_ms']:.1f} ms "
                f"| {i['p50_1thread_ms']:.1f} / {i['cpu_p50_1thread_ms']:.1f} ms | {i['threads']} "
                f"| {i['peak_rss_mb']:.0f} MB | {i.get('same_as_after', '-')} |"
            )
    lines += [
        "",
        "| model | `mlflow models serve` until /ping | first request | clients x s, trips/request | requests/s "
        "| p50 / p99 | requests / errors |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in runs:
        sv = r["server"]
        lines.append(
            f"| {r['label']} | {sv['ready_s']:.1f} s | {sv['server_first_s'] * 1000:.0f} ms "
            f"| {sv['clients']} x {sv['seconds']:.0f}, {sv['trips_per_request']} | {sv['rps']:.1f} "
            f"| {sv['p50_ms']:.0f} / {sv['p99_ms']:.0f} ms | {sv['requests']} / {sv['errors']} |"
        )
        if sv["first_error"]:
            lines.append(f"first server error: {sv['first_error']}")
    i0 = runs[0]["inproc"]["after"]
    lines += [
        "",
        f"{i0['repeats']} timed requests per model and code after the first; pyspark / delta / py4j imported: "
        f"{'yes' if any(i['spark_imported'] for r in runs for i in r['inproc'].values()) else 'no'} (not importable, "
        "java not on PATH). CPU time = time.process_time of the request (all threads): on a shared machine what "
        "the request costs on idle cores; wall time waits for the cores others hold.",
        f"code: after = this checkout ({i0['serving_code']})"
        + (
            f"; before = {before_code} (network code: {runs[0]['inproc']['before'].get('model_code', '?')})"
            if before_code
            else ""
        ),
        f"load average (1, 5 min) at start {load[0]:.2f}, {load[1]:.2f}; at end {os.getloadavg()[0]:.2f}, "
        f"{os.getloadavg()[1]:.2f} on {os.cpu_count()} CPUs (shared: above {os.cpu_count()} other work ran beside)",
    ]
    return "\n".join(lines)


def server_columns(server: dict) -> dict:
    """Server figures under their serve.csv names (p50/p99 prefixed: the in-process ones own the plain names)."""
    return {(f"server_{k}" if k in ("p50_ms", "p99_ms") else k): v for k, v in server.items()}


def same_answers(a: list, b: list) -> str:
    """'yes' when two children's first answers agree to 1e-7 degrees (1 cm) and 1e-4 minutes."""
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        return f"NO (shapes {x.shape} / {y.shape})"
    ok = np.allclose(x[:, :2], y[:, :2], rtol=0, atol=1e-7) and np.allclose(x[:, 2], y[:, 2], rtol=0, atol=1e-4)
    return "yes" if ok else f"NO (largest difference {np.abs(x - y).max():.3g})"


def append_results(rows: list[dict], table: str, stamp: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "serve.csv"
    append_rows(path, rows)
    (RESULTS / f"serve-{stamp}.md").write_text(table + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64, help="trips per in-process request (default 64)")
    p.add_argument("--repeats", type=int, default=100, help="timed in-process requests after the first")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients of the server (default 20)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the load test (default 60)")
    p.add_argument("--trips-per-request", type=int, default=1, help="trips in each server request (default 1)")
    p.add_argument("--max-requests", type=int, default=20_000, help="bound on the load test's requests")
    p.add_argument("--home", type=Path, help="data root for the throwaway store (default: a temporary folder)")
    p.add_argument("--model", type=Path, action="append", help="a model folder from an earlier run (repeatable)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help=f"register this checkpoint (repeatable; default {DEFAULT_CHECKPOINT.relative_to(REPO)})",
    )
    p.add_argument("--real-size", action="store_true", help="also a real-size model trained on GENERATED features")
    p.add_argument("--before-code", type=Path, help="a checkout of earlier code: its request path measured beside")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return 0
    load = os.getloadavg()[:2]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        home = args.home or Path(tmp)
        models: list[tuple[Path, dict]] = [
            (m, {**artifact_sizes(m), "weights": f"those in {m}"}) for m in args.model or []
        ]
        checkpoints = list(args.checkpoint or ([] if args.model else [DEFAULT_CHECKPOINT]))
        for ckpt in [*checkpoints, *([None] if args.real_size or not (args.model or args.checkpoint) else [])]:
            t0 = time.perf_counter()
            folder, setup = build_model(home, ckpt)
            setup["weights"] = str(
                ckpt.relative_to(REPO) if ckpt and ckpt.is_relative_to(REPO) else ckpt or "GENERATED"
            )
            print(f"  setup {time.perf_counter() - t0:.0f} s: {setup}", file=sys.stderr)
            models.append((folder, setup))
        env = serving_env(Path(tmp))
        runs = []
        for folder, setup in models:
            inproc = {}
            if args.before_code:
                inproc["before"] = run_child(folder, args.batch, args.repeats, env, args.before_code)
            inproc["after"] = run_child(folder, args.batch, args.repeats, env)
            for code, i in inproc.items():
                i["same_as_after"] = same_answers(i["first_answers"], inproc["after"]["first_answers"])
                print(
                    f"  in process ({code}): { {k: v for k, v in i.items() if k != 'first_answers'} }", file=sys.stderr
                )
            server = load_test(
                folder,
                clients=args.clients,
                seconds=args.seconds,
                trips=args.trips_per_request,
                max_requests=args.max_requests,
                log=home / "serve.log",
                env=env,
            )
            print(f"  server: {server}", file=sys.stderr)
            runs.append({"setup": setup, "inproc": inproc, "server": server,
                         "label": model_label(inproc["after"], setup["weights"])})  # fmt: skip
    table = report(runs, load, str(args.before_code) if args.before_code else None)
    print(table)
    rows = []
    for r in runs:
        for code, i in r["inproc"].items():
            row = {"date": stamp, "load_1min_start": round(load[0], 2), "code": code, **r["setup"]}
            row.update({k: v for k, v in i.items() if k != "first_answers"})
            if code == "after":
                row.update(server_columns(r["server"]))
            rows.append(row)
    print(f"appended to {append_results(rows, table, stamp)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
