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

from transfertraj.core.settings import BASE_TASK_WEIGHTS, BASE_WEIGHTS, Settings
from transfertraj.tasks.training_data import read_city_data
from transfertraj.tasks.training_run import checkpoint_dir, registered, train_overrides

log = logging.getLogger("transfertraj.pipeline")


def pretrain_cities() -> list[str]:
    """The source cities of the base model (TRANSFERTRAJ_PRETRAIN_CITIES, comma-separated; default porto)."""
    return [c.strip() for c in os.environ.get("TRANSFERTRAJ_PRETRAIN_CITIES", "porto").split(",") if c.strip()]


# Where pretraining starts: random weights, the committed base model (continued on the cities at hand), or
# the committed base model registered as it is, with its per-task fine-tunes ("base-release": no training).
INITS = ("scratch", "base-weights", "base-release")


def initial_weights(init: str | None) -> Path | None:
    """The checkpoint a pretraining starts from: None (random weights), the committed base model, or a path."""
    if init in (None, "scratch"):
        return None
    path = BASE_WEIGHTS if init in ("base-weights", "base-release") else Path(init)
    if not path.is_file():
        raise FileNotFoundError(
            f"no initial weights at {path}: the committed base model is weights/base/ in the repository "
            "(scripts/train_base.sh makes it); or pretrain with init=scratch"
        )
    return path


def committed_task_weights() -> dict[str, Path]:
    """{task key: checkpoint} of the committed base model's per-task fine-tunes (the paper's "full" variant:
    weights/base/README.md), those present of transfertraj-base-<task>.pt for the served tasks, and of
    <city>/transfertraj-base-<task>.pt for one city's own (key <task>@<city>, serving.split_task_key).

    Only the release carries them: a continuation retrains the default weights only, and fine-tunes of
    the un-continued weights riding along would answer every served task in its place, so the gate could
    no longer tell a better or a damaged continuation from the release."""
    from transfertraj.serving import CITY_SEP, TASK_CHECKPOINTS

    found = {t: BASE_TASK_WEIGHTS / f"transfertraj-base-{t}.pt" for t in TASK_CHECKPOINTS}
    for folder in sorted(p for p in BASE_TASK_WEIGHTS.glob("*") if p.is_dir()):  # tasks/<city>/: that city's own
        found.update({f"{t}{CITY_SEP}{folder.name}": folder / f"transfertraj-base-{t}.pt" for t in TASK_CHECKPOINTS})
    return {t: p for t, p in found.items() if p.is_file()}


def pretrain_base(cities: list[str], *, run_key: str, init: str | None = None, **overrides) -> dict:
    """Pretrain on these cities' features, log one MLflow run, register `transfertraj-base`, gate it.

    init: "scratch" (default: masked-recovery pretraining from random weights), "base-weights" (continue the
    committed multi-city model on these cities under the multitask mask it was fine-tuned with, so it
    keeps answering every task; the architecture is the checkpoint's, size overrides are ignored) or a
    checkpoint path; "base-release" trains nothing: the committed model and its per-task fine-tunes
    (committed_task_weights) are registered as they are, scored by the gate on these cities' validation.
    """
    from transfertraj import registry
    from transfertraj.core.city_config import load_city
    from transfertraj.model.train import finetune, pretrain, split_overrides

    settings = Settings.load()
    data, version, ctx = read_city_data(settings, cities)
    out_dir = checkpoint_dir(settings, registry.BASE_MODEL, run_key)
    t0 = time.time()
    start = initial_weights(init)
    task_checkpoints, tags = {}, {}
    if init == "base-release":
        ckpt, task_checkpoints = start, committed_task_weights()
        tags = {"release": "committed weights/base (trained on the real volumes, weights/base/README.md)"}
    elif start is None:
        ckpt = pretrain(data, version, out_dir, progress=False, **train_overrides(overrides))
    else:
        training, architecture = split_overrides(train_overrides(overrides))
        if architecture:
            log.info("architecture from %s; ignored: %s", start, sorted(architecture))
        ckpt = finetune(start, "multitask", data, data_version=version, out_dir=out_dir, progress=False, **training)
    log.info("base model for %s (features v%s, init %s) in %.0f s: %s", cities, version, init, time.time() - t0, ckpt)
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
        task_checkpoints=task_checkpoints,
        extra_tags=tags or None,
    )
    return registered(reg)
