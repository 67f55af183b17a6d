"""`transfertraj score` end to end on a throwaway lake: GENERATED features of two delivery dates (Delta,
written with delta-rs), the REAL roads of central Porto (the bundled OSM extract, cut to a small box) and
an untrained tiny checkpoint. Only the chosen date is scored, and the road-path baseline joins TR."""

from __future__ import annotations

import json

import pyarrow as pa
import torch

from tests.model.generated import generated_features
from tests.transfertraj.registry_fixtures import BOX, REPO
from transfertraj.cli import main
from transfertraj.core.settings import Settings
from transfertraj.feature_store.tables import table_path
from transfertraj.features.taxonomy import N_POI, N_ROAD, TAXONOMY_VERSION


def write_lake(home):
    from deltalake import write_deltalake

    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.context_tables import roads_table
    from transfertraj.jobs.osm_context import cut_osm_extract, read_osm_xml

    settings = Settings.load(home=home)
    porto = load_city("porto", settings)
    extract = home / "porto_box.osm"
    cut_osm_extract(REPO / "data" / "porto" / "porto_central.osm.bz2", extract, BOX)
    city = porto.model_copy(update={"osm": porto.osm.model_copy(update={"path": extract})})
    roads = roads_table(read_osm_xml(extract, city.crs), city)
    write_deltalake(table_path(settings, "context_roads"), roads, partition_by=["city"])
    feats = generated_features(40, city="porto", poi_dim=N_POI, road_dim=N_ROAD, taxonomy_version=TAXONOMY_VERSION)
    feats["date"] = ["2024-03-04"] * 25 + ["2024-03-05"] * 15
    feats["source_versions"] = json.dumps({"silver_version": 0, "context_roads_version": 0})
    table = pa.Table.from_pandas(feats, preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index("start_ts"), "start_ts", table.column("start_ts").cast(pa.timestamp("us", "UTC"))
    )
    write_deltalake(table_path(settings, "features"), table, partition_by=["city", "date"])
    return settings


def untrained_checkpoint(path, seed: int = 0):
    from transfertraj.model.checkpoint import new_state, save_checkpoint
    from transfertraj.model.transfertraj import ModelArgs, TransferTraj

    torch.manual_seed(seed)
    model = TransferTraj(
        args=ModelArgs(
            d_model=16,
            n_layers=1,
            n_heads=2,
            n_experts=2,
            top_k=1,
            expert_hidden=16,
            ffn_hidden=32,
            mixer_heads=2,
            fourier_freqs=4,
            poi_dim=N_POI,
            road_dim=N_ROAD,
        )
    )
    if seed:  # the spatial head starts at zero (interpolation's answer): move it, as training would
        torch.nn.init.normal_(model.head_spatial.weight, std=0.5)
    data = {"data_version": "generated", "taxonomy_version": TAXONOMY_VERSION, "cities": ["porto"]}
    save_checkpoint(path, new_state(model, data, {"task": "none"}, model=model.state_dict()))
    return path


def test_score_a_checkpoint_on_one_delivery_date(tmp_path, capsys):
    write_lake(tmp_path)
    ckpt = untrained_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "score"
    argv = ["--home", str(tmp_path), "score", "--model", str(ckpt), "--city", "porto"]
    argv += [
        "--start",
        "2024-03-05",
        "--end",
        "2024-03-05",
        "--tasks",
        "tp",
        "tr8",
        "--n-boot",
        "100",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    doc = json.loads((out / "score.json").read_text())
    assert doc["n_trajectories"] == 15 and doc["delivery dates"] == "2024-03-05 .. 2024-03-05"
    assert doc["features version"] == 0 and doc["context_roads version"] == 0
    assert {r["against"] for r in doc["ratios"] if r["task"] == "tr8"} == {
        "lin-interp (time)",
        "lin-interp (index)",
        "road-path interpolation",
    }
    printed = capsys.readouterr().out
    assert "| tr8 | model | road-path interpolation | RMSE |" in printed and str(out / "score.md") in printed
    road = [r for r in doc["ratios"] if r["method"] == "road-path interpolation"]
    assert {r["against"] for r in road} == {"lin-interp (time)"} and {r["metric"] for r in road} == {"rmse", "mae"}


def test_score_says_what_is_missing(tmp_path, capsys):
    assert main(["--home", str(tmp_path), "score", "--model", str(tmp_path / "nope.pt"), "--city", "porto"]) == 1
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["--home", str(tmp_path), "score", "--model", "x.pt", "--city", "porto", "--start", "2024-01-01"]) == 2


def test_score_answers_a_task_with_its_own_checkpoint_as_served(tmp_path):
    """--task-checkpoint tr@porto=...: Porto's TR is scored with that checkpoint, TP with the default."""
    write_lake(tmp_path)
    ckpt, tr_own = untrained_checkpoint(tmp_path / "best.pt"), untrained_checkpoint(tmp_path / "tr.pt", seed=1)
    argv = ["--home", str(tmp_path), "score", "--model", str(ckpt), "--city", "porto", "--tasks", "tp", "tr8"]
    argv += ["--n-boot", "50"]

    def model_rmse(out, *extra) -> dict:
        assert main([*argv, "--out", str(tmp_path / out), *extra]) == 0
        doc = json.loads((tmp_path / out / "score.json").read_text())
        return doc, {m["task"]: m["rmse_m"] for m in doc["metrics"] if m["method"] == "model"}

    _, plain = model_rmse("plain")
    doc, routed = model_rmse("routed", "--task-checkpoint", f"tr@porto={tr_own}")
    assert doc["tr8 answered by"] == str(tr_own) and "tp answered by" not in doc
    assert routed["tp"] == plain["tp"] and routed["tr8"] != plain["tr8"]
    _, elsewhere = model_rmse("elsewhere", "--task-checkpoint", f"tr@lisbon={tr_own}")  # another city's only
    assert elsewhere == plain
