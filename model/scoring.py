"""Scores one trained model on given trajectories (a city's deliveries) against the protocol's baselines:
each task's mask, every trajectory, paired bootstrap 95 % CIs of the model/baseline error ratios. No
training, no files but the two it is asked to write, nothing deleted.

    from transfertraj.model.scoring import score_checkpoint, write_score
    score = score_checkpoint("best.pt", data, tasks=("tp", "tr8", "tr16", "od"), road_graphs={"porto": graph})
    score.ratios          # task, method, against, metric, ratio, ci_low, ci_high, n_trajectories, verdict
                          # (method "model"; and "road-path interpolation" against the straight line)
    score.metrics         # task, method, rmse / mae (m or min), mape_pct, n_trajectories
    write_score(score, "reports/score/porto", about={"model": "models:/transfertraj-base@champion", ...})

`transfertraj score` (transfertraj/cli.py) resolves a registry URI to its checkpoint and reads the city's
features for some delivery dates; this module sees a checkpoint path and a `TrajectoryData` only.

What differs from the evaluation suite (model.evaluation_runner, which trains its models): there is no
split. Every trajectory of the data is scored (TP on those with >= 10 points, as in the protocol), the
model and every baseline on the same hidden points. TP and TR baselines need no fitting; the OD-TTE
regressions are cross-fitted on the scored trajectories (`baselines.od_cross_fitted`). Each model/
baseline ratio is reported against every baseline of the task's family, since no validation split
chooses the strongest; the road-path interpolation joins TR where the city has roads in the lake. A model
with `road_input` reads its TR road offsets from the same graphs (0 where a city has none).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from transfertraj.model.baselines import od_cross_fitted, od_minutes
from transfertraj.model.checkpoint import load_checkpoint
from transfertraj.model.evaluation_protocol import ROAD_PATH_BASELINE, SCORE_TASKS, SUITES, task_rows
from transfertraj.model.evaluation_runner import model_frame, ratio_rows, tp_baseline_frames, tr_baseline_frames
from transfertraj.model.metrics import sums_metrics, trip_sums
from transfertraj.model.predict import tr_road_input
from transfertraj.model.trajectory_data import TrajectoryData

MODEL = "model"  # the method name of the scored model in the tables
LINE_TR = "lin-interp (time)"  # the straight line the road path is measured against
# OD baselines without a train split, cross-fitted: the evaluation protocol's three (gradient-boosted trees
# are often the strongest on a city's own trips)
OD_CROSS_FIT = (("OD-LR", "linear"), ("OD-LR distance", "distance"), ("OD-GB", "gbrt"))


@dataclass
class Score:
    metrics: pd.DataFrame
    ratios: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    n_trajectories: int = 0  # trajectories in the data (each task scores those its mask can use)


def baselines_on_all(data: TrajectoryData, task: str, *, road_graphs=None, config=None) -> dict[str, pd.DataFrame]:
    """{baseline: per-trip frame} of a task on every eligible trajectory of `data`."""
    config = config or SUITES["quick"]
    rows = task_rows(data, "all", task, config)
    if task == "tp":
        return tp_baseline_frames(data, rows)
    if task.startswith("tr"):
        return tr_baseline_frames(data, rows, int(task[2:]), road_graphs=road_graphs)
    truth = od_minutes(data, rows)
    return {
        name: trip_sums(data.trip_id[rows], od_cross_fitted(data, rows, kind) - truth, true_minutes=truth)
        for name, kind in OD_CROSS_FIT
    }


def score_checkpoint(
    checkpoint,
    data: TrajectoryData,
    *,
    tasks=SCORE_TASKS,
    task_checkpoints: dict | None = None,
    road_graphs: dict | None = None,
    device: str = "auto",
    n_boot: int = 2000,
    seed: int = 0,
) -> Score:
    """The model (a checkpoint path or dict) and the baselines on every trajectory of `data`, per task;
    `task_checkpoints` {score task: checkpoint} answers a task with its own (a model with per-task
    fine-tunes, scored as it is served)."""
    config = replace(SUITES["quick"], n_boot=n_boot)
    metrics, ratios, notes = [], [], []
    for task in tasks:
        if len(task_rows(data, "all", task, config)) < 2:
            notes.append(f"{task}: skipped, fewer than 2 trajectories its mask can use")
            continue
        answering = (task_checkpoints or {}).get(task, checkpoint)
        road_input = bool(load_checkpoint(answering)["model_args"].get("road_input"))
        data_task = data
        if task.startswith("tr") and road_input:  # the model's road offsets, on the graphs the baseline uses
            data_task = tr_road_input(data, task_rows(data, "all", task, config), int(task[2:]), road_graphs)
            where = "the road graph of the road-path baseline" if road_graphs else "no road graph: all 0"
            notes.append(f"{task}: the model reads road offsets (road_input) from {where}")
        frames = {MODEL: model_frame(answering, data_task, task, config, device, split="all")}
        frames.update(baselines_on_all(data, task, road_graphs=road_graphs, config=config))
        if ROAD_PATH_BASELINE in frames:
            share = frames[ROAD_PATH_BASELINE].attrs.get("on_road_share", math.nan)
            notes.append(f"{task}: {share:.0%} of hidden points placed on a road path (the rest: straight line)")
        for method, frame in frames.items():
            metrics.append({"task": task, "method": method, **sums_metrics(task, frame)})
        for against in (m for m in frames if m != MODEL):
            ratios += ratio_rows("score", MODEL, task, frames[MODEL], against, frames[against], n_boot, seed=seed)
        if ROAD_PATH_BASELINE in frames:  # what the map alone gives over the straight line
            line, road = frames[LINE_TR], frames[ROAD_PATH_BASELINE]
            ratios += ratio_rows("score", ROAD_PATH_BASELINE, task, road, LINE_TR, line, n_boot, seed=seed)
    ratios_df = pd.DataFrame(ratios).drop(columns=["setting"], errors="ignore")
    return Score(pd.DataFrame(metrics), ratios_df, notes, len(data))


# ----------------------------------------------------------------------------------------- the report


def _cell(value: float, unit: str) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.1f} {unit}" if unit == "m" else f"{value:.2f} {unit}"


def score_markdown(score: Score, about: dict) -> str:
    """The table a person reads: model/baseline ratios with 95 % CIs, and what was scored on what."""
    head = [f"# Scoring {about.get('model', 'a model')} on {about.get('city', '?')}", ""]
    head += [f"- {k}: {v}" for k, v in about.items() if k not in ("model",)]
    head += [f"- trajectories read: {score.n_trajectories}", ""]
    lines = [
        "| task | method | against | metric | method's | against's | ratio [95 % CI] | n trajectories |",
        "|---|---|---|---|---|---|---|---|",
    ]
    m = score.metrics.set_index(["task", "method"]) if len(score.metrics) else None
    for r in score.ratios.itertuples(index=False):
        unit = "min" if r.task == "od" else "m"
        col = "mape_pct" if r.metric == "mape" else f"{r.metric}_{unit}"
        a, b = m.loc[(r.task, r.method), col], m.loc[(r.task, r.against), col]
        u = "%" if r.metric == "mape" else unit
        ci = f"{r.ratio:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" if np.isfinite(r.ratio) else "n/a"
        lines.append(
            f"| {r.task} | {r.method} | {r.against} | {r.metric.upper()} | {_cell(a, u)} | {_cell(b, u)} | {ci} "
            f"| {r.n_trajectories} |"
        )
    foot = ["", "ratio = method's error / against's error: below 1 the method's error is lower; a 95 % CI"]
    foot += ["(paired bootstrap over trajectories) that excludes 1 is a real difference."]
    foot += [f"- {n}" for n in score.notes]
    return "\n".join(head + lines + foot) + "\n"


def write_score(score: Score, out_dir, about: dict) -> list[Path]:
    """score.json (everything, machine-readable) and score.md (the table) under out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        **about,
        "n_trajectories": score.n_trajectories,
        "metrics": score.metrics.to_dict(orient="records"),
        "ratios": score.ratios.to_dict(orient="records"),
        "notes": score.notes,
    }
    js, md = out / "score.json", out / "score.md"
    js.write_text(json.dumps(doc, indent=2, default=str, allow_nan=True) + "\n")
    md.write_text(score_markdown(score, about))
    return [js, md]
