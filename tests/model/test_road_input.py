"""The model's road input (ModelArgs.road_input): off by default, zero at init, read where TR is answered."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tests.model.generated import TINY_TRAIN, generated_features, tiny_args
from tests.model.test_road_offsets import toy_graph
from tests.model.test_road_paths import l_trip
from transfertraj.model.checkpoint import load_checkpoint, load_model
from transfertraj.model.predict import predict
from transfertraj.model.road_offsets import road_offsets
from transfertraj.model.train import finetune, pretrain
from transfertraj.model.trajectory_data import Collator, TrajectoryDataset, load_features
from transfertraj.model.transfertraj import TransferTraj, with_road_input


def tiny_model(**over) -> TransferTraj:
    torch.manual_seed(0)
    model = TransferTraj(args=tiny_args(**over)).eval()
    torch.nn.init.normal_(model.head_spatial.weight, std=0.5)  # as after training
    return model


def test_checkpoints_without_it_load_unchanged():
    path = Path(__file__).resolve().parents[2] / "weights" / "base" / "transfertraj-base.pt"
    model, state = load_model(path)
    assert "road_input" not in state["model_args"] and not model.args.road_input
    assert not hasattr(model, "head_road") and not hasattr(model.embed, "road_path")


def test_switching_it_on_keeps_the_answers_until_the_road_head_moves():
    data = load_features(generated_features(6, min_points=12, max_points=20), 0)
    data = replace(data, road_offsets={8: np.random.default_rng(0).normal(0, 80, (len(data.xy), 2)).astype(np.float32)})
    ds = TrajectoryDataset(data)
    batch, _ = Collator(task="tr8")([ds[i] for i in range(6)])
    assert batch["road_offset"].abs().sum() > 0
    base = tiny_model()
    road = with_road_input(base).eval()
    with torch.no_grad():
        before, after = base(batch)[0]["xy"], road(batch)[0]["xy"]
        torch.testing.assert_close(after, before)
        road.head_road.bias.fill_(1.0)  # trust the road offset fully, everywhere
        moved = road(batch)[0]["xy"] - before
    hidden = batch["mask_s"].unsqueeze(-1)
    torch.testing.assert_close(moved, batch["road_offset"] * hidden, atol=1e-3, rtol=0)  # at hidden points only
    assert set(road.encoder_parameters()).isdisjoint(road.head_road.parameters())


def test_predict_reads_the_map_and_without_one_says_so(caplog):
    data = l_trip()  # GENERATED, on the toy L street
    model = with_road_input(tiny_model())
    with torch.no_grad():
        model.head_road.bias.fill_(1.0)
    with caplog.at_level("WARNING", logger="transfertraj.model"):
        blind = predict(model, data, "tr8", device="cpu")
    assert "toy has no road graph" in caplog.text
    seeing = predict(model, data, "tr8", device="cpu", road_graphs={"toy": toy_graph()})
    off = road_offsets(data, [0], mu=8, graphs={"toy": toy_graph()})[seeing["point"].to_numpy()]
    step = seeing[["pred_x_m", "pred_y_m"]].to_numpy() - blind[["pred_x_m", "pred_y_m"]].to_numpy()
    np.testing.assert_allclose(step, off, atol=1e-3)
    assert np.abs(off).max() > 50


def test_finetune_switches_it_on_and_trains_on_rows_with_offsets(tmp_path, features_df, caplog):
    base = pretrain(features_df, 5, tmp_path / "base", epochs=1, **TINY_TRAIN)
    with caplog.at_level("INFO", logger="transfertraj.model"):
        out = finetune(
            base,
            "tr8",
            features_df,
            data_version=5,
            out_dir=tmp_path / "road",
            epochs=1,
            progress=False,
            road_input=True,
            road_graphs={},
            road_rows=6,
            val_size=4,
            road_cache=tmp_path / "cache",
        )
    assert load_checkpoint(out)["model_args"]["road_input"]
    assert "road input: 6 train, 4 validation trajectories with road offsets" in caplog.text
    assert "has no road graph" in caplog.text
    model, _ = load_model(out)
    assert model.args.road_input and predict(model, features_df, "tr8", data_version=5, device="cpu").shape[0] > 0


def test_scoring_hands_the_model_the_baselines_road_graph(tmp_path):
    from transfertraj.model.checkpoint import new_state, save_checkpoint
    from transfertraj.model.scoring import score_checkpoint

    data = load_features(generated_features(6, min_points=12, max_points=20, city="toy"), 0)
    model = with_road_input(tiny_model())
    path = tmp_path / "best.pt"
    save_checkpoint(path, new_state(model, data.describe(), {"task": "tr8"}, model=model.state_dict()))
    score = score_checkpoint(path, data, tasks=("tr8",), road_graphs={"toy": toy_graph()}, n_boot=50, device="cpu")
    assert "tr8: the model reads road offsets (road_input) from the road graph of the road-path baseline" in score.notes
    assert set(score.ratios["against"]) >= {"road-path interpolation", "lin-interp (time)"}
