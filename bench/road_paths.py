"""Road-path interpolation (TR) before and after the ellipse search, on real trips, in one run.

    TRANSFERTRAJ_HOME=/work/real .venv/bin/python bench/road_paths.py --city porto --start 2014-05-01 \
        --end 2014-05-01 --version 67 --trajectories 1000 --mu 8 --before edaec7d

"Before" is model/road_paths.py as of git revision `--before` (dijkstra from 64 sources at a time over the
whole city graph), loaded from git; "after" is the working tree's. Both place the hidden points of the same
sampled trajectories (REAL: the lake's features and context_roads) on the same graph, each timed in wall
and process CPU seconds (the CPU figure is the comparable one on a shared machine), and the two outputs
must be identical. "After" includes building the graph's cell index and components (once per graph).
Appends a dated row to bench/results/road-paths-history.csv.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.history import append_rows  # noqa: E402


def module_at(revision: str):
    """model/road_paths.py as of a git revision, imported as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:model/road_paths.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"road_paths_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def working_tree_rev() -> str:
    """HEAD's short hash, with "+dirty" when model/road_paths.py differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "model/road_paths.py"], cwd=REPO).returncode
    return head.strip() + ("+dirty" if dirty else "")


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--city", default="porto")
    p.add_argument("--start", default="2014-05-01")
    p.add_argument("--end", default="2014-05-01")
    p.add_argument("--version", type=int, default=None, help="features table version")
    p.add_argument("--trajectories", type=int, default=1000)
    p.add_argument("--mu", type=int, default=8)
    p.add_argument("--before", default="edaec7d", help="git revision of the old model/road_paths.py")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from transfertraj.core.settings import Settings
    from transfertraj.model import road_paths
    from transfertraj.model.transfer_data import subset
    from transfertraj.tasks.training_data import read_city_data

    settings = Settings.load()
    data, version, ctx = read_city_data(settings, [args.city], args.version, (args.start, args.end))
    rng = np.random.default_rng(args.seed)
    data = subset(data, np.sort(rng.choice(len(data), min(args.trajectories, len(data)), replace=False)))
    graph, roads = road_paths.road_graph(settings, args.city, ctx.get(args.city, {}).get("context_roads"))
    if graph is None:
        raise SystemExit(f"{args.city} has no context_roads in {settings.lake}: run the context job first")
    old = module_at(args.before)
    rows = np.arange(len(data))
    graphs = {args.city: graph}
    before, before_wall, before_cpu = timed(
        lambda: old.tr_road_path_interpolation(data, rows, mu=args.mu, graphs=graphs)
    )
    after, after_wall, after_cpu = timed(
        lambda: road_paths.tr_road_path_interpolation(data, rows, mu=args.mu, graphs=graphs)
    )
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    row = {
        "when_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "city": args.city,
        "features_version": version,
        "context_roads_version": roads,
        "trajectories": len(data),
        "hidden_points": len(after),
        "on_road_share": round(float(after["on_road"].mean()), 4),
        "mu": args.mu,
        "graph_nodes": graph.n_nodes,
        "before_rev": args.before,
        "after_rev": working_tree_rev(),
        "before_wall_s": round(before_wall, 2),
        "before_cpu_s": round(before_cpu, 2),
        "after_wall_s": round(after_wall, 2),
        "after_cpu_s": round(after_cpu, 2),
        "speedup_cpu": round(before_cpu / after_cpu, 1),
        "speedup_wall": round(before_wall / after_wall, 1),
        "identical": True,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(pd.Series(row).to_string())
    append_rows(REPO / "bench" / "results" / "road-paths-history.csv", [row])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
