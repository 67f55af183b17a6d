"""The README's picture of `transfertraj predict --html` (a maintainer's tool, not a pipeline step).

    .venv/bin/python scripts/predict_page_example.py            # needs chromium; ~15 min on 2 busy cores
    .venv/bin/python scripts/predict_page_example.py --reuse    # after a kill: keep the context, resume training

What it does, all on the bundled data, in a throwaway data root (--home):

1. cuts the bundled OSM extract to a box of central Porto and writes the three context tables of that
   box (roads, POIs, road lattice) to the lake with delta-rs, as the context job would;
2. builds feature rows for the bundled sample's trips (first 120 points of each, no cleaning) with the
   serving code's numpy feature functions (transfertraj.serving.features_from_points: the functions the
   Spark featurize job uses), leaving out the trips the picture shows;
3. pretrains a TINY model (core.constants MODEL_SIZES["tiny"]) for --epochs epochs and fine-tunes it on
   TP for --tp-epochs, registers it as transfertraj-porto (MLflow, SQLite under --home);
4. runs `transfertraj predict --task tp --holdout --geojson --html` on four trips it never trained on
   and screenshots the page with headless Chromium into docs/img/predict_page.png.

The model is tiny and briefly trained on ~1,200 trips: the picture shows what the page draws, not
how good TransferTraj is (docs/evaluation.md has the measured figures).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BOX = (-8.65, 41.14, -8.59, 41.17)  # central Porto, 5 x 3.3 km
SHOWN = (1114, 1138, 1144, 1153)  # rows of taxi_sample.csv drawn on the page (inside BOX, 28-83 points)


def sample_points(rows: list[int] | None = None, skip: tuple[int, ...] = ()) -> pd.DataFrame:
    """Request rows (trip_id, ts, lon, lat) of the bundled sample's trips, 15 s apart, first 120 points."""
    raw = pd.read_csv(REPO / "data" / "porto" / "taxi_sample.csv", dtype={"TRIP_ID": str})
    out = []
    for i, r in enumerate(raw.itertuples()):
        if (rows is not None and i not in rows) or i in skip:
            continue
        pts = json.loads(r.POLYLINE)[:120]
        if len(pts) < 6:
            continue
        lon, lat = np.array(pts).T
        out.append(
            pd.DataFrame(
                {"trip_id": r.TRIP_ID, "ts": int(r.TIMESTAMP) + 15 * np.arange(len(pts)), "lon": lon, "lat": lat}
            )
        )
    return pd.concat(out, ignore_index=True)


def build_context(settings, city, reuse: bool = False):
    """Context tables of BOX in the lake (kept when `reuse` finds them); returns (city on the cut extract,
    versions, CityContext)."""
    from deltalake import write_deltalake

    from transfertraj.feature_store.reader import read_table, table_version
    from transfertraj.feature_store.tables import table_path
    from transfertraj.features.context import GRID_COLUMNS, POI_COLUMNS, city_context
    from transfertraj.jobs.context_tables import grid_table, pois_table, roads_table
    from transfertraj.jobs.osm_context import cut_osm_extract, read_osm_xml

    extract = settings.home / "osm" / "porto_box.osm"
    city = city.model_copy(update={"osm": city.osm.model_copy(update={"path": extract})})
    if not (reuse and table_version(settings, "context_grid") is not None):
        extract.parent.mkdir(parents=True, exist_ok=True)
        cut_osm_extract(REPO / "data" / "porto" / "porto_central.osm.bz2", extract, BOX)
        osm = read_osm_xml(extract, city.crs)
        for name, build in (("context_roads", roads_table), ("context_pois", pois_table), ("context_grid", grid_table)):
            write_deltalake(table_path(settings, name), build(osm, city), partition_by=["city"], mode="overwrite")
    versions = {name: table_version(settings, name) for name in ("context_pois", "context_grid")}
    grid, _ = read_table(settings, "context_grid", city="porto", columns=[*GRID_COLUMNS, "taxonomy_version"])
    pois, _ = read_table(settings, "context_pois", city="porto", columns=list(POI_COLUMNS))
    return city, versions, city_context(pois, grid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path("/tmp/transfertraj-predict-page"))
    ap.add_argument("--epochs", type=int, default=8, help="pretraining epochs")
    ap.add_argument("--tp-epochs", type=int, default=4, help="TP fine-tuning epochs")
    ap.add_argument("--reuse", action="store_true", help="keep --home's context tables and resume training there")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "predict_page.png")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    a = ap.parse_args()

    import torch

    from transfertraj import cli, registry
    from transfertraj.core.city_config import load_city_file
    from transfertraj.core.constants import MODEL_SIZES
    from transfertraj.core.settings import BUNDLED_CITY_DIR, Settings
    from transfertraj.model.train import finetune, pretrain
    from transfertraj.serving import features_from_points

    if not a.reuse:
        shutil.rmtree(a.home, ignore_errors=True)
    settings = Settings.load(home=a.home)
    t0 = time.time()
    city, versions, ctx = build_context(settings, load_city_file(BUNDLED_CITY_DIR / "porto.yaml"), a.reuse)
    print(f"context of {BOX}: {time.time() - t0:.0f} s", flush=True)

    train_pts = sample_points(skip=SHOWN)
    train_pts["idx"] = train_pts.groupby("trip_id").cumcount()
    feats = features_from_points(train_pts, city, ctx)
    print(f"{feats.num_rows} training trips (the {len(SHOWN)} shown left out): {time.time() - t0:.0f} s", flush=True)

    torch.set_num_threads(2)
    size = {**MODEL_SIZES["tiny"], "batch_size": 32, "progress": False}
    ckpt = pretrain(feats, "sample", a.home / "ckpt", epochs=a.epochs, seed=0, **size)
    ckpt = finetune(ckpt, "tp", feats, data_version="sample", epochs=a.tp_epochs, seed=0, progress=False)
    print(f"tiny model, {a.epochs} + {a.tp_epochs} epochs: {time.time() - t0:.0f} s", flush=True)
    reg = registry.log_and_register(
        settings=settings,
        experiment="readme",
        model_name="transfertraj-porto",
        checkpoint=ckpt,
        cities=[city],
        data_versions={"features_version": "sample"},
        context_versions={"porto": versions},
        features=feats,
        features_version="sample",
        run_name="readme-predict-page",
    )
    print(f"registered {reg.name} v{reg.version}")

    trips = a.home / "trips.csv"
    sample_points(rows=list(SHOWN)).to_csv(trips, index=False)
    page = a.home / "predict" / "tp.html"
    argv = ["--home", str(a.home), "predict", "--model", "models:/transfertraj-porto@champion", "--task", "tp"]
    argv += ["--input", str(trips), "--output", str(a.home / "predict" / "tp.csv"), "--holdout", "--geojson"]
    assert cli.main([*argv, "--html", str(page)]) == 0
    height = int(re.search(r'<svg id="map"[^>]* height="(\d+)"', page.read_text()).group(1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [a.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={a.home / 'chromium'}", f"--window-size=1330,{height + 30}",
         f"--screenshot={a.out}", page.as_uri()],
        check=True, capture_output=True,
    )  # fmt: skip
    print(f"{a.out} ({a.out.stat().st_size / 1024:.0f} kB) from {page}: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
