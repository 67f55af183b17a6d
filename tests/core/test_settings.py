import pytest

from transfertraj.core.settings import Settings


def test_defaults_are_absolute_and_not_the_working_directory(monkeypatch, tmp_path):
    for var in ("TRANSFERTRAJ_HOME", "TRANSFERTRAJ_SPARK_MASTER", "MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    s = Settings.load()
    assert s.home.is_absolute() and tmp_path not in s.home.parents
    assert s.spark_master == "local[*]"
    assert s.mlflow_tracking_uri.startswith("sqlite:///") and str(s.home) in s.mlflow_tracking_uri


def test_precedence_flag_over_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERTRAJ_HOME", str(tmp_path / "env"))
    monkeypatch.setenv("TRANSFERTRAJ_SPARK_MASTER", "spark://env:7077")
    assert Settings.load().home == (tmp_path / "env").resolve()
    s = Settings.load(home=tmp_path / "flag", spark_master=None)
    assert s.home == (tmp_path / "flag").resolve()
    assert s.spark_master == "spark://env:7077"  # a None flag does not override


def test_spark_conf_from_environment(monkeypatch):
    monkeypatch.setenv("TRANSFERTRAJ_SPARK_CONF", "spark.executor.memory=8g, spark.cores.max=4")
    assert Settings.load().spark_conf == {"spark.executor.memory": "8g", "spark.cores.max": "4"}
    monkeypatch.setenv("TRANSFERTRAJ_SPARK_CONF", "nonsense")
    with pytest.raises(ValueError, match="not key=value"):
        Settings.load()
