"""What dags/pretrain.py calls while parsed (the source cities) and where pretraining starts."""

import pytest

from transfertraj.core.settings import BASE_WEIGHTS
from transfertraj.tasks.pretrain import initial_weights, pretrain_cities


def test_pretrain_cities_from_the_environment(monkeypatch):
    monkeypatch.delenv("TRANSFERTRAJ_PRETRAIN_CITIES", raising=False)
    assert pretrain_cities() == ["porto"]
    monkeypatch.setenv("TRANSFERTRAJ_PRETRAIN_CITIES", " porto, sf ,,")
    assert pretrain_cities() == ["porto", "sf"]


def test_initial_weights(tmp_path):
    assert initial_weights(None) is None and initial_weights("scratch") is None
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"x")
    assert initial_weights(str(ckpt)) == ckpt
    with pytest.raises(FileNotFoundError, match="init=scratch"):
        initial_weights(str(tmp_path / "missing.pt"))


def test_the_committed_base_weights_are_in_the_repository():
    assert initial_weights("base-weights") == BASE_WEIGHTS
    assert (BASE_WEIGHTS.parent / "README.md").is_file()  # what made them: command, data versions, metrics


def test_the_committed_per_task_fine_tunes_serve_in_place_of_the_base():
    from transfertraj.model.checkpoint import load_model
    from transfertraj.serving import split_task_key
    from transfertraj.tasks.pretrain import committed_task_weights

    found = committed_task_weights()
    assert {"tp", "tr", "od"} <= set(found)
    assert all(split_task_key(key) for key in found)  # tasks/<city>/ files: <task>@<city>
    base, _ = load_model(BASE_WEIGHTS)
    for task, path in found.items():
        model, state = load_model(path)
        # same inputs as the base (the fine-tunes may add a learned input, e.g. the road offset for TR)
        assert (model.args.poi_dim, model.args.road_dim, model.args.d_model) == (
            base.args.poi_dim,
            base.args.road_dim,
            base.args.d_model,
        ), task
        assert state["train_config"]["task"].startswith(split_task_key(task)[0]), (task, state["train_config"]["task"])
        if (city := split_task_key(task)[1]) is not None:  # one city's own: trained on that city alone
            assert state["data"]["cities"] == [city], (task, state["data"]["cities"])


def test_only_the_release_starts_from_the_committed_weights_as_they_are():
    assert initial_weights("base-release") == BASE_WEIGHTS
