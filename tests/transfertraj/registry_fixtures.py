"""A tiny model trained on GENERATED features with the real taxonomy's dimensions, registered in a
throwaway MLflow store (SQLite under a temporary data root) together with the REAL context of central
Porto (the bundled OSM extract, cut to a small box, written to the lake's context tables with delta-rs).
Shared by the registry and serving tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from tests.model.generated import generated_features
from transfertraj.core.city_config import load_city_file
from transfertraj.core.settings import BUNDLED_CITY_DIR, Settings
from transfertraj.features.taxonomy import N_POI, N_ROAD, TAXONOMY_VERSION

REPO = Path(__file__).resolve().parents[2]
BOX = (-8.626, 41.141, -8.606, 41.155)  # central Porto (1.7 x 1.6 km): a lattice of ~0.2 M nodes

TINY = dict(
    d_model=16,
    n_layers=1,
    n_heads=2,
    n_experts=2,
    top_k=1,
    expert_hidden=16,
    ffn_hidden=32,
    mixer_heads=2,
    fourier_freqs=4,
    batch_size=16,
    progress=False,
)


def features(n: int = 60):
    """Generated drives around Porto in the layout of the real features table (poi-v1 dims)."""
    return generated_features(n, city="porto", poi_dim=N_POI, road_dim=N_ROAD, taxonomy_version=TAXONOMY_VERSION)


def settings_for(home: Path) -> Settings:
    return Settings.load(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")


def train(out_dir: Path, feats, *, epochs: int = 1, seed: int = 0) -> Path:
    from transfertraj.model.train import pretrain

    torch.set_num_threads(1)
    return pretrain(feats, "generated", out_dir, epochs=epochs, seed=seed, **TINY)


def damaged_copy(checkpoint: Path, out_dir: Path) -> Path:
    """The same checkpoint with its weights scrambled: a model that must lose the gate."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(0)
    state["model"] = {
        k: v + 3.0 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in state["model"].items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "best.pt"
    torch.save(state, path)
    return path


def porto_context(settings: Settings):
    """(Porto's city config on the cut extract, context table versions), written once per data root."""
    from deltalake import write_deltalake

    from transfertraj.feature_store.reader import table_version
    from transfertraj.feature_store.tables import table_path
    from transfertraj.jobs.context_tables import grid_table, pois_table
    from transfertraj.jobs.osm_context import cut_osm_extract, read_osm_xml

    porto = load_city_file(BUNDLED_CITY_DIR / "porto.yaml")
    extract = settings.home / "osm" / "porto_box.osm"
    if not extract.exists():
        extract.parent.mkdir(parents=True, exist_ok=True)
        cut_osm_extract(REPO / "data" / "porto" / "porto_central.osm.bz2", extract, BOX)
    city = porto.model_copy(update={"osm": porto.osm.model_copy(update={"path": extract})})
    if table_version(settings, "context_grid") is None:
        ctx = read_osm_xml(extract, city.crs)
        for name, data in (("context_pois", pois_table(ctx, city)), ("context_grid", grid_table(ctx, city))):
            write_deltalake(table_path(settings, name), data, partition_by=["city"], mode="overwrite")
    versions = {name: table_version(settings, name) for name in ("context_pois", "context_grid")}
    return city, versions


def porto_trips(n: int = 2, skip: int = 0) -> pd.DataFrame:
    """Real Porto trips of the bundled sample as request rows; trip_id as in the file (19-digit numbers)."""
    raw = pd.read_csv(REPO / "data" / "porto" / "taxi_sample.csv", dtype={"TRIP_ID": str}, nrows=skip + n)
    rows = []
    for r in raw.iloc[skip:].itertuples():
        for i, (lon, lat) in enumerate(json.loads(r.POLYLINE)):
            rows.append({"trip_id": r.TRIP_ID, "ts": int(r.TIMESTAMP) + 15 * i, "lon": lon, "lat": lat})
    return pd.DataFrame(rows)


def register(settings: Settings, checkpoint: Path, feats, name: str = "transfertraj-base"):
    from transfertraj import registry

    porto, versions = porto_context(settings)
    return registry.log_and_register(
        settings=settings,
        experiment="tests",
        model_name=name,
        checkpoint=checkpoint,
        cities=[porto],
        data_versions={"features_version": "generated"},
        context_versions={"porto": versions},
        features=feats,
        features_version="generated",
        run_name="test",
    )


def write_features(settings: Settings, rows: pd.DataFrame, context_versions: dict) -> int:
    """Append GENERATED features rows to the lake's features table (delta-rs) as a delivery would; the
    rows name the context versions they were built with. Returns the table version written."""
    from deltalake import write_deltalake

    from transfertraj.feature_store.reader import table_version
    from transfertraj.feature_store.tables import table_path

    src = json.dumps({f"{k}_version": v for k, v in context_versions.items()})
    table = rows.assign(source_versions=src)
    write_deltalake(table_path(settings, "features"), table, partition_by=["city", "date"], mode="append")
    return table_version(settings, "features")
