"""The evaluation suite end to end on GENERATED features (synthetic drives named after real cities, not
real data), and the report's reference check."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from transfertraj.model.evaluation_protocol import REFERENCE_BASELINES, SUITES
from transfertraj.model.evaluation_report import evaluate_suite, reference_check


def test_harness_runs_end_to_end_with_finite_metrics(two_cities, tmp_path):
    config = replace(
        SUITES["quick"],
        tasks=("tp", "tr8", "od"),
        transfer_tasks=("tr8",),
        ablations=("wo-TRIE",),
        transfers=("west-east", "porto-sanfrancisco-shared"),
        seeds=(0, 1),
        batch_size=16,
        few_shot_n=10,
        n_boot=200,
        plot_cases=2,
    )
    res = evaluate_suite(
        config,
        two_cities,
        tmp_path / "out",
        mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_root=tmp_path / "artifacts",
    )
    results = res["results"]
    assert np.isfinite(results["mean"]).all()
    methods = set(results.loc[results["setting"] == "porto in-domain", "method"])
    assert {"full", "wo-pt", "wo-ft", "wo-TRIE", "LKP", "CV", "lin-interp (time)", "OD-LR", "OD-GB"} <= methods
    we = results[results["setting"] == "west-east"]
    assert {"zero-shot", "few-shot", "in-domain", "zero-shot wo-TRIE", "few-shot wo-TRIE"} <= set(we["method"])
    assert (we.loc[we["method"] == "few-shot", "n_shot"] == 10).all()
    full = results[(results["method"] == "full") & (results["metric"] == "rmse_m")]
    assert (full["n_seeds"] == 2).all()
    sf = results[results["setting"] == "porto-sanfrancisco-shared"]
    assert {"zero-shot", "few-shot", "in-domain", "lin-interp (time)"} <= set(sf["method"])
    assert any("restricted to 2 of 4 categories" in n for n in res["suite"].notes)
    assert len(res["targets"]) and res["targets"]["ratio"].map(np.isfinite).all()
    assert (
        (res["ratios"]["ci_low"] <= res["ratios"]["ratio"]) & (res["ratios"]["ratio"] <= res["ratios"]["ci_high"])
    ).all()
    out = tmp_path / "out"
    for name in ("results.md", "results.csv", "ratios.csv", "targets.csv", "eval_tr_vs_mu.png", "eval_cases_tp.png"):
        assert (out / name).exists(), name
    assert len([p for p in out.iterdir() if p.name.startswith("eval_routing_")]) == 2
    assert not (out / "work").exists()
    assert "| porto in-domain | full |" in (out / "results.md").read_text()
    assert res["mlflow_run_id"] and (tmp_path / "artifacts").exists()


def test_reference_check_flags_a_baseline_outside_the_tolerance():
    rows = [
        {"setting": "porto in-domain", "task": t, "method": m, "metric": k, "mean": v}
        for (t, m, k), v in REFERENCE_BASELINES.items()
    ]
    ok = reference_check(pd.DataFrame(rows), "porto in-domain")
    assert len(ok) == len(REFERENCE_BASELINES) and ok["within"].all()
    rows[0]["mean"] *= 1.5
    bad = reference_check(pd.DataFrame(rows), "porto in-domain")
    assert bad["within"].sum() == len(REFERENCE_BASELINES) - 1
