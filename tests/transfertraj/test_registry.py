"""Registry: versions come from log_model, every new version is the challenger, the gate refuses a
worse model and promotes one that is no worse (re-scored on the same validation data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.transfertraj.registry_fixtures import (
    damaged_copy,
    features,
    porto_context,
    register,
    settings_for,
    train,
)
from transfertraj import registry


def test_compare_with_tolerance():
    champ = {"tp_mae_m": 100.0, "tr8_mae_m": 50.0, "od_mae_min": 2.0}
    assert registry.compare(champ, None, 0.02).promoted
    assert registry.compare({**champ, "tp_mae_m": 101.9}, champ, 0.02).promoted
    worse = registry.compare({**champ, "tp_mae_m": 102.1}, champ, 0.02)
    assert not worse.promoted and "tp_mae_m" in worse.reason
    assert not registry.compare({**champ, "od_mae_min": math.nan}, champ, 0.02).promoted
    assert registry.compare({**champ, "od_mae_min": math.nan}, {**champ, "od_mae_min": math.nan}, 0.0).promoted


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    home = tmp_path_factory.mktemp("registry_home")
    return settings_for(home), features(60), home


@pytest.fixture(scope="module")
def good(store):
    _, feats, home = store
    return train(home / "ckpt" / "good", feats)


def test_alias_flow_and_gate(store, good):
    settings, feats, home = store
    client = registry.configure(settings)

    first = register(settings, good, feats)
    assert first.version == "1" and first.decision.promoted
    mv = client.get_model_version(registry.BASE_MODEL, first.version)
    assert mv.run_id == first.run_id  # the version registered is the one this run logged
    assert str(client.get_model_version_by_alias(registry.BASE_MODEL, "champion").version) == "1"

    worse = register(settings, damaged_copy(good, home / "ckpt" / "bad"), feats)
    assert worse.version == "2"
    assert not worse.decision.promoted, worse.decision.lines()
    assert str(client.get_model_version_by_alias(registry.BASE_MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(registry.BASE_MODEL, "challenger").version) == "2"
    run = client.get_run(worse.run_id)
    assert run.data.tags["gate.decision"] == "rejected"
    assert "gate/champion_tp_mae_m" in run.data.metrics and "gate/challenger_tp_mae_m" in run.data.metrics
    assert client.get_model_version(registry.BASE_MODEL, "2").tags["gate.decision"] == "rejected"

    same = register(settings, good, feats)  # the champion's own weights: no worse, so promoted
    assert same.version == "3" and same.decision.promoted
    assert str(client.get_model_version_by_alias(registry.BASE_MODEL, "champion").version) == "3"

    listed = {r["version"]: r["aliases"] for r in registry.list_models(settings)}
    assert listed == {1: [], 2: [], 3: ["champion"]}  # challenger leaves the version that won
    assert client.get_model_version(registry.BASE_MODEL, "3").tags["champion.previous"] == "1"


def test_run_records_lineage_params_and_plot(store):
    settings, _, _ = store
    client = registry.configure(settings)
    mv = client.get_model_version_by_alias(registry.BASE_MODEL, "champion")
    run = client.get_run(mv.run_id)
    assert run.data.tags["data.features_version"] == "generated"
    assert run.data.tags["mlflow.source.git.commit"]
    assert run.data.params["model.d_model"] == "16"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [0]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/loss_curves.png"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"features@generated", "context_pois@0", "context_grid@0"}
    # the name carries the version: MLflow's Delta source leaves a version 0 out of its JSON
    assert json.loads(inputs["context_grid@0"].dataset.source)["path"] == str(settings.lake / "context_grid")
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.artifact_location.startswith(settings.home.as_uri())
    # "generated" is not a Delta version number; the context tables the model carries are
    assert registry.protected_versions(settings) == {"context_pois": 0, "context_grid": 0}
    import mlflow.models

    flavor = mlflow.models.get_model_info(f"models:/{registry.BASE_MODEL}/{mv.version}").flavors["python_function"]
    assert flavor.get("model_code_path", "").endswith("pyfunc_model.py")  # models from code: nothing pickled


def test_models_list_command(store, capsys, monkeypatch):
    from transfertraj.cli import main

    settings, _, home = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # --home decides the store
    assert main(["--home", str(home), "models", "list"]) == 0
    out = capsys.readouterr().out
    assert "transfertraj-base" in out and "champion" in out and "challenger" not in out


def _cli(home, *argv):
    from transfertraj.cli import main

    return main(["--home", str(home), "models", *map(str, argv)])


def _aliases(settings) -> dict[int, list[str]]:
    return {r["version"]: r["aliases"] for r in registry.list_models(settings)}


def test_register_command_gates_a_checkpoint_and_links_its_data(store, good, monkeypatch, capsys):
    """A best.pt trained outside the DAGs goes through log_and_register and the gate; its run names the
    features table and context tables, with their Delta versions, as MLflow dataset inputs."""
    settings, feats, home = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, ctx = porto_context(settings)
    read = []

    def features_at(settings_, cities, version):  # the generated rows, as if read at Delta version 7
        read.append((cities, version))
        return feats, 7, {"porto": ctx}

    monkeypatch.setattr(registry, "training_data", features_at)
    assert _cli(home, "register", "--checkpoint", good, "--name", registry.BASE_MODEL, "--city", "porto",
                "--features-version", 7) == 0  # fmt: skip
    assert read == [(["porto"], 7)]
    out = capsys.readouterr().out
    assert "transfertraj-base version 4" in out and "PROMOTED" in out
    client = registry.configure(settings)
    mv = client.get_model_version(registry.BASE_MODEL, "4")
    assert mv.tags["features_version"] == "7" and mv.tags["gate.decision"] == "promoted"
    assert _aliases(settings)[4] == ["champion"]
    run = client.get_run(mv.run_id)
    assert run.data.tags["registered_from"] == str(good.resolve())
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"features@7", "context_pois@0", "context_grid@0"}
    source = json.loads(inputs["features@7"].dataset.source)
    assert source["path"] == str(settings.lake / "features") and source["delta_table_version"] == 7
    assert {t.key: t.value for t in inputs["features@7"].tags}["mlflow.data.context"] == "training"


def test_register_of_a_missing_file_says_what_to_pass(store, tmp_path, monkeypatch, capsys):
    _, _, home = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    missing = tmp_path / "nowhere" / "best.pt"
    assert _cli(home, "register", "--checkpoint", missing, "--name", registry.BASE_MODEL) == 1
    err = capsys.readouterr().err
    assert f"no checkpoint at {missing}" in err and "transfertraj pretrain --out" in err


def test_register_without_a_features_table_says_what_to_build(good, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _cli(tmp_path, "register", "--checkpoint", good, "--name", "transfertraj-porto") == 1
    err = capsys.readouterr().err
    assert "no features table at" in err and "featurize" in err


def test_promote_then_rollback_restores_the_champion(store, monkeypatch, capsys):
    settings, _, home = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = registry.configure(settings)
    before = str(client.get_model_version_by_alias(registry.BASE_MODEL, "champion").version)
    client.set_registered_model_alias(registry.BASE_MODEL, "challenger", "2")  # a version awaiting a decision

    assert _cli(home, "promote", registry.BASE_MODEL, 2, "--reason", "incident 42") == 0
    promoted = client.get_model_version(registry.BASE_MODEL, "2")
    assert _aliases(settings)[2] == ["champion"]  # challenger never stays on the champion
    assert promoted.tags["champion.previous"] == before and promoted.tags["champion.reason"] == "incident 42"
    assert promoted.tags["champion.by"]

    assert _cli(home, "rollback", registry.BASE_MODEL) == 0
    assert str(client.get_model_version_by_alias(registry.BASE_MODEL, "champion").version) == before
    assert f"champion is version {before} again (was 2)" in capsys.readouterr().out
    assert client.get_model_version(registry.BASE_MODEL, before).tags["champion.reason"] == "rolled back by hand"
    assert all("challenger" not in a or "champion" not in a for a in _aliases(settings).values())


def test_promote_and_rollback_refusals_say_what_to_run(store, tmp_path, monkeypatch, capsys):
    settings, _, home = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _cli(home, "promote", registry.BASE_MODEL, 99) == 1
    assert "no version 99" in capsys.readouterr().err
    fresh = tmp_path / "fresh"  # a store with no champion at all
    assert _cli(fresh, "rollback", registry.BASE_MODEL) == 1
    assert "no champion to roll back" in capsys.readouterr().err


def test_the_model_carries_its_context_and_no_spark(store):
    """The logged model holds the checkpoint, serving.json and Porto's context NPZ; its pinned pip
    requirements name neither pyspark nor delta-spark."""
    import json

    import mlflow.artifacts

    settings, _, _ = store
    registry.configure(settings)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{registry.BASE_MODEL}@champion"))
    names = {p.name for p in folder.rglob("*") if p.is_file()}
    assert {"best.pt", "serving.json", "context_porto.npz"} <= names
    spec = json.loads(next(folder.rglob("serving.json")).read_text())
    assert spec["cities"]["porto"]["context_versions"] == {"context_pois": 0, "context_grid": 0}
    assert "data_root" not in spec
    reqs = (folder / "requirements.txt").read_text()
    assert "pyspark" not in reqs and "delta-spark" not in reqs and "torch==" in reqs
    npz = next(folder.rglob("context_porto.npz"))
    assert npz.stat().st_size < 2_000_000, npz.stat().st_size  # central Porto's lattice, compressed


def test_serving_artifacts_of_a_city_without_osm(tmp_path):
    """No context to export: the model still carries its city config (the folder is made for it)."""
    import json

    from transfertraj.core.city_config import load_city
    from transfertraj.core.settings import Settings
    from transfertraj.registry import serving_artifacts

    settings = Settings.load(home=tmp_path)
    out = serving_artifacts([load_city("beijing", settings)], settings, {}, tmp_path / "fresh" / "serving")
    assert list(out) == ["serving"]
    spec = json.loads(open(out["serving"]).read())
    assert spec["default_city"] == "beijing" and spec["cities"]["beijing"]["context_artifact"] is None
