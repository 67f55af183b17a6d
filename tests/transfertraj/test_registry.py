"""Registry: versions come from log_model, every new version is the challenger, the gate refuses a
worse model and promotes one that is no worse (re-scored on the same validation data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.transfertraj.registry_fixtures import (
    damaged_copy,
    features,
    porto_context,
    register,
    settings_for,
    train,
    write_features,
)
from transfertraj import registry


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


def test_register_command_gates_a_checkpoint_and_links_its_data(store, good, monkeypatch, capsys, tmp_path):
    """A checkpoint trained outside the DAGs goes through log_and_register and the gate; its run names the
    features table and context tables, with their Delta versions, as MLflow dataset inputs. Whatever the
    file is called (the committed weights are transfertraj-base.pt), the registered model holds it as its
    checkpoint, and nothing is written beside it."""
    settings, feats, home = store
    named = tmp_path / "weights" / "transfertraj-base.pt"
    named.parent.mkdir()
    named.write_bytes(Path(good).read_bytes())
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, ctx = porto_context(settings)
    read = []

    def features_at(settings_, cities, version):  # the generated rows, as if read at Delta version 7
        read.append((cities, version))
        return feats, 7, {"porto": ctx}

    monkeypatch.setattr(registry, "training_data", features_at)
    assert _cli(home, "register", "--checkpoint", named, "--name", registry.BASE_MODEL, "--city", "porto",
                "--features-version", 7) == 0  # fmt: skip
    assert read == [(["porto"], 7)]
    out = capsys.readouterr().out
    assert "transfertraj-base version 4" in out and "PROMOTED" in out
    client = registry.configure(settings)
    mv = client.get_model_version(registry.BASE_MODEL, "4")
    assert mv.tags["features_version"] == "7" and mv.tags["gate.decision"] == "promoted"
    assert _aliases(settings)[4] == ["champion"]
    run = client.get_run(mv.run_id)
    assert run.data.tags["registered_from"] == str(named.resolve())
    assert registry.checkpoint_of(f"models:/{registry.BASE_MODEL}/4", settings).read_bytes() == named.read_bytes()
    assert [p.name for p in named.parent.iterdir()] == ["transfertraj-base.pt"]
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


# ------------------------------------------------------------------ the gate on a real, growing lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A data root whose features table has two versions: 60 generated Porto trips (v0), then a later
    delivery of 30 more (v1), which moves the chronological validation split."""
    home = tmp_path_factory.mktemp("gate_home")
    settings = settings_for(home)
    _, ctx = porto_context(settings)
    rows = features(90)  # the first 60 rows are features(60): the generator draws trip after trip
    assert write_features(settings, rows.iloc[:60], ctx) == 0
    assert write_features(settings, rows.iloc[60:], ctx) == 1
    return settings, ctx, home


def _register_at(settings, ctx, checkpoint, version, name=registry.BASE_MODEL, zero_shot_base=None):
    from transfertraj.tasks.training_data import read_city_data

    porto, _ = porto_context(settings)
    data, read, _ = read_city_data(settings, ["porto"], version)
    assert read == version
    return registry.log_and_register(
        settings=settings,
        experiment="tests",
        model_name=name,
        checkpoint=checkpoint,
        cities=[porto],
        data_versions={"features_version": read},
        context_versions={"porto": ctx},
        features=data,
        features_version=read,
        run_name=f"test at features v{read}",
        zero_shot_base=zero_shot_base,
    )


