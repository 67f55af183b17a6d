"""Context join benchmark: points/s of add_context on GENERATED Porto points, against brute force.

    .venv/bin/python bench/context.py --quick        # 100 k points, about a minute once the tables exist
    .venv/bin/python bench/context.py                # 1 M and 10 M points

Needs Porto's context tables (built here first if absent: `python -m jobs.context_tables --city porto`,
about a minute). Input: GENERATED points, the real points of the Porto taxi sample that lie inside the
OSM extract, replicated and jittered (Gaussian, 25 m) and kept only where the jittered point is still
inside the extract's road and POI coverage, written once per size to Parquet (point_id, mx, my).

Measured, each Spark size in a child process of its own (JVM and Python workers are its descendants):
  join s     read Parquet -> add_loaded_context -> Spark's `noop` sink, the context already loaded
  join CPU s the CPU time of the child's process tree (driver, JVM, Python workers) over the join: on 2
             shared cores the figure that other work changes least
  load s     what a job spends getting the city's context (jobs.context_tables.context_npz: the cached
             NPZ of the tables' current versions): a fixed cost per job, not per point
  peak MB    the largest sum of PSS over the child and all its descendants, sampled every 0.2 s
Each size runs twice, one child each, differing only in the driver JVM's JIT (in local mode the driver
is the executor: it turns every Arrow batch the Python workers return into rows): `C1`, the jobs' default
(jobs/spark_session.DRIVER_JIT, chosen for short nightly jobs), and `C2`, the full tiered JIT
(TRANSFERTRAJ_SPARK_CONF=spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=4).
Also measured once: `cache miss s`, building that NPZ from the Delta tables (the first job after the
context tables change pays it), and the same per-point functions in this one Python process over all
the points (`numpy 1 proc`, the single-process peer: no Spark, one core).
Ratios printed: Spark points/s over the 1 M points/s target, over the numpy single process, and over
brute force: the geopandas/shapely computation the tests compare against (per point: distances to all
POIs, disc buffer intersected with the roads), on a subsample, single process. Also printed: the share
of the real Porto sample points with non-empty road and POI context, and the machine's load average
(2 shared cores: above 2, other work inflates every time).

Results: a table on stdout, appended as rows to bench/results/context-history.csv (one row per size,
dated, with the load), and the table as bench/results/context-<timestamp>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.history import append_rows  # noqa: E402

JITTER_M = 25.0
TARGET_POINTS_S = 1_000_000  # issue #18: at 10 M points on 2 cores
RESULTS = REPO / "bench" / "results"


def _real_porto_xy(crs: str) -> np.ndarray:
    import pandas as pd
    from pyproj import Transformer

    df = pd.read_csv(REPO / "data" / "porto" / "taxi_sample.csv", usecols=["POLYLINE"])
    lonlat = np.array([p for s in df["POLYLINE"] for p in json.loads(s)], dtype=float)
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
    return np.column_stack([x, y])


def _covered(ctx, xy: np.ndarray) -> np.ndarray:
    from transfertraj.features.context import interpolate

    _, _, _, road_ok, poi_ok = interpolate(ctx.lattice, xy[:, 0], xy[:, 1])
    return road_ok & poi_ok


def generate_points(ctx, crs: str, n: int, path: Path, seed: int = 0) -> Path:
    """GENERATED: real Porto points inside the extract, replicated and jittered, kept inside coverage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    base = _real_porto_xy(crs)
    base = base[_covered(ctx, base)]
    rng = np.random.default_rng(seed)
    out, have = [], 0
    while have < n:
        xy = base[rng.integers(0, len(base), n)] + rng.normal(0.0, JITTER_M, (n, 2))
        xy = xy[_covered(ctx, xy)]
        out.append(xy)
        have += len(xy)
    xy = np.concatenate(out)[:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"point_id": np.arange(n, dtype=np.int64), "mx": xy[:, 0], "my": xy[:, 1]})
    pq.write_table(table, path, row_group_size=1_000_000)
    return path


def _pss_mb(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            try:
                with open(f"/proc/{p.pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) / 1024
                            break
            except OSError:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


JITS = {"C1": None, "C2": "-XX:TieredStopAtLevel=4"}  # None: the jobs' own setting (jobs.spark_session)


def run_child(args: list[str], jit: str | None = None) -> tuple[dict, float]:
    """Run this script as a child (--child ...), sampling the PSS of its whole process tree. `jit`: the driver
    JVM's JIT options (added to TRANSFERTRAJ_SPARK_CONF), None for the jobs' default."""
    env = dict(os.environ)
    if jit:
        extra = f"spark.driver.extraJavaOptions={jit}"
        env["TRANSFERTRAJ_SPARK_CONF"] = ",".join(c for c in (env.get("TRANSFERTRAJ_SPARK_CONF"), extra) if c)
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True, env=env)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _pss_mb(proc.pid))
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {args}")
    return json.loads(out.strip().splitlines()[-1]), peak[0]


