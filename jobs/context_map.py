"""A picture of a city's context for people: POI density and road density, with trajectories on top.

    python -m jobs.context_map --city porto [--trips 200]     # -> <reports>/porto/context_map.png

`render_context_map(pois, grid, trajectories, out_path, ...)` takes the city's context_pois and
context_grid rows (pandas, as read from the Delta tables), and trajectories as (lon, lat) arrays; it
draws two panels in the city's metric CRS (km from the lattice origin): POIs within phi per lattice node
(log scale) and total road metres within phi, each with the trajectories as thin lines. Nodes outside
the source's coverage are left blank, so "no data" never looks like "nothing there".
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from transfertraj.jobs.context_taxonomy import ROAD_CLASSES, TAXONOMY_VERSION

log = logging.getLogger(__name__)

_MAX_PIXELS = 600  # the lattice is downsampled to about this many pixels across


def _raster(grid: pd.DataFrame, values: np.ndarray, stride: int) -> np.ndarray:
    ix, iy = grid["ix"].to_numpy(), grid["iy"].to_numpy()
    keep = (ix % stride == 0) & (iy % stride == 0)
    out = np.full((iy.max() // stride + 1, ix.max() // stride + 1), np.nan)
    out[iy[keep] // stride, ix[keep] // stride] = values[keep]
    return out


def render_context_map(
    pois: pd.DataFrame,
    grid: pd.DataFrame,
    trajectories: list[tuple[np.ndarray, np.ndarray]],
    out_path: Path,
    *,
    crs: str,
    title: str,
    phi_m: float,
    stride: int | None = None,
) -> Path:
    """Write the PNG; trajectories are (lon, lat) array pairs in WGS-84. Every stride-th lattice node is
    drawn (default: about _MAX_PIXELS across); pass the stride when the grid is already downsampled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from pyproj import Transformer
    from scipy.spatial import cKDTree

    step = float(grid["lattice_m"].iloc[0])
    stride = stride or max(1, int(np.ceil(max(grid["ix"].max(), grid["iy"].max()) / _MAX_PIXELS)))
    x0 = float(grid["mx"].min())
    y0 = float(grid["my"].min())
    sub = grid[(grid["ix"] % stride == 0) & (grid["iy"] % stride == 0)]

    # POIs within phi of each drawn node: exact, from a KD-tree of the POIs
    counts = np.zeros(len(sub))
    if len(pois):
        tree = cKDTree(pois[["mx", "my"]].to_numpy())
        counts = tree.query_ball_point(sub[["mx", "my"]].to_numpy(), phi_m, return_length=True).astype(float)
    poi_density = np.where(sub["poi_covered"].to_numpy(), counts, np.nan)
    road_total = sub[[f"road_m_{c}" for c in ROAD_CLASSES]].to_numpy().sum(1)
    road_density = np.where(sub["road_covered"].to_numpy(), road_total, np.nan)

    extent_km = (0, (grid["mx"].max() - x0) / 1000, 0, (grid["my"].max() - y0) / 1000)
    to_metric = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    fig, axes = plt.subplots(1, 2, figsize=(16, 7), constrained_layout=True)
    panels = (
        (
            poi_density,
            f"POIs within {phi_m:g} m (count)",
            "magma",
            LogNorm(vmin=1, vmax=max(2, np.nanmax(poi_density))),
        ),
        (road_density, f"road length within {phi_m:g} m (m, all classes)", "viridis", None),
    )
    for ax, (values, label, cmap, norm) in zip(axes, panels):
        img = _raster(sub, values, stride)
        shown = ax.imshow(
            np.where(img > 0, img, np.nan) if norm else img,
            origin="lower",
            extent=extent_km,
            cmap=cmap,
            norm=norm,
            interpolation="nearest",
        )
        fig.colorbar(shown, ax=ax, shrink=0.8, label=label)
        for lon, lat in trajectories:
            x, y = to_metric.transform(np.asarray(lon), np.asarray(lat))
            ax.plot((x - x0) / 1000, (y - y0) / 1000, color="cyan", lw=0.5, alpha=0.6)
        ax.set_xlabel("km east")
        ax.set_ylabel("km north")
        ax.set_xlim(extent_km[0], extent_km[1])
        ax.set_ylim(extent_km[2], extent_km[3])
        ax.set_title(label)
    fig.suptitle(f"{title} ({len(trajectories)} trajectories, lattice {step * stride:g} m shown, {TAXONOMY_VERSION})")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _porto_sample_trips(path: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    df = pd.read_csv(path, usecols=["POLYLINE"], nrows=max(n * 2, 10))
    trips = [np.array(json.loads(s), dtype=float) for s in df["POLYLINE"]]
    return [(t[:, 0], t[:, 1]) for t in trips if len(t) >= 5][:n]


def _point_log_trips(city, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to n vehicles' first fixes of the city's sample, in WGS-84 (columns by name or by position)."""
    from transfertraj.features.datum import to_wgs84

    raw, path = city.raw, Path(city.raw.path)
    columns = raw.columns
    use = [columns["vehicle_id"], columns["lon"], columns["lat"]]
    if path.name.endswith(".parquet"):
        df = pd.read_parquet(path)
        df = df.iloc[:200_000, use] if not raw.header else df.loc[:200_000, use]
        df.columns = use
    else:
        sep = raw.delimiter_for(path.name)
        df = pd.read_csv(path, usecols=use, header=0 if raw.header else None, sep=sep, nrows=200_000)
    out = []
    for _, g in df.groupby(columns["vehicle_id"], sort=False):
        lon, lat = to_wgs84(g[columns["lon"]].to_numpy()[:200], g[columns["lat"]].to_numpy()[:200], city.datum)
        out.append((lon, lat))
        if len(out) >= n:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    from transfertraj.core.city_config import load_city
    from transfertraj.core.log_config import configure_logging
    from transfertraj.core.settings import Settings
    from transfertraj.jobs.context_tables import read_context
    from transfertraj.jobs.spark_session import get_spark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--city", required=True)
    parser.add_argument("--trips", type=int, default=200)
    args = parser.parse_args(argv)
    configure_logging()
    settings = Settings.load()
    city = load_city(args.city, settings)
    if not city.has_osm:
        print(f"{city.name} has no OSM source: no context to draw")
        return 1
    pois_df, grid_df, _ = read_context(get_spark("context_map", settings), city, settings)
    trips = (
        _porto_sample_trips(city.raw.path, args.trips)
        if city.raw.format == "porto_csv"
        else _point_log_trips(city, args.trips)
    )
    from pyspark.sql import functions as F

    # downsample in Spark with the stride render_context_map uses: the full lattice is millions of rows
    top = grid_df.agg(F.greatest(F.max("ix"), F.max("iy"))).first()[0]
    stride = max(1, int(np.ceil(top / _MAX_PIXELS)))
    grid = grid_df.where((F.col("ix") % stride == 0) & (F.col("iy") % stride == 0))
    out = render_context_map(
        pois_df.select("mx", "my").toPandas(),
        grid.drop("city", "snapshot_date", "taxonomy_version").toPandas(),
        trips,
        settings.reports / city.name / "context_map.png",
        crs=city.crs,
        title=f"{city.name}: OSM context ({city.osm.kind}, snapshot {city.osm.snapshot_date})",
        phi_m=city.phi_m,
        stride=stride,
    )
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
