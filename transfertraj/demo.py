"""The README's main command: the Airflow DAGs end to end on the bundled samples, Airflow and MLflow on SQLite.

    transfertraj demo                   # what `make demo` runs; data root TRANSFERTRAJ_HOME (make: ./var)

1. `nightly_ingest_porto` for the sample's delivery date (land -> ingest -> features -> quality report);
2. `pretrain` three times on Porto: the committed multi-city base model (weights/base/, trained on the
   Porto year and San Francisco days) registered as released, with its per-task fine-tunes (the first
   champion); the same weights continued for a few epochs on the sample (a challenger the gate promotes
   only if it is no worse on any task than the release); then a damaged challenger (one epoch at 20x
   the learning rate), which the gate refuses: one MLflow run each, `transfertraj-base` versions with
   aliases;
3. `onboard_city` for the San Francisco sample as a new city (`sf_cabs`; the bundled config keeps its
   own name): config, context, ingestion, zero-shot score of the base champion, few-shot fine-tune,
   `transfertraj-sf_cabs` through the gate. `--onboard sanfrancisco beijing` adds the Beijing GeoLife
   sample (`beijing_geolife`, no OSM) — not by default: its 217 k fixes hold few vehicle trajectories
   (the rest is walking), so it onboards over its first 12 delivery dates (3 gave 3 trajectories and the
   fine-tune failed with "not enough trajectories"; 12 succeeded here, about 4 more minutes);
4. `maintenance` (OPTIMIZE + VACUUM, protecting the versions the registered models record);
then prints the registry (names, versions, aliases) and the validation metrics.

Each DAG runs with `dag.test()`: every task in this process, against the Airflow metadata database in
<data root>/airflow/airflow.db (created on first use). Nothing here needs a running scheduler or UI;
docs/operations.md says how to start them on the same data root.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from transfertraj.core.settings import REPO_ROOT, Settings

log = logging.getLogger("transfertraj.demo")

DAGS_FOLDER = REPO_ROOT / "dags"
# Tiny on purpose: the demo shows the machinery on 2 CPUs in minutes, not the paper's accuracy.
# The pretrain DAG's params. The first champion is the committed release (no training). The next version
# continues the committed base weights on the sample (a few epochs, a low learning rate: the sample is
# 1,100 trips, the base model saw 17,000 of Porto); it measured slightly worse than the release on the
# sample's validation, and the gate says so. The last challenger is the same weights damaged on purpose (one epoch at 20x that learning rate), gated with
# tolerance 0, so the demo shows a refusal. A 1-epoch model from scratch, the earlier challenger, tied the
# base model on TP and TR (both answer like the baselines, weights/base/README.md) and beat it on OD on
# the sample's 110 validation trips, so the gate promoted it: a demo of chance, not of the gate.
DEMO_RELEASE = {"init": "base-release"}
DEMO_CONTINUE = {"init": "base-weights", "epochs": 3, "lr": 3e-4, "batch_size": 32}
DEMO_CHALLENGER = {"init": "base-weights", "epochs": 1, "lr": 2e-2, "batch_size": 32, "seed": 1, "tolerance": 0.0}
DEFAULT_ONBOARD = ("sanfrancisco",)  # see the module docstring for Beijing
ONBOARD = {
    "sanfrancisco": {
        "city": "sf_cabs",
        "description": "San Francisco cabspotting sample, onboarded by the demo",
        "bbox": [-122.45, 37.76, -122.38, 37.80],
        "timezone": "America/Los_Angeles",
        "raw_preset": "cabspotting",
        "licence": "CC BY 4.0 (CRAWDAD epfl/mobility, IEEE DataPort)",
        "sampling_interval_s": 60,
        "osm_kind": "gis_extract",
        "files": {
            "raw_path": "cabspotting_2008-05-20.csv.gz",
            "osm_path": "sf_lines.zip",
            "osm_points_path": "sf_points.zip",
        },
        "poi_categories_covered": ["food", "education", "health", "transport", "parking", "office_services", "other"],
        "quality": {"max_rejected_share": 0.6, "min_trajectories": 1},
        "max_dates": 1,
    },
    "beijing": {
        "city": "beijing_geolife",
        "description": "Beijing GeoLife sample (no OSM), onboarded by the demo",
        "bbox": [116.20, 39.75, 116.55, 40.10],
        "timezone": "Asia/Shanghai",
        "raw_preset": "geolife",
        "licence": "Microsoft Research GeoLife 1.3, free for non-commercial research only",
        "sampling_interval_s": 15,
        "osm_kind": "none",
        "files": {"raw_path": "geolife_sample.txt.gz"},
        "cleaning": {"gap_split_s": 120, "min_vehicle_speed_kmh": 15},
        "quality": {"max_rejected_share": 0.5, "min_trajectories": 0},
        "max_dates": 12,  # GeoLife users rarely drive: the first dates hold only a few vehicle trips
    },
}


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for an embedded Airflow on SQLite under the data root, this checkout's DAGs."""
    home = Path(settings.airflow_home)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        "TRANSFERTRAJ_HOME": str(settings.home),
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
    }