def _tree_cpu_s() -> float:
    """User + system CPU seconds of this process and its live descendants (the JVM, its Python workers)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def child(points: str, home: str) -> None:
    """One measured Spark run: get the context (cached NPZ), then time the join over all points into a noop sink."""
    os.environ.setdefault("TRANSFERTRAJ_SPARK_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFERTRAJ_SPARK_UI", "false")
    from transfertraj.core.city_config import load_city
    from transfertraj.core.settings import Settings
    from transfertraj.jobs.context_density import add_loaded_context
    from transfertraj.jobs.context_tables import context_npz
    from transfertraj.jobs.spark_session import get_spark

    settings = Settings.load(home=home)
    spark = get_spark("bench-context", settings)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(16 * 1024 * 1024))  # >= 2 tasks per core
    city = load_city("porto", settings)
    t0 = time.perf_counter()
    npz, _ = context_npz(settings, city)
    load_s = time.perf_counter() - t0
    df = spark.read.parquet(points)
    cpu0, t0 = _tree_cpu_s(), time.perf_counter()
    df.transform(add_loaded_context, npz, phi_m=city.phi_m).write.format("noop").mode("overwrite").save()
    join_s = time.perf_counter() - t0
    print(json.dumps({"load_s": load_s, "join_s": join_s, "join_cpu_s": _tree_cpu_s() - cpu0}))


def numpy_rate(ctx, path: Path, phi: float, batch: int = 100_000) -> float:
    """Points/s of the per-point functions in this process alone (one core, no Spark): the peer."""
    import pyarrow.parquet as pq

    from transfertraj.features.context import context_vectors, poi_index
    from transfertraj.features.taxonomy import N_POI

    t = pq.read_table(path, columns=["mx", "my"])
    xy = np.column_stack([t.column("mx").to_numpy(), t.column("my").to_numpy()])
    t0 = time.perf_counter()
    index = poi_index(ctx)
    for lo in range(0, len(xy), batch):
        context_vectors(xy[lo : lo + batch], ctx.lattice, index, phi_m=phi, category_missing=[False] * N_POI)
    return len(xy) / (time.perf_counter() - t0)


def append_results(rows: list[dict], table: str, stamp: str) -> Path:
    """Append the rows to bench/results/context-history.csv (earlier rows keep their columns); the table
    goes to context-<stamp>.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "context-history.csv"
    append_rows(path, rows)
    (RESULTS / f"context-{stamp}.md").write_text(table + "\n")
    return path


