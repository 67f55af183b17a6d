"""What dags/nightly_ingest.py calls while parsed: the city list (one DAG per valid file), the Asset URIs."""

import yaml

from transfertraj.core.settings import BUNDLED_CITY_DIR, Settings
from transfertraj.tasks.ingest import configured_cities, features_asset_uri


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