def test_champion_and_challenger_are_scored_on_one_pinned_features_version(lake):
    """The champion was registered on features v0; a challenger trained after the v1 delivery is gated
    on v1: the decision records v1, and the champion's gate numbers are its scores on v1, not its own
    (v0) validation numbers."""
    from transfertraj.tasks.training_data import read_city_data

    settings, ctx, home = lake
    client = registry.configure(settings)
    first = _register_at(settings, ctx, train(home / "ckpt" / "a", features(60)), 0)
    assert first.decision.promoted
    second = _register_at(settings, ctx, train(home / "ckpt" / "b", features(60), seed=1), 1)
    for tags in (client.get_run(second.run_id).data.tags, client.get_model_version(registry.BASE_MODEL, "2").tags):
        assert tags["gate.validation_version"] == "1" and tags["gate.validation_table"] == "features"
        assert tags["gate.validation_cities"] == "porto" and "chronological" in tags["gate.validation_split"]
        assert tags["gate.against"] == "champion v1"
    assert client.get_model_version(registry.BASE_MODEL, "1").tags["gate.validation_version"] == "0"

    v1 = read_city_data(settings, ["porto"], 1)[0]
    champion_on_v1 = registry.validation_metrics(registry.load_torch(f"models:/{registry.BASE_MODEL}/1"), v1, 1)
    assert second.decision.champion == pytest.approx(champion_on_v1, nan_ok=True)
    assert second.decision.champion["tp_mae_m"] != pytest.approx(first.metrics["tp_mae_m"])  # v0's numbers differ
    assert second.metrics == pytest.approx(  # the challenger, on the same rows
        registry.validation_metrics(registry.load_torch(f"models:/{registry.BASE_MODEL}/2"), v1, 1), nan_ok=True
    )
    run = client.get_run(second.run_id)
    assert run.data.metrics["gate/champion_tp_mae_m"] == pytest.approx(champion_on_v1["tp_mae_m"])
    for task in ("tp", "tr8", "od"):
        assert f"{task} x" in second.decision.reason  # every task's ratio is named


def test_a_first_city_version_worse_than_zero_shot_leaves_the_base_weights_champion(lake):
    """A city's first fine-tune that loses to the base model it started from on the city's validation
    set: the base weights are registered as a version of the city model (source=base-zero-shot) and hold
    `champion`; the fine-tune keeps only `challenger`, with the reason."""
    settings, ctx, home = lake
    client = registry.configure(settings)
    base = client.get_model_version_by_alias(registry.BASE_MODEL, "champion")
    base_uri = f"models:/{registry.BASE_MODEL}/{base.version}"
    base_ckpt = registry.checkpoint_of(base_uri, settings)
    city = "transfertraj-porto"
    worse = _register_at(settings, ctx, damaged_copy(base_ckpt, home / "ckpt" / "worse"), 1, city, base_uri)

    assert not worse.decision.promoted and worse.champion == "2"
    assert worse.decision.against == f"zero-shot {registry.BASE_MODEL}/{base.version}"
    zero = client.get_model_version(city, "2")
    assert (
        zero.tags["source"] == "base-zero-shot" and zero.tags["base_model"] == f"{registry.BASE_MODEL}/{base.version}"
    )
    assert zero.tags["gate.validation_version"] == "1"
    assert _aliases_of(settings, city) == {1: ["challenger"], 2: ["champion"]}
    rejected = client.get_model_version(city, "1")
    assert rejected.tags["gate.decision"] == "rejected" and rejected.tags["gate.champion_instead"] == "2"
    assert "worse than the zero-shot" in rejected.tags["gate.reason"]
    # the champion is the base model's weights, scored as zero-shot on the city's validation set
    assert registry.checkpoint_of(f"models:/{city}@champion", settings).read_bytes() == base_ckpt.read_bytes()
    zero_metrics = client.get_run(zero.run_id).data.metrics
    assert zero_metrics["val/tp_mae_m"] == pytest.approx(worse.decision.champion["tp_mae_m"])

    # a fine-tune no worse than the base model on any task becomes the city's first champion itself
    good = _register_at(settings, ctx, base_ckpt, 1, "transfertraj-portob", base_uri)
    assert good.decision.promoted and good.champion == "1"
    assert good.decision.against == f"zero-shot {registry.BASE_MODEL}/{base.version}"
    assert [v.tags.get("source") for v in client.search_model_versions("name='transfertraj-portob'")] == [None]


def _aliases_of(settings, name) -> dict[int, list[str]]:
    return {r["version"]: r["aliases"] for r in registry.list_models(settings) if r["name"] == name}


def test_each_gate_task_is_routed_as_the_served_model_routes_it():
    from transfertraj.serving import split_task_key

    own = {"tr": "TR", "tr@sanfrancisco": "TR-SF", "od@porto": "OD-PORTO"}
    routed = registry.routed_by_task(own, "DEFAULT")
    assert routed["tp"] == "DEFAULT"
    assert routed["tr8"] == registry.ByCity("TR", {"sanfrancisco": "TR-SF"})
    assert routed["od"] == registry.ByCity("DEFAULT", {"porto": "OD-PORTO"})
    assert split_task_key("tr@beijing_gcj02") == ("tr", "beijing_gcj02")
    for bad in ("xx", "tr@", "odtte@porto"):
        with pytest.raises(LookupError, match="per-task checkpoint key"):
            split_task_key(bad)
