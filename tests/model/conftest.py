"""Fixtures for the model tests: a GENERATED features table and thread limits (see generated.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.model.generated import generated_features
from transfertraj.model.trajectory_data import load_features


@pytest.fixture(scope="session")
def features_df() -> pd.DataFrame:
    return generated_features(40)


@pytest.fixture(scope="session")
def two_cities():
    """GENERATED: 'porto' with context, 'beijing' without, 'sanfrancisco' lacking POI categories 1 and 3
    (same taxonomy and dims)."""
    a = generated_features(50, seed=0, city="porto", min_points=10, max_points=24)
    b = generated_features(30, seed=1, city="beijing", min_points=10, max_points=24, context_missing=True)
    c = generated_features(30, seed=2, city="sanfrancisco", min_points=10, max_points=24)
    c["poi_missing"] = [[np.array([False, True, False, True, False])] * n for n in c["n_points"]]
    return load_features(pd.concat([a, b, c], ignore_index=True), data_version=7)


@pytest.fixture(autouse=True)
def _few_threads():
    """Other agents share the 2 cores; tiny models do not need more than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
