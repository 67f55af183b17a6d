"""onboard_city's wait for the base champion, against a real (empty) MLflow store."""

import pytest

from transfertraj.core.settings import Settings
from transfertraj.tasks.onboard import BaseChampionMissing, base_champion_ready


def test_no_champion_means_look_again_then_stop_saying_what_to_run(tmp_path):
    settings = Settings.load(home=tmp_path)  # MLflow on <tmp>/mlflow/mlflow.db, created empty here
    assert base_champion_ready(waited_s=0, wait_s=60, settings=settings) is False
    with pytest.raises(BaseChampionMissing, match=r"transfertraj-base@champion does not exist after 60 s") as err:
        base_champion_ready(waited_s=60, wait_s=60, settings=settings)
    assert "run the pretrain DAG first" in str(err.value)
    assert isinstance(err.value, LookupError)  # what zero_shot raised before the DAG waited
