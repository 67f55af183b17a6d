"""Pretrain the base model on the source cities, evaluate it, log it to MLflow and register it.

Scheduled on the features Assets of the source cities (TRANSFERTRAJ_PRETRAIN_CITIES, default porto),
so it runs after their nightly ingestion, and runnable by hand with other params. The training task
runs in the pool/queue named by TRANSFERTRAJ_TRAIN_POOL / TRANSFERTRAJ_TRAIN_QUEUE (create a `gpu`
pool and point them at it on a GPU worker; the default pool otherwise).

The new version of `transfertraj-base` gets the alias `challenger`; the gate scores it and the
champion on one pinned validation set (the features version the training read, recorded as
gate.validation_version) and moves `champion` only if no task is worse than its tolerance
(transfertraj.gate). Decision and numbers are in the MLflow run (tag gate.decision, metrics gate/...).
Task logic: `transfertraj.tasks.pretrain`; DAG policy: `transfertraj.tasks.policy`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from transfertraj.core.constants import CITY_NAME_PATTERN, MODEL_SIZES
from transfertraj.gate import tolerance_override
from transfertraj.tasks.ingest import features_asset_uri
from transfertraj.tasks.policy import DEFAULT_ARGS, train_pool, train_queue
from transfertraj.tasks.pretrain import INITS, pretrain_base, pretrain_cities
from transfertraj.tasks.training_run import train_overrides

SOURCES = pretrain_cities()


@dag(
    dag_id="pretrain",
    schedule=[Asset(name=f"transfertraj_features_{c}", uri=features_asset_uri(c)) for c in SOURCES],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["transfertraj", "training", "registry"],
    params={
        "cities": Param(
            SOURCES,
            type="array",
            items={"type": "string", "pattern": CITY_NAME_PATTERN},
            minItems=1,
            description="source cities whose features the base model is trained on",
        ),
        "epochs": Param(30, type="integer", minimum=1, maximum=1000),
        "batch_size": Param(64, type="integer", minimum=1),
        "lr": Param(1e-3, type="number", exclusiveMinimum=0),
        "patience": Param(5, type="integer", minimum=1),
        "init": Param(
            "scratch",
            enum=list(INITS),
            description="scratch: random weights; base-weights: continue the committed multi-city base model "
            "(weights/base/; its architecture, the size fields below are ignored); base-release: register the "
            "committed model and its per-task fine-tunes as they are (no training)",
        ),
        "size": Param("paper", enum=list(MODEL_SIZES), description="named model size (core.constants.MODEL_SIZES)"),
        # Each architecture field below overrides the size's value; null keeps it.
        "d_model": Param(None, type=["null", "integer"], minimum=8, description="model width (n_heads must divide it)"),
        "n_layers": Param(None, type=["null", "integer"], minimum=1),
        "n_heads": Param(None, type=["null", "integer"], minimum=1),
        "n_experts": Param(None, type=["null", "integer"], minimum=1),
        "top_k": Param(None, type=["null", "integer"], minimum=1),
        "expert_hidden": Param(None, type=["null", "integer"], minimum=8),
        "seed": Param(0, type="integer"),
        "tolerance": Param(
            None,
            type=["null", "number", "string"],
            minimum=0,
            description="gate tolerance (relative): one number for every task, or per task 'od=0.05,tp=0.02'; "
            "default TRANSFERTRAJ_GATE_TOLERANCE or transfertraj.gate.GATE_TOLERANCES",
        ),
    },
)
def pretrain():
    @task(pool=train_pool(), queue=train_queue(), retries=1)
    def train_evaluate_register() -> dict:
        ctx = get_current_context()
        p = dict(ctx["params"])
        keys = (
            "epochs",
            "batch_size",
            "lr",
            "patience",
            "d_model",
            "n_layers",
            "n_heads",
            "n_experts",
            "top_k",
            "expert_hidden",
            "seed",
        )
        size = MODEL_SIZES[p["size"]]
        with tolerance_override(p.get("tolerance")):  # this run's gate only
            return pretrain_base(
                list(p["cities"]),
                run_key=ctx["run_id"],
                init=p["init"],
                **{**size, **train_overrides({k: p[k] for k in keys})},
            )

    train_evaluate_register()


pretrain()
