"""The evaluation suite's report: results.md, the CSV tables, the plots and one MLflow run per suite.

    from transfertraj.model.evaluation_report import evaluate_suite, write_report
    res = evaluate_suite(config, data, out_dir, mlflow_uri=settings.mlflow_tracking_uri, settings=settings)
    res["results"], res["files"], res["mlflow_run_id"]       # measure (evaluation_runner) + write, in one call
    write_report(suite, out_dir)                              # only the writing, for a suite already run

Writes under out_dir: results.md (the table, the ratios against the strongest baseline with bootstrap
CIs, the issue's targets, the Porto baselines against their reference values), results.csv (one row per
setting, method, task, metric: mean, std over seeds), ratios.csv, targets.csv, reference.csv,
routing.csv and the eval_*.png plots (model.evaluation_plots). MLflow: experiment
`transfertraj-evaluation`, one run per suite (config as params, every file as an artifact) with a
nested run per setting and method.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from transfertraj.model.evaluation_protocol import (
    REFERENCE_BASELINES,
    REFERENCE_TOLERANCE,
    SuiteConfig,
    in_domain_setting,
)
from transfertraj.model.evaluation_runner import Suite, ratio_table, results_table, run_suite, target_checks
from transfertraj.model.trajectory_data import TrajectoryData


def reference_check(results: pd.DataFrame, setting: str, tolerance: float = REFERENCE_TOLERANCE) -> pd.DataFrame:
    """The measured baselines of `setting` next to REFERENCE_BASELINES: ratio and whether within tolerance."""
    rows = []
    for (task, method, metric), ref in REFERENCE_BASELINES.items():
        x = results[
            (results["setting"] == setting)
            & (results["task"] == task)
            & (results["method"] == method)
            & (results["metric"] == metric)
        ]
        if len(x):
            v = float(x["mean"].iloc[0])
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "metric": metric,
                    "measured": v,
                    "reference": ref,
                    "ratio": v / ref,
                    "within": bool(abs(v / ref - 1) <= tolerance),
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- tables


def _fmt(mean: float, std: float, n_seeds: int) -> str:
    digits = 1 if abs(mean) >= 10 else 2
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n_seeds > 1 else f"{mean:.{digits}f}"


COLUMNS = [
    ("tp", "rmse_m"),
    ("tp", "mae_m"),
    ("tr4", "rmse_m"),
    ("tr8", "rmse_m"),
    ("tr16", "rmse_m"),
    ("tr8", "mae_m"),
    ("od", "rmse_min"),
    ("od", "mae_min"),
    ("od", "mape_pct"),
]


def markdown(
    suite: Suite,
    results: pd.DataFrame,
    ratios: pd.DataFrame,
    checks: pd.DataFrame,
    routing: pd.DataFrame | None,
    reference: pd.DataFrame | None = None,
) -> str:
    c = suite.config
    lines = [f"# Evaluation suite `{c.name}`", ""]
    lines.append(
        f"Seeds {list(c.seeds)}; model {c.model or 'paper size (ModelArgs defaults)'}; "
        f"pretrain <= {c.pretrain_epochs} epochs, fine-tune <= {c.finetune_epochs} (patience {c.patience})."
    )
    lines.append(
        "Metres for TP (destination) and TR (recovered points), minutes and % for OD-TTE; "
        "mean ± std over seeds. Test split of each setting's own chronological 8:1:1 split."
    )
    lines.append("")
    present = [(t, m) for t, m in COLUMNS if ((results["task"] == t) & (results["metric"] == m)).any()]
    head = ["setting", "method", "N"] + [f"{t} {m}" for t, m in present]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (setting, method), g in results.groupby(["setting", "method"], sort=False):
        cells = []
        for t, m in present:
            x = g[(g["task"] == t) & (g["metric"] == m)]
            cells.append(_fmt(x["mean"].iloc[0], x["std"].iloc[0], int(x["n_seeds"].iloc[0])) if len(x) else "")
        n_shot = g["n_shot"].dropna()
        lines.append(
            "| " + " | ".join([setting, method, str(int(n_shot.iloc[0])) if len(n_shot) else ""] + cells) + " |"
        )
    lines.append("")
    counts = results[results["metric"] == "n_trajectories"].groupby(["setting", "task"])["mean"].max()
    lines.append(
        "Test trajectories scored: "
        + "; ".join(f"{s} {t} {int(v)}" for (s, t), v in counts.items())
        + f" (TP: trajectories with >= {c.tp_min_points} points)."
    )
    lines.append("")
    if reference is not None and len(reference):
        lines += [
            f"## Baselines against their reference values (tolerance ± {REFERENCE_TOLERANCE:.0%})",
            "",
            "| task | method | metric | measured | reference | ratio | within |",
            "|---|---|---|---|---|---|---|",
        ]
        for _, r in reference.iterrows():
            lines.append(
                f"| {r.task} | {r.method} | {r.metric} | {r.measured:.2f} | {r.reference:g} | {r.ratio:.2f} | {'yes' if r.within else 'NO'} |"
            )
        lines.append("")
    if len(checks):
        lines += [
            "## Targets (ratio to the reference, 95 % paired bootstrap CI over test trajectories)",
            "",
            "| setting | method | task | metric | against | ratio | 95 % CI | target | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in checks.iterrows():
            lines.append(
                f"| {r.setting} | {r.method} | {r.task} | {r.metric} | {r.against} | {r.ratio:.3f} | "
                f"[{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.target} | {r.verdict} |"
            )
        lines.append("")
    if len(ratios):
        lines += [
            "## Every model against the strongest baseline (chosen on val)",
            "",
            "| setting | method | task | metric | against | ratio | 95 % CI | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for _, r in ratios[ratios["metric"] != "mape"].iterrows():
            lines.append(
                f"| {r.setting} | {r.method} | {r.task} | {r.metric} | {r.against} | {r.ratio:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.verdict} |"
            )
        lines.append("")
    if routing is not None and len(routing):
        lines += [
            "## Expert routing: source vs target by context density bucket",
            "",
            "Jensen-Shannon divergence (base 2, 0 = same expert shares, 1 = disjoint) of the expert "
            "selection shares of tokens in the same density bucket.",
            "",
            "| pair | layer | context | bucket | tokens source | tokens target | JS divergence |",
            "|---|---|---|---|---|---|---|",
        ]
        for _, r in routing.iterrows():
            lines.append(f"| {r.pair} | {r.layer} | {r.kind} | {r.bucket} | {r.n_source} | {r.n_target} | {r.js:.3f} |")
        lines.append("")
    if suite.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in suite.notes] + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- MLflow


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def log_mlflow(tracking_uri: str, artifact_root: Path, suite: Suite, results: pd.DataFrame, files: list[Path]) -> str:
    """One run per suite (config as params, files as artifacts) with a nested run per setting and method."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    name = "transfertraj-evaluation"
    exp = mlflow.get_experiment_by_name(name)
    exp_id = (
        exp.experiment_id
        if exp
        else mlflow.create_experiment(name, artifact_location=Path(artifact_root).resolve().as_uri())
    )
    c = suite.config
    params = {k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in asdict(c).items()}
    tags = {
        "suite": c.name,
        "data_version": str(suite.data.data_version),
        "taxonomy_version": suite.data.taxonomy_version,
    }
    if commit := _git_commit():
        tags["git_commit"] = commit
    with mlflow.start_run(experiment_id=exp_id, run_name=f"evaluate-{c.name}", tags=tags) as parent:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for f in files:
            mlflow.log_artifact(str(f))
        for (setting, method), g in results.groupby(["setting", "method"], sort=False):
            with mlflow.start_run(
                experiment_id=exp_id,
                run_name=f"{setting} / {method}",
                nested=True,
                tags={**tags, "setting": setting, "method": method},
            ):
                metrics = {}
                for _, r in g.iterrows():
                    metrics[f"test/{r.task}_{r.metric}"] = r["mean"]
                    if r["n_seeds"] > 1:
                        metrics[f"test/{r.task}_{r.metric}_std"] = r["std"]
                mlflow.log_metrics(metrics)
        return parent.info.run_id


