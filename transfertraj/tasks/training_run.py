"""What the two training tasks (pretrain_base, finetune_city) share around the training call itself.

    from transfertraj.tasks.training_run import checkpoint_dir, registered, train_overrides
    out_dir = checkpoint_dir(settings, "transfertraj-base", ctx["run_id"])
    ckpt = pretrain(table, version, out_dir, **train_overrides(params))
    return registered(registry.log_and_register(...))      # the XCom

A run id (`manual__2024-01-01T00:00:00+00:00`) names the checkpoint folder, so a retry of the same run
writes to the same place and two runs never share one. The XCom is JSON: a NaN metric (a task the
validation split had no eligible trip for) travels as null.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from transfertraj.core.settings import Settings


def train_overrides(overrides: dict) -> dict:
    """The training arguments a caller set; None means "the model's default" and is left out."""
    return {k: v for k, v in overrides.items() if v is not None}


def checkpoint_dir(settings: Settings, model_name: str, run_key: str) -> Path:
    """<checkpoints>/<model name>/<run key, reduced to a safe folder name>."""
    return settings.checkpoints / model_name / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_key)


def finite(metrics: dict) -> dict:
    """The metrics with NaN as None (JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def registered(reg) -> dict:
    """The XCom of a training task: the registered version and the gate's decision on it."""
    return {
        "name": reg.name,
        "version": reg.version,
        "run_id": reg.run_id,
        "promoted": reg.decision.promoted,
        "reason": reg.decision.reason,
        "champion": reg.champion,
        "metrics": finite(reg.metrics),
    }
