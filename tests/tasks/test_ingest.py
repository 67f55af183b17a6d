"""What dags/nightly_ingest.py calls while parsed (the city list, the Asset URIs), and which task errors are
final (AirflowFailException: no retry) or left to Airflow's retries."""

import re

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException

from transfertraj.core.city_config import CityConfigError
from transfertraj.core.settings import BUNDLED_CITY_DIR, Settings
from transfertraj.jobs.ingest import QualityGateError
from transfertraj.jobs.landed_files import LandingError
from transfertraj.tasks.ingest import configured_cities, features_asset_uri, ingest_city_date, no_retry


def test_an_invalid_city_file_gets_no_dag_and_an_error_line(tmp_path, caplog):
    folder = tmp_path / "cities"
    folder.mkdir()
    (folder / "tinyporto.yaml").write_text(
        yaml.safe_dump({**yaml.safe_load((BUNDLED_CITY_DIR / "porto.yaml").read_text()), "name": "tinyporto"})
    )
    (folder / "broken.yaml").write_text("name: broken\nbbox: nope\n")
    settings = Settings.load(home=tmp_path, city_dirs=(folder,))
    with caplog.at_level("ERROR", logger="transfertraj.pipeline"):
        cities = configured_cities(settings)
    assert list(cities) == ["tinyporto"]
    assert "no nightly_ingest DAG for broken" in caplog.text


def test_features_asset_uri_names_the_city_partition(tmp_path):
    assert features_asset_uri("porto", Settings.load(home=tmp_path)) == f"file://{tmp_path}/lake/features/city=porto"


@pytest.mark.parametrize(
    "err",
    [
        QualityGateError("porto 2013-07-01: 41% of rows rejected; silver not published"),
        LandingError("porto 2013-07-01: no landed file could be read"),
        CityConfigError("config/cities/porto.yaml: bbox: Input should be a valid dictionary"),
    ],
)
def test_what_a_retry_cannot_mend_fails_at_once_with_the_same_message(err):
    with pytest.raises(AirflowFailException, match=re.escape(str(err))), no_retry():
        raise err


def test_what_may_change_is_left_to_the_retries():
    with pytest.raises(FileNotFoundError), no_retry():
        raise FileNotFoundError("porto 2013-07-01: nothing landed (was the delivery late?)")


def test_a_bad_city_file_fails_the_ingest_task_without_retry(tmp_path, monkeypatch):
    folder = tmp_path / "cities"
    folder.mkdir()
    (folder / "broken.yaml").write_text("name: broken\nbbox: nope\n")
    monkeypatch.setenv("TRANSFERTRAJ_HOME", str(tmp_path))
    monkeypatch.setenv("TRANSFERTRAJ_CITY_DIRS", str(folder))
    with pytest.raises(AirflowFailException, match="broken.yaml: bbox"):
        ingest_city_date("broken", "2013-07-01")


def test_a_delivery_not_landed_yet_is_retried(tmp_path, monkeypatch):
    folder = tmp_path / "cities"
    folder.mkdir()
    (folder / "tinyporto.yaml").write_text(
        yaml.safe_dump({**yaml.safe_load((BUNDLED_CITY_DIR / "porto.yaml").read_text()), "name": "tinyporto"})
    )
    monkeypatch.setenv("TRANSFERTRAJ_HOME", str(tmp_path))
    monkeypatch.setenv("TRANSFERTRAJ_CITY_DIRS", str(folder))
    with pytest.raises(FileNotFoundError, match="nothing landed"):
        ingest_city_date("tinyporto", "2013-07-01")
