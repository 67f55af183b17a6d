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
