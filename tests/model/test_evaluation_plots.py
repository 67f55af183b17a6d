"""The plots' routing table (pure numbers, no drawing)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def test_routing_by_density_measures_whether_the_same_context_picks_the_same_experts():
    from transfertraj.model.evaluation_plots import routing_by_density

    rng = np.random.default_rng(0)
    n = 600
    poi = rng.uniform(0, 30, n)
    base = pd.DataFrame({"layer": 0, "poi": poi, "poi_missing": False, "road": poi * 10, "road_missing": False})
    dense = poi > np.quantile(poi, 2 / 3)
    same = base.assign(expert=np.where(dense, 3, 0))  # dense context -> expert 3, the rest -> expert 0
    table, _ = routing_by_density(same, same.copy(), n_experts=4)
    assert np.allclose(table["js"], 0.0)
    other = base.assign(expert=np.where(dense, 1, 2))  # the target city routes the same context elsewhere
    table, shares = routing_by_density(same, other, n_experts=4)
    assert np.allclose(table["js"], 1.0)
    np.testing.assert_allclose(shares[(0, "poi", "high")][0], [0, 0, 0, 1])
    assert set(table["bucket"]) == {"low", "mid", "high"}
