"""Fixtures for the model tests: a GENERATED features table and thread limits (see generated.py)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.model.generated import generated_features


@pytest.fixture(scope="session")
def features_df() -> pd.DataFrame:
    return generated_features(40)


@pytest.fixture(autouse=True)
def _few_threads():
    """Other agents share the 2 cores; tiny models do not need more than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
