"""Training loop, checkpoints, resume, fine-tuning, prediction and the CLI subcommands (tiny models)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.model.generated import TINY_TRAIN, generated_features, tiny_args
from transfertraj.model import commands
from transfertraj.model.checkpoint import load_checkpoint, load_model, snapshot
from transfertraj.model.predict import evaluate, predict
from transfertraj.model.train import Runtime, TrainConfig, finetune, fit, pretrain, validation_loss
from transfertraj.model.trajectory_data import (
    Collator,
    TaxonomyMismatch,
    TrajectoryDataset,
    chronological_split,
    eligible,
    load_features,
)
from transfertraj.model.transfertraj import TransferTraj


@pytest.fixture(scope="module")
def data(features_df):
    return load_features(features_df, data_version=5)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, features_df):
    out = tmp_path_factory.mktemp("pretrain")
    return pretrain(features_df, 5, out, epochs=2, position="trie", **TINY_TRAIN)


def _tiny_model(seed=0, **over):
    torch.manual_seed(seed)
    return TransferTraj(args=tiny_args(**over))


def _cfg(**over):
    kw = dict(batch_size=8, progress=False, epochs=2)
    kw.update(over)
    return TrainConfig(**kw)


def test_checkpoint_rebuilds_the_model_from_the_file_alone(tmp_path, data):
    model = _tiny_model(position="absolute_sincos", use_road=False)
    fit(model, data, _cfg(epochs=1), tmp_path)
    rebuilt, state = load_model(tmp_path / "last.pt")
    assert rebuilt.args == model.args and rebuilt.args.position == "absolute_sincos"
    assert state["data"]["data_version"] == 5
    assert state["data"]["taxonomy_version"] == "generated-taxonomy-1"
    assert (state["data"]["poi_dim"], state["data"]["road_dim"]) == (5, 4)
    assert state["train_config"]["lr"] == 1e-3 and state["train_config"]["batch_size"] == 8
    ds = TrajectoryDataset(data)
    batch, _ = Collator(task="tp")([ds[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch)[0]["xy"], model(batch)[0]["xy"])


def test_snapshot_is_a_copy_not_references():
    model = _tiny_model()
    snap = snapshot(model)
    ref = model.state_dict()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    name = "head_spatial.weight"
    assert torch.equal(ref[name], model.state_dict()[name])  # state_dict() holds references
    assert not torch.equal(snap[name], model.state_dict()[name])


def test_best_checkpoint_holds_the_best_epochs_weights(tmp_path, data):
    model = _tiny_model()
    cfg = _cfg(epochs=3, lr=0.1, patience=10)  # a large lr makes validation loss go up after epoch 0
    fit(model, data, cfg, tmp_path)
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    vals = [h["val_loss"] for h in last["history"]]
    best_epoch = int(np.argmin(vals))
    assert best["epoch"] == best_epoch == last["best_epoch"]
    assert best_epoch < len(vals) - 1, vals  # otherwise this test would not tell a copy from a reference
    _, val_idx, _ = chronological_split(data)
    val_idx = eligible(data, val_idx, "pretrain", 120)
    rt = Runtime(device=torch.device("cpu"))
    best_model, _ = load_model(best)
    last_model, _ = load_model(last)
    assert validation_loss(best_model, data, val_idx, cfg, rt) == pytest.approx(vals[best_epoch], rel=1e-5)
    assert validation_loss(last_model, data, val_idx, cfg, rt) == pytest.approx(vals[-1], rel=1e-5)
    for k in best["model"]:
        torch.testing.assert_close(best["model"][k], last["best_model"][k])


def test_resume_continues_from_the_saved_epoch(tmp_path, data):
    straight = _tiny_model()
    fit(straight, data, _cfg(epochs=3), tmp_path / "straight")
    interrupted = _tiny_model()
    fit(interrupted, data, _cfg(epochs=1), tmp_path / "resumed")  # the run is killed after epoch 0
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert state["epoch"] == 0 and len(state["history"]) == 1
    resumed = _tiny_model(seed=123)  # a fresh process: other init, restored from last.pt
    fit(resumed, data, _cfg(epochs=3), tmp_path / "resumed")
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=k)


def test_finetune_few_shot_with_frozen_encoder(pretrained, features_df):
    out = finetune(
        pretrained,
        "tp",
        features_df,
        data_version=5,
        n_shot=10,
        freeze_encoder=True,
        epochs=1,
        **{"batch_size": 4, "progress": False},
    )
    parent, _ = load_model(pretrained)
    tuned, state = load_model(out)
    assert state["data"]["n_train"] == 10 and state["train_config"]["task"] == "tp"
    assert state["parent"]["path"] == str(pretrained)
    p_params, t_params = dict(parent.named_parameters()), dict(tuned.named_parameters())
    for name, p in p_params.items():
        if not name.startswith("head_"):
            assert torch.equal(p, t_params[name]), f"{name}: the encoder is frozen"
    # TP asks for positions only (model/masking.py): the spatial heads learn, the temporal one has no loss
    assert not torch.equal(p_params["head_spatial.weight"], t_params["head_spatial.weight"])
    assert not torch.equal(p_params["head_curve.weight"], t_params["head_curve.weight"])
    assert torch.equal(p_params["head_temporal.weight"], t_params["head_temporal.weight"])


def test_finetune_and_predict_refuse_another_taxonomy(pretrained):
    other = generated_features(12, taxonomy_version="generated-taxonomy-2")
    with pytest.raises(TaxonomyMismatch, match="taxonomy version"):
        finetune(pretrained, "tp", other, data_version=1, epochs=1, progress=False)
    with pytest.raises(TaxonomyMismatch, match="taxonomy version"):
        predict(pretrained, other, "tp")
    wider = generated_features(12, poi_dim=6)
    with pytest.raises(TaxonomyMismatch):
        predict(pretrained, wider, "tp")


def test_predict_tp_scores_destinations_in_metres_and_lonlat(pretrained, features_df):
    preds = predict(pretrained, features_df, "tp", split="test")
    data = load_features(features_df, 5)
    test_idx = eligible(data, chronological_split(data)[2], "tp", 120)
    scored = preds[preds["scored"]]
    assert len(scored) == len(test_idx) == scored["trip_id"].nunique()
    n_points = dict(zip(data.trip_id, data.n_points))
    assert all(p == n_points[t] - 1 for t, p in zip(scored["trip_id"], scored["point"]))  # the destination
    assert (preds.groupby("trip_id").size() == 5).all()  # 5 hidden points per trajectory
    # lon/lat = first point's metric position + predicted metres, mapped to WGS-84
    metric_err = np.hypot(preds["pred_x_m"] - preds["true_x_m"], preds["pred_y_m"] - preds["true_y_m"])
    np.testing.assert_allclose(preds["error_m"], metric_err, rtol=2e-3, atol=0.5)
    m = evaluate(pretrained, features_df, "tp", split="test")
    assert np.isfinite(m["rmse_m"]) and m["rmse_m"] >= m["mae_m"] > 0 and m["n"] == len(test_idx)


def test_predict_od_travel_time(pretrained, features_df):
    preds = predict(pretrained, features_df, "od")
    assert len(preds) == len(features_df) and preds["scored"].all()
    want = [(ts[-1] - ts[0]) / 60.0 for ts in features_df["ts"]]
    np.testing.assert_allclose(np.sort(preds["true_minutes"]), np.sort(want), rtol=1e-6)
    m = evaluate(pretrained, features_df, "od")
    assert set(m) >= {"rmse_min", "mae_min", "mape_pct"} and np.isfinite(m["rmse_min"])


def test_cli_subcommands(tmp_path, features_df, capsys):
    small = features_df.iloc[:30]
    pq.write_table(pa.Table.from_pandas(small, preserve_index=False), tmp_path / "features.parquet")
    parser = argparse.ArgumentParser(prog="transfertraj")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "pretrain",
            "--features",
            str(tmp_path / "features.parquet"),
            "--out",
            str(tmp_path / "pt"),
            "--epochs",
            "1",
            "--no-progress",
            "--no-moe",
        ]
    )
    assert args.func(args, None) == 0
    state = load_checkpoint(tmp_path / "pt" / "best.pt")
    assert state["data"]["data_version"] == f"parquet:{tmp_path / 'features.parquet'}"
    assert state["model_args"]["use_moe"] is False
    args = parser.parse_args(
        [
            "finetune",
            "--from",
            str(tmp_path / "pt" / "best.pt"),
            "--task",
            "trmix",  # a mixture is scored on each task it draws from
            "--features",
            str(tmp_path / "features.parquet"),
            "--out",
            str(tmp_path / "ft"),
            "--epochs",
            "1",
            "--n-shot",
            "5",
            "--freeze-encoder",
            "--no-progress",
        ]
    )
    capsys.readouterr()
    assert args.func(args, None) == 0
    scored = [json.loads(line)["task"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert scored == ["tr4", "tr8", "tr16"]
    state = load_checkpoint(tmp_path / "ft" / "best.pt")
    assert state["data"]["n_train"] == 5 and state["train_config"]["freeze_encoder"] is True


def test_finetune_refuses_features_built_with_another_phi(tmp_path, features_df, caplog, monkeypatch):
    from dataclasses import replace

    from transfertraj.model.checkpoint import ContextMismatch, check_compatible

    city = "generated_city"
    at = {"phi_m": 100.0, "crs": "EPSG:32629"}
    base = replace(load_features(features_df, 5), city_facts={city: at})
    ckpt = pretrain(base, 5, tmp_path / "pt", epochs=1, **TINY_TRAIN)
    state = load_checkpoint(ckpt)
    assert state["data"]["phi_m"] == 100.0 and state["data"]["crs"] == {city: "EPSG:32629"}
    assert state["data"]["coordinates"] == base.describe()["coordinates"]
    other = replace(base, city_facts={city: {**at, "phi_m": 200.0}})
    with pytest.raises(ContextMismatch, match="phi = 100.0 m.*phi = 200.0 m.*phi_m: 100.0"):
        finetune(ckpt, "tp", other, out_dir=tmp_path / "ft", epochs=1, progress=False)
    with pytest.raises(TaxonomyMismatch):  # serving catches TaxonomyMismatch: a phi mismatch is one too
        predict(ckpt, other, "tp")
    # a checkpoint from before phi was recorded keeps loading: unknown, a warning, no refusal
    del state["data"]["phi_m"], state["data"]["coordinates"]
    monkeypatch.setattr("transfertraj.model.checkpoint._warned", set())  # each warning once per process
    with caplog.at_level("WARNING", logger="transfertraj.model"):
        check_compatible(state, other)
    assert "no context radius phi" in caplog.text


def test_city_facts_come_from_the_city_config(features_df):
    from transfertraj.core.settings import Settings
    from transfertraj.model.trajectory_data import with_city_facts

    df = features_df.assign(city="porto")
    data = with_city_facts(load_features(df, 1), Settings.load())
    assert data.city_facts == {"porto": {"phi_m": 100.0, "crs": "EPSG:32629"}}
    assert data.describe()["phi_m"] == 100.0
    assert with_city_facts(load_features(features_df, 1), Settings.load()).describe()["phi_m"] is None


def test_epoch_indices_give_each_city_an_equal_share_and_a_fresh_draw():
    from types import SimpleNamespace

    from transfertraj.model.train import epoch_indices

    data = SimpleNamespace(city=np.array(["sf"] * 1000 + ["porto"] * 100 + ["beijing"] * 10))
    indices = np.arange(len(data.city))
    pick = epoch_indices(data, indices, 150, [0, 0])
    counts = {c: int((data.city[pick] == c).sum()) for c in ("sf", "porto", "beijing")}
    assert counts == {"sf": 50, "porto": 50, "beijing": 10}  # beijing gives all it has, not refilled
    assert len(set(pick)) == len(pick) and np.all(np.diff(pick) > 0)
    assert not np.array_equal(pick, epoch_indices(data, indices, 150, [0, 1]))  # another epoch, another draw
    assert np.array_equal(pick, epoch_indices(data, indices, 150, [0, 0]))  # reproducible (resume)
    assert np.array_equal(epoch_indices(data, indices, None, [0, 0]), indices)


def test_cosine_schedule_runs_from_lr_to_a_twentieth():
    from transfertraj.model.train import cosine_lr

    cfg = TrainConfig(lr=1e-3, lr_schedule="cosine")
    assert cosine_lr(cfg, 0, 100) == pytest.approx(1e-3)
    assert cosine_lr(cfg, 100, 100) == pytest.approx(5e-5)
    assert cosine_lr(cfg, 50, 100) == pytest.approx((1e-3 + 5e-5) / 2)
    assert cosine_lr(TrainConfig(lr=1e-3), 50, 100) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_time_budget_stops_after_the_epoch_that_spends_it(tmp_path, data):
    best = fit(_tiny_model(), data, _cfg(epochs=5, time_budget_s=1e-9, epoch_size=16, val_size=8), tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")
    assert len(state["history"]) == 1 and best.exists()


def test_pretrain_from_scratch_under_the_multitask_mask(tmp_path, features_df):
    best = pretrain(features_df, 5, tmp_path, epochs=1, task="multitask", **TINY_TRAIN)
    model, state = load_model(best)
    assert state["train_config"]["task"] == "multitask" and state["parent"] is None
    assert model.args.curve_input  # a model built now sees the curve offset (model/position_proxy.py)
