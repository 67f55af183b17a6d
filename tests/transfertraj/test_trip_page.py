"""`transfertraj predict --holdout --geojson --html` end to end, and the page rendered by a real browser.

The model is the registry tests' tiny one, trained on GENERATED features (its answers are poor on
purpose of size, not meant to be good); the trips are REAL Porto trips of the bundled sample and the
roads the REAL OSM roads of a central Porto box: from the context_roads table (delta-rs) at the version
the model pinned, else from the road lattice the model carries (a later version of the table is never
drawn). Headless Chromium (Debian
package `chromium`, scripts/install_browser.sh) draws the page from file:// and the test reads the
screenshot's pixels and the DOM the page's script left; without Chromium those tests skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from tests.transfertraj.registry_fixtures import features, porto_context, porto_trips, register, settings_for, train
from transfertraj import cli
from transfertraj.trip_page import COLOURS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: run `bash scripts/install_browser.sh` (Debian package chromium)"
)
MODEL = "models:/transfertraj-base@champion"


def write_lake_roads(settings, keep: int | None = None) -> int:
    """The context_roads table of the same cut extract (the registry fixture writes POIs and grid only), or
    its first `keep` segments only (a later, different version); returns the version written."""
    from deltalake import write_deltalake

    from transfertraj.feature_store.tables import table_path
    from transfertraj.jobs.context_tables import roads_table
    from transfertraj.jobs.osm_context import read_osm_xml

    city, _ = porto_context(settings)
    from transfertraj.feature_store.reader import table_version

    roads = roads_table(read_osm_xml(city.osm.path, city.crs), city)
    roads = roads if keep is None else roads.slice(0, keep)
    write_deltalake(table_path(settings, "context_roads"), roads, partition_by=["city"], mode="overwrite")
    return table_version(settings, "context_roads")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    home = tmp_path_factory.mktemp("page_home")
    settings = settings_for(home)
    feats = features(40)
    checkpoint = train(home / "ckpt", feats)
    register(settings, checkpoint, feats)
    trips = home / "trips.csv"
    porto_trips(3).to_csv(trips, index=False)

    def predict(task: str, name: str, *extra: str, model: str = MODEL) -> dict:
        out = home / name
        argv = ["--home", str(home), "predict", "--model", model, "--task", task, "--input", str(trips)]
        argv += ["--output", str(out / "answers.csv"), "--geojson", "--html", str(out / "page.html"), *extra]
        assert cli.main(argv) == 0
        return {
            "csv": pd.read_csv(out / "answers.csv", dtype={"trip_id": str}),
            "geojson": json.loads((out / "answers.geojson").read_text()),
            "page": out / "page.html",
        }

    runs = {"lattice": predict("tp", "lattice", "--holdout"), "plain": predict("tr", "plain")}
    # a model whose features were built with context_roads v0, then the roads refreshed (v1, a few only)
    pinned = register_pinned(settings, checkpoint, feats, write_lake_roads(settings))
    assert write_lake_roads(settings, keep=5) == 1
    runs["lake"] = predict("tp", "lake", "--holdout", model=f"models:/{pinned.name}/{pinned.version}")
    runs["unpinned"] = predict("tp", "unpinned", "--holdout")  # records no roads version: its lattice
    return runs


def register_pinned(settings, checkpoint, feats, roads_version: int):
    """The same weights registered as a model that records the context_roads version of its features."""
    from transfertraj import registry

    porto, versions = porto_context(settings)
    return registry.log_and_register(
        settings=settings,
        experiment="tests",
        model_name="transfertraj-porto",
        checkpoint=checkpoint,
        cities=[porto],
        data_versions={"features_version": "generated"},
        context_versions={"porto": {**versions, "context_roads": roads_version}},
        features=feats,
        features_version="generated",
        run_name="test pinned roads",
    )


def test_holdout_scores_real_trips_and_the_geojson_agrees(predicted):
    run = predicted["lake"]
    csv, fc = run["csv"], run["geojson"]
    assert len(csv) == 3 * 5 and csv["error_m"].notna().all() and (csv["error_m"] > 0).all()
    kinds = pd.Series([f["properties"]["kind"] for f in fc["features"]]).value_counts().to_dict()
    assert kinds["predicted"] == kinds["hidden"] == 15 and kinds["predicted_path"] == 3
    assert fc["summary"]["mean_error_m"] == pytest.approx(csv["error_m"].mean(), abs=1e-3)
    page = run["page"].read_text()
    assert f"{csv['error_m'].mean():,.0f} m" in page  # the mean error is on the page


def test_without_holdout_nothing_is_scored(predicted):
    run = predicted["plain"]
    assert "error_m" not in run["csv"].columns
    assert not any(f["properties"]["kind"].startswith("hidden") for f in run["geojson"]["features"])
    assert "Truth unknown" in run["page"].read_text()


@pytest.mark.parametrize("source", ["lattice", "lake", "unpinned"])
def test_the_page_is_self_contained_and_small(predicted, source):
    text = predicted[source]["page"].read_text()
    assert re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I) is None  # nothing fetched from a server
    assert re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", text) is None  # only inline data
    assert "@import" not in text and "url(" not in text
    assert len(text.encode()) < 300_000
    # the roads the model pinned (v0), not the lake's latest (v1); a model that pins none: its own lattice
    expected = "context_roads table (version 0)" if source == "lake" else "road lattice carried by the model"
    assert expected in text
    assert "context_roads table (version 1)" not in text


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    cmd += [f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def pixels_near(img: np.ndarray, hex_colour: str, tol: int = 30) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img[..., :3].astype(int) - rgb).max(axis=-1) <= tol).sum())


def map_interior(img: np.ndarray) -> np.ndarray:
    """The map's pixels: inside the box of the SVG's background colour (the legend and its swatches,
    which carry the same colours, lie outside it)."""
    ys, xs = np.nonzero((img[..., :3] == (247, 246, 242)).all(axis=-1))  # the SVG background, #f7f6f2
    return img[ys.min() + 2 : ys.max() - 1, xs.min() + 2 : xs.max() - 1]


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("source", ["lattice", "lake"])
def test_chromium_draws_the_trips_on_the_roads(predicted, source, tmp_path):
    from PIL import Image

    page = predicted[source]["page"]
    shot = tmp_path / "page.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1340,900", page.as_uri())
    assert shot.exists(), done.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 1340)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 100  # not a blank or an error page
    m = map_interior(img)
    assert m.shape[0] > 400 and m.shape[1] > 900  # the 960 px map is there
    # observed blue, hidden green, predicted red drawn on the map (15 predicted dots of r=4 overlap: ~100 px)
    for kind, least in (("observed", 300), ("hidden", 100), ("predicted", 50)):
        assert pixels_near(m, COLOURS[kind]) > least, f"{kind} ({COLOURS[kind]}) hardly drawn"
    spread, value = m.max(axis=-1).astype(int) - m.min(axis=-1), m.mean(axis=-1)
    grey = int(((spread < 8) & (value > 100) & (value < 235)).sum())
    assert grey > 3000, f"roads hardly drawn ({grey} grey pixels; the page without roads has ~150)"


@pytest.mark.slow
@needs_chromium
def test_chromium_runs_the_pages_script_and_keeps_every_point(predicted, tmp_path):
    run = predicted["lake"]
    dom = chromium(tmp_path, "--dump-dom", run["page"].as_uri()).stdout
    assert 'data-ready="drawn"' in dom  # the inline script ran to its end without an error
    for kind in ("observed", "hidden", "predicted"):
        group = re.search(rf'<g class="layer {kind} points"[^>]*>(.*?)</g>', dom, re.S)
        n = sum(f["properties"]["kind"] == kind for f in run["geojson"]["features"])
        assert group and group.group(1).count("<circle") == n
    assert dom.count('class="road road-') >= 3  # several road classes drawn from the lake's lines


def test_predict_help_explains_the_outputs(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in (
        "--holdout",
        "the last 5 points",
        "--geojson [PATH]",
        "--output with .geojson",
        "--html PAGE",
        "no network",
    ):
        assert words in text