# ----------------------------------------------------------------------------------------- entry points


def write_report(
    suite: Suite,
    out_dir,
    *,
    plots: bool = True,
    mlflow_uri: str | None = None,
    artifact_root: Path | None = None,
    settings=None,
) -> dict:
    """Tables, plots, results.md and the MLflow run of a suite that has run; returns the tables and the
    written paths. settings: where the plots read road geometry (the lake's context_roads table)."""
    out = Path(out_dir)
    config = suite.config
    results, ratios, checks = results_table(suite), ratio_table(suite), target_checks(suite)
    reference = reference_check(results, in_domain_setting(config)) if config.source_city == "porto" else None
    routing = None
    written = []
    if plots:
        from transfertraj.model.evaluation_plots import draw_all

        routing, pngs = draw_all(suite, results, out, settings=settings)
        written += pngs
    suite.notes.append(f"wall time {time.perf_counter() - suite.started:.0f} s")
    results.to_csv(out / "results.csv", index=False)
    ratios.to_csv(out / "ratios.csv", index=False)
    checks.to_csv(out / "targets.csv", index=False)
    written += [out / "results.csv", out / "ratios.csv", out / "targets.csv"]
    if routing is not None:
        routing.to_csv(out / "routing.csv", index=False)
        written.append(out / "routing.csv")
    if reference is not None:
        reference.to_csv(out / "reference.csv", index=False)
        written.append(out / "reference.csv")
    (out / "results.md").write_text(markdown(suite, results, ratios, checks, routing, reference))
    written.insert(0, out / "results.md")
    run_id = None
    if mlflow_uri:
        run_id = log_mlflow(mlflow_uri, artifact_root or out / "mlruns", suite, results, written)
    return {
        "results": results,
        "ratios": ratios,
        "targets": checks,
        "routing": routing,
        "reference": reference,
        "files": written,
        "mlflow_run_id": run_id,
        "suite": suite,
    }


def evaluate_suite(
    config: SuiteConfig,
    data: TrajectoryData,
    out_dir,
    *,
    device: str = "auto",
    plots: bool = True,
    mlflow_uri: str | None = None,
    artifact_root: Path | None = None,
    settings=None,
) -> dict:
    """Run a suite on `data` and write its report (what `transfertraj evaluate` does)."""
    suite = run_suite(config, data, out_dir, device=device)
    res = write_report(
        suite, out_dir, plots=plots, mlflow_uri=mlflow_uri, artifact_root=artifact_root, settings=settings
    )
    suite.cleanup()  # a run that fails keeps its checkpoints under work/ to look at (the next run removes them)
    return res
