"""The challenger -> champion gate's rule: per task, on one pinned validation set, no task worse than its tolerance.

    from transfertraj.gate import ValidationSet, compare, tolerances
    pinned = ValidationSet(data, version=12, cities=("porto",))      # features@12, split VALIDATION_SPLIT
    decision = compare(challenger_metrics, champion_metrics, tolerances(), against="champion v3")
    decision.promoted, decision.reason   # "... tp x0.998 <= x1.02 ok; tr8 x1.001 <= x1.02 ok; od x1.412 > x1.05 WORSE"

Why per task: one model answers TP, TR and OD-TTE (the masks differ only at inference), and a version
that matches the champion on two tasks but is 40 % worse on the third is worse for whoever calls that
task. Each task's error ratio (challenger / reference) must stay within that task's tolerance; the
decision names every ratio, so a rejection says which task stopped it and by how much.

What is scored is what is served: a model that carries one checkpoint per task (transfertraj.serving,
TASK_CHECKPOINTS) is scored on each task with the checkpoint that answers it (registry.served_networks,
registry.task_checkpoint_map), champion and challenger alike.

Tolerances are relative and per task: GATE_TOLERANCES below, overridden by the environment variable
TRANSFERTRAJ_GATE_TOLERANCE, either one number for every task (`0.05`) or per task (`od=0.05,tp=0.02`;
a task not named keeps its default). This is the one place they are read.

Why a pinned validation set: the features table grows with every delivery, and the chronological split
of a grown table is another validation set. Champion and challenger are scored on the same rows, named
by the features table's Delta version and the split rule, and that name is recorded with the decision.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# Gate metrics on the validation split, one per task, all lower-is-better: TP and TR8 distance errors,
# OD travel time.
GATE_TASKS = ("tp", "tr8", "od")
GATE_METRICS = ("tp_mae_m", "tr8_mae_m", "od_mae_min")
METRIC_OF = dict(zip(GATE_TASKS, GATE_METRICS))
GATE_TOLERANCES = {"tp": 0.02, "tr8": 0.02, "od": 0.02}
TOLERANCE_ENV = "TRANSFERTRAJ_GATE_TOLERANCE"
VALIDATION_SPLIT = "val of chronological_split 8:1:1 by departure time, ties by trip_id"


def tolerances(spec: str | float | None = None) -> dict[str, float]:
    """Task -> relative tolerance: the defaults, overridden by `spec` (else TRANSFERTRAJ_GATE_TOLERANCE)."""
    spec = os.environ.get(TOLERANCE_ENV, "") if spec is None else spec
    out = dict(GATE_TOLERANCES)
    text = str(spec).strip()
    if not text:
        return out
    if "=" not in text:
        return dict.fromkeys(out, _tolerance(text, TOLERANCE_ENV))
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, _, value = part.partition("=")
        if task.strip() not in out:
            raise ValueError(f"{TOLERANCE_ENV}: unknown task {task.strip()!r} in {text!r}; tasks: {', '.join(out)}")
        out[task.strip()] = _tolerance(value, f"{TOLERANCE_ENV} {task.strip()}")
    return out


@contextmanager
def tolerance_override(spec: str | float | None) -> Iterator[None]:
    """TRANSFERTRAJ_GATE_TOLERANCE = spec inside the block (a DAG run's `tolerance` param), restored after.

    Why restored: tasks share a process (dag.test runs every task in the caller's; a Celery worker runs
    many), and one run's tolerance must not become the next run's gate. None changes nothing.
    """
    if spec is None:
        yield
        return
    tolerances(spec)  # refused here, before any training, when it does not parse
    saved = os.environ.get(TOLERANCE_ENV)
    os.environ[TOLERANCE_ENV] = str(spec)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(TOLERANCE_ENV, None)
        else:
            os.environ[TOLERANCE_ENV] = saved


def _tolerance(value: str, where: str) -> float:
    try:
        tol = float(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a number (a relative tolerance such as 0.02)") from None
    if not tol >= 0:
        raise ValueError(f"{where}: {value!r} is negative; a tolerance is a relative margin >= 0")
    return tol


@dataclass(frozen=True)
class ValidationSet:
    """The rows both models are scored on: the cities' features at one Delta version, split by VALIDATION_SPLIT."""

    data: object = field(repr=False)  # TrajectoryData (or features rows) read at `version`
    version: int | str
    cities: tuple[str, ...]
    split: str = VALIDATION_SPLIT

    def tags(self) -> dict[str, str]:
        """How the decision names its validation set (MLflow run and model version tags)."""
        return {
            "gate.validation_table": "features",
            "gate.validation_version": str(self.version),
            "gate.validation_cities": ",".join(self.cities),
            "gate.validation_split": self.split,
        }


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str
    challenger: dict
    champion: dict | None  # the reference's metrics: the champion's, or a new city's zero-shot base model's
    tolerance: dict
    against: str = "champion"
    ratios: dict = field(default_factory=dict)  # task -> challenger error / reference error

    def lines(self) -> list[str]:
        out = [f"gate: {'PROMOTED' if self.promoted else 'KEPT ' + self.against} ({self.reason})"]
        for task, k in METRIC_OF.items():
            ref = "-" if self.champion is None else f"{self.champion.get(k, math.nan):.3f}"
            ratio = f"x{self.ratios[task]:.3f}" if task in self.ratios else ""
            out.append(
                f"  {k:12s} challenger {self.challenger.get(k, math.nan):10.3f}   {self.against} {ref:>10s}"
                f"   {ratio:>8s} (tolerance x{1 + self.tolerance[task]:g})"
            )
        return out


def error_ratio(new: float, old: float) -> float:
    """challenger / reference error; NaN when either is missing, inf when only the reference is zero."""
    if math.isnan(new) or math.isnan(old):
        return math.nan
    if old == 0:
        return 1.0 if new == 0 else math.inf
    return new / old


def compare(
    challenger: dict, champion: dict | None, tolerance: dict | float, *, against: str = "champion"
) -> GateDecision:
    """Promote unless some task's error exceeds the reference's by more than that task's tolerance.

    A task the challenger cannot answer (NaN) where the reference can is a failure on that task; a task
    neither can answer (no validation trip qualifies) is left out, and named so."""
    tol = dict.fromkeys(GATE_TASKS, float(tolerance)) if isinstance(tolerance, (int, float)) else dict(tolerance)
    if champion is None:
        return GateDecision(True, f"no {against} yet", challenger, None, tol, against)
    ratios, parts, worse = {}, [], []
    for task, k in METRIC_OF.items():
        new, old = challenger.get(k, math.nan), champion.get(k, math.nan)
        if math.isnan(new) and math.isnan(old):
            parts.append(f"{task} not scored (no validation trip qualifies)")
            continue
        if math.isnan(new):
            parts.append(f"{task} missing, {against} {old:.3f} WORSE")
            worse.append(task)
            continue
        if math.isnan(old):
            parts.append(f"{task} {new:.3f}, {against} not scored, ok")
            continue
        ratio = error_ratio(new, old)
        ratios[task] = ratio
        limit = 1 + tol[task]
        if ratio <= limit + 1e-12:
            parts.append(f"{task} x{ratio:.3f} <= x{limit:g} ok")
        else:
            parts.append(f"{task} x{ratio:.3f} > x{limit:g} WORSE")
            worse.append(task)
    verdict = f"worse than the {against} on {', '.join(worse)}" if worse else f"no task worse than the {against}'s"
    return GateDecision(not worse, f"{verdict}: {'; '.join(parts)}", challenger, champion, tol, against, ratios)
