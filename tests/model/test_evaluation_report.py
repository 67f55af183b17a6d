"""The evaluation harness on GENERATED features (synthetic drives named after real cities, not real data)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tests.model.generated import generated_features
from transfertraj.core.geo import haversine_m
from transfertraj.model.baselines import tp_last_known
from transfertraj.model.evaluation_suite import (
    SUITES,
    TINY_MODEL,
    baseline_frames,
    frame_metrics,
    register,
    run_suite,
    task_rows,
)
from transfertraj.model.trajectory_data import load_features
from transfertraj.model.transfer_data import city_data, covered_categories, restrict_poi, split_meridian, subset


@pytest.fixture(scope="module")
def two_cities():
    """GENERATED: 'porto' with context, 'beijing' without, 'sanfrancisco' lacking POI categories 1 and 3
    (same taxonomy and dims)."""
    a = generated_features(50, seed=0, city="porto", min_points=10, max_points=24)
    b = generated_features(30, seed=1, city="beijing", min_points=10, max_points=24, context_missing=True)
    c = generated_features(30, seed=2, city="sanfrancisco", min_points=10, max_points=24)
    c["poi_missing"] = [[np.array([False, True, False, True, False])] * n for n in c["n_points"]]
    return load_features(pd.concat([a, b, c], ignore_index=True), data_version=7)


def test_subset_and_meridian_split(two_cities):
    porto = city_data(two_cities, "porto")
    assert len(porto) == 50 and set(porto.city) == {"porto"}
    west, east, meridian = split_meridian(porto)
    assert abs(len(west) - len(east)) <= 1
    assert (west.lonlat[west.offsets[:-1], 0] < meridian).all()
    assert (east.lonlat[east.offsets[:-1], 0] >= meridian).all()
    row = 3
    s = subset(porto, [row])
    a, b = porto.offsets[row], porto.offsets[row + 1]
    np.testing.assert_array_equal(s.mxy, porto.mxy[a:b])
    np.testing.assert_array_equal(s.offsets, [0, b - a])


def test_restrict_poi_hides_other_categories_and_recomputes_the_total(two_cities):
    porto = city_data(two_cities, "porto")
    assert covered_categories(porto).all()
    assert not covered_categories(city_data(two_cities, "beijing")).any()  # no context at all
    keep = np.array([True, False, True, False, True])  # categories 0 and 2, plus the total
    r = restrict_poi(porto, keep)
    assert r.poi_missing[:, [1, 3]].all() and (r.poi[:, [1, 3]] == 0).all()
    expected_total = np.log1p(np.expm1(porto.poi[:, 0]) + np.expm1(porto.poi[:, 2]))
    np.testing.assert_allclose(r.poi[:, -1], expected_total, rtol=1e-5)
    assert (r.poi[:, -1] <= porto.poi[:, -1] + 1e-6).all()
    np.testing.assert_array_equal(r.poi[:, 0], porto.poi[:, 0])


def test_baselines_in_the_harness_match_a_direct_computation(two_cities):
    porto = city_data(two_cities, "porto")
    config = SUITES["quick"]
    frames = baseline_frames(porto, "test", config, ("tp", "tr8", "od"))
    assert {
        ("LKP", "tp"),
        ("CV", "tp"),
        ("lin-interp (time)", "tr8"),
        ("OD-LR", "od"),
        ("OD-LR distance", "od"),
        ("OD-GB", "od"),
    } <= set(frames)
    rows = task_rows(porto, "test", "tp", config)
    assert (porto.n_points[rows] >= 10).all()
    last = porto.offsets[rows + 1] - 1
    pred = tp_last_known(porto, rows)
    # generated lon/lat come from pyproj; the harness maps metres back with its fitted inverse (< 1 m apart)
    from pyproj import Transformer

    ll = np.column_stack(
        Transformer.from_crs("EPSG:32629", "EPSG:4326", always_xy=True).transform(pred[:, 0], pred[:, 1])
    )
    direct = haversine_m(ll[:, 0], ll[:, 1], porto.lonlat[last, 0], porto.lonlat[last, 1])
    m = frame_metrics("tp", frames[("LKP", "tp")])
    assert m["rmse_m"] == pytest.approx(np.sqrt(np.mean(direct**2)), abs=1.0)
    assert m["n_trajectories"] == len(rows)
    # generated drives wiggle, so constant velocity beats nothing by construction; it must differ from LKP
    assert frame_metrics("tp", frames[("CV", "tp")])["rmse_m"] != pytest.approx(m["rmse_m"])


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
    res = run_suite(
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


def test_evaluate_subcommand_is_registered():
    import argparse

    from transfertraj.cli import build_parser

    args = build_parser().parse_args(
        ["evaluate", "--suite", "full", "--seeds", "0", "1", "--transfers", "west-east", "--no-mlflow"]
    )
    assert args.suite == "full" and args.seeds == [0, 1] and args.transfers == ["west-east"]
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    assert TINY_MODEL["d_model"] < 128


def test_routing_by_density_measures_whether_the_same_context_picks_the_same_experts():
    from transfertraj.model.evaluation_plots import routing_by_density

    rng = np.random.default_rng(0)
    n = 600
    poi = rng.uniform(0, 30, n)
    base = pd.DataFrame({"layer": 0, "poi": poi, "poi_missing": False, "road": poi * 10, "road_missing": False})
    dense = poi > np.quantile(poi, 2 / 3)
    same = base.assign(expert=np.where(dense, 3, 0))  # dense context -> expert 3, the rest -> expert 0
    table, _ = routing_by_density(same, same.copy(), n_experts=4)
    assert np.allclose(table["js"], 0.0)
    other = base.assign(expert=np.where(dense, 1, 2))  # the target city routes the same context elsewhere
    table, shares = routing_by_density(same, other, n_experts=4)
    assert np.allclose(table["js"], 1.0)
    np.testing.assert_allclose(shares[(0, "poi", "high")][0], [0, 0, 0, 1])
    assert set(table["bucket"]) == {"low", "mid", "high"}


def test_reference_check_flags_a_baseline_outside_the_tolerance():
    from transfertraj.model.evaluation_suite import REFERENCE_BASELINES, reference_check

    rows = [
        {"setting": "porto in-domain", "task": t, "method": m, "metric": k, "mean": v}
        for (t, m, k), v in REFERENCE_BASELINES.items()
    ]
    ok = reference_check(pd.DataFrame(rows), "porto in-domain")
    assert len(ok) == len(REFERENCE_BASELINES) and ok["within"].all()
    rows[0]["mean"] *= 1.5
    bad = reference_check(pd.DataFrame(rows), "porto in-domain")
    assert bad["within"].sum() == len(REFERENCE_BASELINES) - 1


def test_model_arg_is_typed_by_the_model_field_and_refuses_unknown_names():
    from transfertraj.model.evaluation_suite import parse_model_arg

    assert parse_model_arg("aux_loss_weight=0.1") == {"aux_loss_weight": 0.1}
    assert parse_model_arg("n_experts=8") == {"n_experts": 8}
    assert parse_model_arg("use_moe=false") == {"use_moe": False}
    for bad in ("aux_loss_weight", "no_such_field=1", "n_experts=eight", "use_moe=maybe", "poi_dim=3"):
        with pytest.raises(SystemExit, match="--model-arg"):
            parse_model_arg(bad)
