"""The context map renders a PNG from context rows and lon/lat trajectories (no Spark needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfertraj.jobs.context_map import render_context_map
from transfertraj.jobs.context_taxonomy import ROAD_CLASSES


def test_renders_png_with_uncovered_nodes_blank(tmp_path):
    ny, nx, step = 40, 60, 50.0
    iy, ix = np.divmod(np.arange(ny * nx), nx)
    x0, y0 = 530_000.0, 4_555_000.0  # central Porto, UTM 29N
    grid = pd.DataFrame({"ix": ix, "iy": iy, "mx": x0 + ix * step, "my": y0 + iy * step, "lattice_m": step})
    for c in ROAD_CLASSES:
        grid[f"road_m_{c}"] = np.where(ix % 10 == 0, 200.0, 0.0)
    grid["road_covered"] = ix < 50
    grid["poi_covered"] = iy < 30
    rng = np.random.default_rng(0)
    pois = pd.DataFrame({"mx": x0 + rng.uniform(0, 3000, 300), "my": y0 + rng.uniform(0, 2000, 300)})
    trips = [(np.array([-8.62, -8.61, -8.60]), np.array([41.145, 41.150, 41.152]))]
    out = render_context_map(
        pois, grid, trips, tmp_path / "porto" / "context_map.png", crs="EPSG:32629", title="test", phi_m=100.0
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
