"""What dags/pretrain.py calls while parsed: the source cities."""

from transfertraj.tasks.pretrain import pretrain_cities


def test_pretrain_cities_from_the_environment(monkeypatch):
    monkeypatch.delenv("TRANSFERTRAJ_PRETRAIN_CITIES", raising=False)
    assert pretrain_cities() == ["porto"]
    monkeypatch.setenv("TRANSFERTRAJ_PRETRAIN_CITIES", " porto, sf ,,")
    assert pretrain_cities() == ["porto", "sf"]