def brute_force_rate(ctx_osm, xy: np.ndarray, phi: float) -> float:
    import geopandas as gpd
    import shapely

    pois, roads = ctx_osm.pois, ctx_osm.roads
    geoms = roads.geometry.to_numpy()
    tree = shapely.STRtree(geoms)
    t0 = time.perf_counter()
    for p in gpd.GeoSeries(shapely.points(xy), crs=pois.crs):
        d = pois.geometry.distance(p).to_numpy()
        pois["category"].to_numpy()[d <= phi]
        disc = p.buffer(phi, quad_segs=32)
        hit = tree.query(disc)
        shapely.length(shapely.intersection(geoms[hit], disc))
    return len(xy) / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 k points only")
    parser.add_argument("--sizes", default="1M,10M")
    parser.add_argument("--home", default=None, help="data root (default: TRANSFERTRAJ_HOME)")
    parser.add_argument("--brute-points", type=int, default=1000)
    parser.add_argument("--child", nargs=2, metavar=("POINTS", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from transfertraj.core.city_config import load_city
    from transfertraj.core.settings import Settings
    from transfertraj.features.context import load_city_context
    from transfertraj.jobs.context_tables import ContextNotBuiltError, build_context_tables, context_npz
    from transfertraj.jobs.osm_context import read_osm_context
    from transfertraj.jobs.spark_session import get_spark

    os.environ.setdefault("TRANSFERTRAJ_SPARK_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFERTRAJ_SPARK_UI", "false")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load_start = os.getloadavg()[0]
    settings = Settings.load(home=args.home)
    city = load_city("porto", settings)
    try:
        context_npz(settings, city)[0].unlink()  # so that the cache miss below is measured
    except ContextNotBuiltError:
        print("building Porto's context tables (once) ...", flush=True)
        t0 = time.perf_counter()
        spark = get_spark("bench-context-setup", settings)
        build_context_tables(spark, city, settings)
        spark.stop()
        print(f"  built in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    npz, _ = context_npz(settings, city)  # a cache miss: what the first job after a context change pays
    miss_s = time.perf_counter() - t0
    ctx = load_city_context(npz)

    # the share of real sample points with non-empty context (all 60 k points, numpy path)
    from transfertraj.jobs.context_density import context_vectors, poi_index
    from transfertraj.jobs.context_taxonomy import N_POI, ROAD_CLASSES

    real = _real_porto_xy(city.crs)
    poi, poi_missing, road, road_missing = context_vectors(
        real,
        ctx.lattice,
        poi_index(ctx),
        phi_m=city.phi_m,
        category_missing=[False] * N_POI,
    )
    k = len(ROAD_CLASSES)
    road_ok = ~road_missing & (np.nan_to_num(road[:, :k]).sum(1) > 0)
    poi_ok = ~poi_missing[:, -1] & (np.nan_to_num(poi[:, -1]) > 0)
    print(
        f"real Porto sample points: {len(real):,}; non-empty road context {road_ok.mean():.1%}, "
        f"non-empty POI context {poi_ok.mean():.1%}, both {(road_ok & poi_ok).mean():.1%}; "
        f"outside the extract's coverage: road {road_missing.mean():.1%}, POI {poi_missing[:, -1].mean():.1%}"
    )

    sizes = (
        [100_000]
        if args.quick
        else [int(float(s[:-1]) * 1e6) if s.endswith("M") else int(s) for s in args.sizes.split(",")]
    )
    work = settings.home / "bench" / "context"
    osm = read_osm_context(city, settings)
    sub = real[_covered(ctx, real)]
    sub = sub[np.random.default_rng(1).choice(len(sub), min(args.brute_points, len(sub)), replace=False)]
    brute = brute_force_rate(osm, sub, city.phi_m)

    rows = []
    for n in sizes:
        path = generate_points(ctx, city.crs, n, work / f"generated_porto_{n}.parquet")
        one = numpy_rate(ctx, path, city.phi_m)
        for jit_name, jit in JITS.items():
            load_before = os.getloadavg()[0]
            result, peak = run_child([str(path), str(settings.home)], jit)
            rows.append(_row(stamp, n, jit_name, load_before, result, peak, one, brute, miss_s))
    lines = [
        f"context join, GENERATED Porto points (real points replicated + {JITTER_M:g} m jitter, inside the "
        f"extract), phi {city.phi_m:g} m, {os.cpu_count()} cores, load average {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end ({stamp})",
        "",
        "| points | driver JIT | load | join s | join CPU s | load s | points/s | peak MB | numpy 1 proc points/s "
        "| x target (1 M/s) | x numpy 1 proc | x brute |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['points']:,} | {r['driver_jit']} | {r['load_1min_start']:.1f} | {r['join_s']:.2f} | "
            f"{r['join_cpu_s']:.1f} | {r['load_s']:.2f} | {r['points_per_s']:,} | {r['peak_mb']:,} | "
            f"{r['numpy_1proc_points_per_s']:,} | {r['vs_target']:.2f} | {r['vs_numpy_1proc']:.2f} | {r['vs_brute']:,} |"
        )
    lines += [
        "",
        "load: the 1-minute load average before the child started (2 cores: above 2, other work inflates wall "
        "times; join CPU s much less)",
        f"context load per job (cached NPZ): {rows[-1]['load_s']:.2f} s; building the NPZ from the Delta tables "
        f"(first job after a context change): {miss_s:.1f} s",
        f"brute force (geopandas/shapely, 1 process, {len(sub):,} real points): {brute:,.0f} points/s",
    ]
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\nappended to {append_results(rows, table, stamp)}")
    return 0


def _row(stamp, n, jit_name, load_before, result, peak, one, brute, miss_s) -> dict:
    rate = n / result["join_s"]
    return {
        "date": stamp,
        "host": platform.node(),
        "cores": os.cpu_count(),
        "load_1min_start": round(load_before, 2),
        "load_1min_end": round(os.getloadavg()[0], 2),
        "points": n,
        "driver_jit": jit_name,
        "join_s": round(result["join_s"], 2),
        "join_cpu_s": round(result["join_cpu_s"], 1),
        "load_s": round(result["load_s"], 2),
        "cache_miss_s": round(miss_s, 2),
        "points_per_s": round(rate),
        "peak_mb": round(peak),
        "numpy_1proc_points_per_s": round(one),
        "vs_target": round(rate / TARGET_POINTS_S, 2),
        "vs_numpy_1proc": round(rate / one, 2),
        "vs_brute": round(rate / brute),
        "brute_points_per_s": round(brute),
    }


if __name__ == "__main__":
    raise SystemExit(main())
