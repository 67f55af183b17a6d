"""The pretrain task: the base model trained on the source cities' features, logged, registered, gated.

    from transfertraj.tasks import pretrain
    pretrain.pretrain_base(["porto"], run_key="manual", epochs=3, d_model=32, n_heads=2)
    # -> {"name": "transfertraj-base", "version": 4, "promoted": True, "reason": ..., "metrics": {...}}

`pretrain_cities` runs while the scheduler parses dags/pretrain.py (the DAG is scheduled on those
cities' features Assets): it reads the environment only.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from transfertraj.core.settings import BASE_WEIGHTS, Settings
from transfertraj.tasks.training_data import read_city_data
from transfertraj.tasks.training_run import checkpoint_dir, registered, train_overrides

log = logging.getLogger("transfertraj.pipeline")


def pretrain_cities() -> list[str]:
    """The source cities of the base model (TRANSFERTRAJ_PRETRAIN_CITIES, comma-separated; default porto)."""
    return [c.strip() for c in os.environ.get("TRANSFERTRAJ_PRETRAIN_CITIES", "porto").split(",") if c.strip()]


INITS = ("scratch", "base-weights")  # where pretraining starts: random weights, or the committed base model


def initial_weights(init: str | None) -> Path | None:
    """The checkpoint a pretraining starts from: None (random weights), the committed base model, or a path."""
    if init in (None, "scratch"):
        return None
    path = BASE_WEIGHTS if init == "base-weights" else Path(init)
    if not path.is_file():
        raise FileNotFoundError(
            f"no initial weights at {path}: the committed base model is weights/base/ in the repository "
            "(scripts/train_base.sh makes it); or pretrain with init=scratch"
        )
    return path


def pretrain_base(cities: list[str], *, run_key: str, init: str | None = None, **overrides) -> dict:
    """Pretrain on these cities' features, log one MLflow run, register `transfertraj-base`, gate it.

    init: "scratch" (default: masked-recovery pretraining from random weights), "base-weights" (continue the
    committed multi-city model on these cities under the multitask mask it was fine-tuned with, so it
    keeps answering every task; the architecture is the checkpoint's, size overrides are ignored) or a
    checkpoint path.
    """
    from transfertraj import registry
    from transfertraj.core.city_config import load_city
    from transfertraj.model.train import finetune, pretrain, split_overrides

    settings = Settings.load()
    data, version, ctx = read_city_data(settings, cities)
    out_dir = checkpoint_dir(settings, registry.BASE_MODEL, run_key)
    t0 = time.time()
    start = initial_weights(init)
    if start is None:
        ckpt = pretrain(data, version, out_dir, progress=False, **train_overrides(overrides))
    else:
        training, architecture = split_overrides(train_overrides(overrides))
        if architecture:
            log.info("architecture from %s; ignored: %s", start, sorted(architecture))
        ckpt = finetune(start, "multitask", data, data_version=version, out_dir=out_dir, progress=False, **training)
    log.info("pretrained on %s (features v%s) in %.0f s: %s", cities, version, time.time() - t0, ckpt)
    reg = registry.log_and_register(
        settings=settings,
        experiment=registry.BASE_EXPERIMENT,
        model_name=registry.BASE_MODEL,
        checkpoint=ckpt,
        cities=[load_city(c, settings) for c in cities],
        data_versions={"features_version": version},
        context_versions=ctx,
        features=data,
        features_version=version,
        run_name=f"pretrain {run_key}",
    )
    return registered(reg)
