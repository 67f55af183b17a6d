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

from transfertraj.core.settings import Settings
from transfertraj.tasks.training_data import read_city_data
from transfertraj.tasks.training_run import checkpoint_dir, registered, train_overrides

log = logging.getLogger("transfertraj.pipeline")


def pretrain_cities() -> list[str]:
    """The source cities of the base model (TRANSFERTRAJ_PRETRAIN_CITIES, comma-separated; default porto)."""
    return [c.strip() for c in os.environ.get("TRANSFERTRAJ_PRETRAIN_CITIES", "porto").split(",") if c.strip()]


def pretrain_base(cities: list[str], *, run_key: str, **overrides) -> dict:
    """Pretrain on these cities' features, log one MLflow run, register `transfertraj-base`, gate it."""
    from transfertraj import registry
    from transfertraj.core.city_config import load_city
    from transfertraj.model.train import pretrain

    settings = Settings.load()
    data, version, ctx = read_city_data(settings, cities)
    out_dir = checkpoint_dir(settings, registry.BASE_MODEL, run_key)
    t0 = time.time()
    ckpt = pretrain(data, version, out_dir, progress=False, **train_overrides(overrides))
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
