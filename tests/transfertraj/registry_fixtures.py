"""A tiny model trained on GENERATED features with the real taxonomy's dimensions, registered in a
throwaway MLflow store (SQLite under a temporary data root). Shared by the registry and serving tests."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.model.generated import generated_features
from transfertraj.core.city_config import load_city_file
from transfertraj.core.settings import BUNDLED_CITY_DIR, Settings
from transfertraj.jobs.context_taxonomy import N_POI, N_ROAD, TAXONOMY_VERSION

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


def register(settings: Settings, checkpoint: Path, feats, name: str = "transfertraj-base"):
    from transfertraj import registry

    porto = load_city_file(BUNDLED_CITY_DIR / "porto.yaml")
    return registry.log_and_register(
        settings=settings,
        experiment="tests",
        model_name=name,
        checkpoint=checkpoint,
        cities=[porto],
        data_versions={"features_version": "generated"},
        context_versions={},
        features=feats,
        features_version="generated",
        run_name="test",
    )