def prepare_airflow(settings: Settings) -> None:
    """Export the embedded Airflow's environment (before airflow is imported) and migrate its database."""
    env = airflow_env(settings)
    os.environ.update(env)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    log.info("Airflow metadata DB: %s", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def load_dags() -> dict:
    from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.dags


def run_dag(dags: dict, dag_id: str, *, logical_date=None, conf: dict | None = None) -> str:
    """dag.test() one run; returns its final state."""
    t0 = time.time()
    print(f"  {dag_id:28s} running ...", flush=True)
    run = dags[dag_id].test(logical_date=logical_date, run_conf=conf or {})
    state = str(getattr(run, "state", "unknown"))
    log.info("DAG %s: %s in %.0f s", dag_id, state, time.time() - t0)
    print(f"  {dag_id:28s} {state:8s} {time.time() - t0:6.0f} s", flush=True)
    return state


def delivery_logical_date(day: str, tz: str):
    """The logical date whose data interval starts on delivery date `day` (02:00 local, see nightly_ingest)."""
    import pendulum

    d = date.fromisoformat(day) + timedelta(days=1)
    return pendulum.datetime(d.year, d.month, d.day, 2, tz=tz)


def onboard_conf(key: str, settings: Settings, *, n_shot: int, epochs: int) -> dict:
    """Copy a bundled sample under <data root>/incoming/ (onboarding reads only inside the data root)."""
    spec = dict(ONBOARD[key])
    files = spec.pop("files")
    incoming = settings.home / "incoming" / spec["city"]
    incoming.mkdir(parents=True, exist_ok=True)
    for param, name in files.items():
        src = REPO_ROOT / "data" / key / name
        dst = incoming / name
        if not dst.exists():
            shutil.copy(src, dst)
        spec[param] = str(dst)
    return {**spec, "n_shot": n_shot, "epochs": epochs, "replace": True}


def run_demo(settings: Settings, *, onboard: list[str] | None = None, epochs: int = 12, n_shot: int = 64) -> int:
    from transfertraj import registry
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.land_sample import land_sample

    onboard = list(DEFAULT_ONBOARD) if onboard is None else onboard
    started = time.time()
    log.info("data root: %s (set TRANSFERTRAJ_HOME to move it)", settings.home)
    os.environ.setdefault("TRANSFERTRAJ_SPARK_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFERTRAJ_PRETRAIN_CITIES", "porto")
    prepare_airflow(settings)
    dags = load_dags()
    states: list[str] = []

    print("\n== nightly_ingest (Airflow dag.test, SQLite metadata) ==")
    porto = load_city("porto", settings)
    for day in list(land_sample(porto, settings))[:1]:
        states.append(run_dag(dags, "nightly_ingest_porto", logical_date=delivery_logical_date(day, porto.timezone)))

    print("\n== pretrain: transfertraj-base released, continued on the sample, then a damaged challenger ==")
    states.append(run_dag(dags, "pretrain", conf={**DEMO_RELEASE, "cities": ["porto"]}))
    states.append(run_dag(dags, "pretrain", conf={**DEMO_CONTINUE, "cities": ["porto"]}))
    states.append(run_dag(dags, "pretrain", conf={**DEMO_CHALLENGER, "cities": ["porto"]}))

    print("\n== onboard_city: " + ", ".join(onboard) + " sample(s) as new cities ==")
    for key in onboard:
        states.append(run_dag(dags, "onboard_city", conf=onboard_conf(key, settings, n_shot=n_shot, epochs=epochs)))

    print("\n== maintenance: OPTIMIZE + VACUUM (protected versions kept) ==")
    states.append(run_dag(dags, "maintenance"))

    print("\n== MLflow registry (" + settings.mlflow_tracking_uri + ") ==")
    for line in registry.registry_lines(settings):
        print(line)
    print("\n== validation metrics: zero-shot base champion vs few-shot city model (city validation split) ==")
    for line in metrics_lines(settings):
        print(line)
    print(f"\nquality reports: {settings.reports}/<city>/<date>/ingest_quality.html")
    print(f"Airflow UI / MLflow UI on this data root: docs/operations.md (AIRFLOW_HOME={settings.airflow_home})")
    log.info("demo finished in %.0f s", time.time() - started)
    failed = [s for s in states if s != "success"]
    return 1 if failed else 0


def metrics_lines(settings: Settings) -> list[str]:
    import math

    from transfertraj import registry

    client = registry.configure(settings)
    keys = registry.GATE_METRICS
    head = f"{'model':30s} {'ver':>3s} {'scored as':26s} " + " ".join(f"{k:>11s}" for k in keys)
    out = [head, "-" * len(head)]
    for r in registry.list_models(settings):
        mv = client.get_model_version(r["name"], str(r["version"]))
        m = client.get_run(mv.run_id).data.metrics
        if any(f"zero_shot/{k}" in m for k in keys):
            out.append(
                f"{r['name']:30s} {r['version']:>3d} {'zero-shot base champion':26s} "
                + " ".join(f"{m.get(f'zero_shot/{k}', math.nan):11.2f}" for k in keys)
            )
        label = "few-shot fine-tuned" if r["name"] != registry.BASE_MODEL else "pretrained (Porto val)"
        if mv.tags.get("source") == registry.ZERO_SHOT_SOURCE:
            label = "base weights (zero-shot won)"
        out.append(f"{r['name']:30s} {r['version']:>3d} {label:26s} " + " ".join(f"{r[k]:11.2f}" for k in keys))
    out.append("tp/tr8: mean haversine error of the predicted points (m); od: mean travel-time error (min).")
    return out
