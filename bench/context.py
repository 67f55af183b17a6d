"""Context join benchmark: points/s of featurize on GENERATED Porto trajectories, as the pipeline runs it.

    .venv/bin/python bench/context.py --quick                  # 100 k points, a few minutes
    .venv/bin/python bench/context.py --sizes 10M              # issue #18's size
    .venv/bin/python bench/context.py --sizes 10M --before 7cd80e2   # and the job of an earlier commit

Needs Porto's context tables (built here first if absent: `python -m jobs.context_tables --city porto`,
about a minute). Input: GENERATED trajectories, the real trips of the Porto taxi sample (their lengths,
points and start times), each copy moved by one Gaussian offset (25 m) and given a random day of July
2013, points outside the extract's road and POI coverage dropped; written once per size as silver's
trajectory rows (every silver column; one date), committed as a silver Delta table of a data root of the
benchmark's own (<home>/bench/context/home_<n>: SILVER_FILES files as the ingestion writes them, the
context tables linked from <home>), and, for the point-row shape, as the same points one row each
(point_id, mx, my).

Measured, each run in a child process of its own (JVM and Python workers are its descendants):
  shape      `trajectory rows`: jobs.featurize.featurize_date end to end, as the pipeline runs it: silver
             at its pinned version -> every feature of every point (metric x/y, temporal, POI/road context,
             relative fields, lists per trip) -> the features partition committed to a features table
             (deleted before each run, so each run writes it from nothing).
             `point rows`: read the point rows -> add_loaded_context (the context vectors only) -> noop:
             the join as the pipeline ran it before issue #18 (one Spark row per point; before, the job also
             exploded and regrouped the trips, not counted here).
             `before <commit>` (--before): featurize_date of that commit's code (bench/code_tree.py, first
             on the child's PYTHONPATH) on the same lake.
  join s     the run above (featurize_date's whole call; the Spark session already up)
  join CPU s the CPU time of the child's process tree (driver, JVM, Python workers) over the run: on 2
             shared cores the figure that other work changes least
  load s     what a job spends getting the city's context (jobs.context_tables.context_npz: the cached
             NPZ of the tables' current versions): a fixed cost per job, not per point
  peak MB    the largest sum of PSS over the child and all its descendants, sampled every 0.2 s
Each run goes twice, one child each, differing only in the driver JVM's JIT (in local mode the driver
is the executor: it turns every Arrow batch the Python workers return into rows): `C1`, the jobs' default
(jobs/spark_session.DRIVER_JIT, chosen for short nightly jobs), and `C2`, the full tiered JIT
(TRANSFERTRAJ_SPARK_CONF=spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=4).
Also measured once per size, in this one Python process, no Spark, one core (the single-process peers):
`numpy ctx` the context vectors of all the points (what `point rows` computes), `numpy all` every
feature of every trip (features.trajectory.trajectory_features over the same silver rows, in batches
of 10,000 trips: what `trajectory rows` computes). And once: `cache miss s`, building that NPZ from
the Delta tables (the first job after the context tables change pays it).
Ratios printed: points/s over the 1 M points/s target, over the single-process peer of the same work,
and over brute force: the geopandas/shapely computation the tests compare against (per point: distances
to all POIs, disc buffer intersected with the roads), on a subsample, single process. Also printed: the
share of the real Porto sample points with non-empty road and POI context, and the machine's load
average (2 shared cores: above 2, other work inflates every time).

Results: a table on stdout, appended as rows to bench/results/context-history.csv (one row per size,
shape and JIT, dated, with the load), and the table as bench/results/context-<timestamp>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CODE_ENV = "TRANSFERTRAJ_BENCH_CODE"  # a child measuring an earlier commit imports transfertraj from there
if os.environ.get(CODE_ENV):
    sys.path.insert(0, os.environ[CODE_ENV])

from bench.code_tree import code_tree  # noqa: E402
from bench.history import append_rows  # noqa: E402

JITTER_M = 25.0
TARGET_POINTS_S = 1_000_000  # issue #18: at 10 M points on 2 cores
RESULTS = REPO / "bench" / "results"
TRIPS_PER_ROW_GROUP = 20_000
JULY_2013 = 1372636800  # 2013-07-01 00:00 UTC: generated trips start on a random day of the month
DATE = "2013-07-01"  # the generated silver's delivery date (one partition)
SILVER_FILES = 4  # silver's files in the generated lake: one per cleaning task of an ingestion on 2 cores


def _real_porto_trips(crs: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy (n, 2) metres, offsets (trips + 1), start ts per trip) of the Porto taxi sample's trips."""
    import pandas as pd
    from pyproj import Transformer

    df = pd.read_csv(REPO / "data" / "porto" / "taxi_sample.csv", usecols=["TIMESTAMP", "POLYLINE"])
    trips = [json.loads(s) for s in df["POLYLINE"]]
    keep = [i for i, t in enumerate(trips) if len(t) >= 2]
    lonlat = np.array([p for i in keep for p in trips[i]], dtype=float)
    offsets = np.concatenate([[0], np.cumsum([len(trips[i]) for i in keep])])
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
    return np.column_stack([x, y]), offsets, df["TIMESTAMP"].to_numpy(dtype=np.int64)[keep]


def _real_porto_xy(crs: str) -> np.ndarray:
    return _real_porto_trips(crs)[0]


def _covered(ctx, xy: np.ndarray) -> np.ndarray:
    from transfertraj.features.context import interpolate

    _, _, _, road_ok, poi_ok = interpolate(ctx.lattice, xy[:, 0], xy[:, 1])
    return road_ok & poi_ok


def generate_trips(ctx, crs: str, n: int, folder: Path, seed: int = 0) -> tuple[Path, Path, int]:
    """GENERATED: (silver rows, point rows, trips) of n points: copies of the real Porto trips (lengths,
    points, 15 s apart as the sample's), each moved by one Gaussian offset, on a random day of July
    2013, points outside the extract's coverage dropped. Written once per size and seed."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyproj import Transformer

    silver, points = folder / f"silver_{n}_{seed}.parquet", folder / f"points_{n}_{seed}.parquet"
    if silver.exists() and points.exists():
        return silver, points, pq.read_metadata(silver).num_rows
    base, offsets, start = _real_porto_trips(crs)
    lengths = np.diff(offsets)
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(lengths), 2 * n // int(lengths.mean()) + 10)
    chosen = chosen[: np.searchsorted(np.cumsum(lengths[chosen]), 1.6 * n) + 1]  # enough after the drops
    trip = np.repeat(np.arange(len(chosen)), lengths[chosen])
    first = np.repeat(offsets[chosen], lengths[chosen])
    idx = np.arange(len(trip)) - np.repeat(np.cumsum(lengths[chosen]) - lengths[chosen], lengths[chosen])
    xy = base[first + idx] + rng.normal(0.0, JITTER_M, (len(chosen), 2))[trip]
    ts = (start[chosen] % 86_400 + JULY_2013 + 86_400 * rng.integers(0, 31, len(chosen)))[trip] + 15 * idx
    keep = _covered(ctx, xy)
    keep &= np.cumsum(keep) <= n
    xy, ts, trip = xy[keep], ts[keep], trip[keep]
    if len(xy) < n:
        raise RuntimeError(f"generated {len(xy)} points, wanted {n}")
    trip_ids, counts = np.unique(trip, return_counts=True)  # trips are contiguous and in order
    list_offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xy[:, 0], xy[:, 1])
    first_ts = ts[np.concatenate([[0], np.cumsum(counts)[:-1]])]
    last_ts = ts[np.cumsum(counts) - 1]
    k = len(trip_ids)
    same = trip[1:] == trip[:-1]
    step = np.hypot(*np.diff(xy, axis=0).T)[same]  # metres in the city's UTM, within each trip
    length = np.bincount(np.searchsorted(trip_ids, trip[1:][same]), weights=step, minlength=k)
    instant = pa.timestamp("us", tz="UTC")
    table = pa.table(  # silver's columns (jobs/schemas.SILVER_SCHEMA), in its order
        {
            "trip_id": pa.array([f"gen-{i}" for i in trip_ids]),
            "vehicle_key": pa.array(["generated"] * k),
            "start_ts": pa.array(first_ts * 1_000_000, instant),
            "end_ts": pa.array(last_ts * 1_000_000, instant),
            "n_points": pa.array(counts.astype(np.int32)),
            "duration_s": pa.array((last_ts - first_ts).astype(np.int64)),
            "length_m": pa.array(length),
            "ts": pa.ListArray.from_arrays(list_offsets, pa.array(ts.astype(np.int64))),
            "lon": pa.ListArray.from_arrays(list_offsets, pa.array(np.asarray(lon, dtype=np.float64))),
            "lat": pa.ListArray.from_arrays(list_offsets, pa.array(np.asarray(lat, dtype=np.float64))),
            "source_file": pa.array(["generated"] * k),
            "city": pa.array(["porto"] * k),
            "date": pa.array([DATE] * k),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, silver, row_group_size=TRIPS_PER_ROW_GROUP)
    flat = pa.table({"point_id": np.arange(n, dtype=np.int64), "mx": xy[:, 0], "my": xy[:, 1]})
    pq.write_table(flat, points, row_group_size=1_000_000)
    return silver, points, k


def silver_lake(silver: Path, home: Path, context_home: Path) -> Path:
    """A data root whose lake holds the GENERATED silver rows as silver's Delta table (SILVER_FILES files
    of row groups of TRIPS_PER_ROW_GROUP trips, committed as the ingestion commits them: arrow_parts), and
    the context tables of `context_home` (links to them and to its NPZ cache). Made once per size."""
    import pyarrow.parquet as pq

    from transfertraj.feature_store.arrow_parts import PartSink, commit_parts
    from transfertraj.jobs.schemas import SILVER_SCHEMA, delta_arrow_schema

    lake = home / "lake"
    if not (lake / "silver" / "_delta_log").is_dir():
        by = ("city", "date")
        rows = pq.read_table(silver)
        sink = PartSink(
            str(lake / "silver"), {"city": "porto", "date": DATE}, delta_arrow_schema(SILVER_SCHEMA, without=by)
        )
        parts, per_file = [], -(-rows.num_rows // SILVER_FILES)
        for i in range(SILVER_FILES):
            with sink.writer(f"{i:05d}") as w:
                for lo in range(i * per_file, min((i + 1) * per_file, rows.num_rows), TRIPS_PER_ROW_GROUP):
                    w.write(rows.slice(lo, min(TRIPS_PER_ROW_GROUP, (i + 1) * per_file - lo)))
            parts += w.summary().to_pylist()
        commit_parts(sink, parts, partition_by=by, user_metadata="GENERATED by bench/context.py")
    for name in ("context_pois", "context_grid", "context_roads"):
        if not (lake / name).exists() and (context_home / "lake" / name).exists():
            (lake / name).symlink_to(context_home / "lake" / name)
    (home / "cache").mkdir(exist_ok=True)
    if not (home / "cache" / "context").exists():
        (context_home / "cache" / "context").mkdir(parents=True, exist_ok=True)
        (home / "cache" / "context").symlink_to(context_home / "cache" / "context")
    return home


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


def run_child(args: list[str], jit: str | None = None, code: Path | None = None) -> tuple[dict, float]:
    """Run this script as a child (--child ...), sampling the PSS of its whole process tree. `jit`: the driver
    JVM's JIT options (added to TRANSFERTRAJ_SPARK_CONF), None for the jobs' default; `code`: a code_tree
    the child imports transfertraj from (None: this tree)."""
    env = dict(os.environ)
    if code is not None:  # the driver (CODE_ENV, ahead of this tree) and Spark's Python workers (PYTHONPATH)
        env[CODE_ENV] = str(code)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p)
    if jit:
        extra = f"spark.driver.extraJavaOptions={jit}"
        env["TRANSFERTRAJ_SPARK_CONF"] = ",".join(c for c in (env.get("TRANSFERTRAJ_SPARK_CONF"), extra) if c)
    # the Python workers put their working directory ahead of PYTHONPATH: start an earlier commit's in its tree
    cwd = code if code is not None else None
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
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


def child(shape: str, data: str, home: str) -> None:
    """One measured Spark run: get the context (cached NPZ), then time `shape`: `trajectory` = the job
    featurize_date on the silver of the data root `data` (silver_lake; its features table deleted first,
    so that every run writes it from nothing), `points` = the context join on point rows into a noop sink."""
    os.environ.setdefault("TRANSFERTRAJ_SPARK_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFERTRAJ_SPARK_UI", "false")
    import transfertraj
    from transfertraj.core.city_config import load_city
    from transfertraj.core.settings import Settings
    from transfertraj.jobs.context_density import add_loaded_context
    from transfertraj.jobs.context_tables import context_npz
    from transfertraj.jobs.featurize import featurize_date
    from transfertraj.jobs.spark_session import get_spark

    settings = Settings.load(home=data if shape == "trajectory" else home)
    spark = get_spark("bench-context", settings)
    city = load_city("porto", settings)
    t0 = time.perf_counter()
    npz, _ = context_npz(settings, city)
    load_s = time.perf_counter() - t0
    trips = None
    if shape == "points":  # as this benchmark ran the point-row join before issue #18
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
        spark.conf.set("spark.sql.files.maxPartitionBytes", str(16 * 1024 * 1024))  # >= 2 tasks per core
        df = spark.read.parquet(data)
        cpu0, t0 = _tree_cpu_s(), time.perf_counter()
        df.transform(add_loaded_context, npz, phi_m=city.phi_m).write.format("noop").mode("overwrite").save()
    else:
        shutil.rmtree(Path(data) / "lake" / "features", ignore_errors=True)
        cpu0, t0 = _tree_cpu_s(), time.perf_counter()
        trips = featurize_date(spark, city, DATE, settings)["trajectories"]
    join_s = time.perf_counter() - t0
    code = str(Path(transfertraj.__file__).parent)
    print(
        json.dumps(
            {"load_s": load_s, "join_s": join_s, "join_cpu_s": _tree_cpu_s() - cpu0, "code": code, "trips": trips}
        )
    )


def features_rate(ctx, city, silver: Path, batch: int = 10_000) -> float:
    """Points/s of every feature of every trip in this process alone (one core, no Spark): what the
    trajectory-row job computes, the single-process peer."""
    import pyarrow.parquet as pq

    from transfertraj.features.context import poi_index
    from transfertraj.features.trajectory import trajectory_features

    table = pq.read_table(silver, columns=["ts", "lon", "lat"])
    t0 = time.perf_counter()
    index = poi_index(ctx)
    for rows in table.to_batches(max_chunksize=batch):
        trajectory_features(
            rows,
            crs=city.crs,
            timezone=city.timezone,
            context=ctx,
            tree=index,
            phi_m=city.phi_m,
            categories_covered=city.osm.poi_categories_covered,
        )
    n = sum(len(c.flatten()) for c in table.column("ts").chunks)
    return n / (time.perf_counter() - t0)


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
    parser.add_argument("--shapes", default="trajectory,points", help="trajectory rows, point rows, or both")
    parser.add_argument("--jits", default=",".join(JITS), help="driver JITs to run each shape under")
    parser.add_argument("--before", metavar="COMMIT", help="also the trajectory rows through this commit's featurize")
    parser.add_argument("--child", nargs=3, metavar=("SHAPE", "DATA", "HOME"), help=argparse.SUPPRESS)
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

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    here = head.stdout.strip() or "?"
    runs = [(shape, here, None) for shape in args.shapes.split(",")]
    if args.before:
        runs.append(("trajectory", args.before, code_tree(args.before, work)))
    rows = []
    for n in sizes:
        silver, points, trips = generate_trips(ctx, city.crs, n, work)
        lake_home = silver_lake(silver, work / f"home_{n}", settings.home)
        peers = {"points": numpy_rate(ctx, points, city.phi_m), "trajectory": features_rate(ctx, city, silver)}
        for shape, code, tree in runs:
            for jit_name in args.jits.split(","):
                load_before = os.getloadavg()[0]
                data = lake_home if shape == "trajectory" else points
                result, peak = run_child([shape, str(data), str(settings.home)], JITS[jit_name], tree)
                if tree is not None and not result["code"].startswith(str(tree)):
                    raise RuntimeError(f"the child ran {result['code']}, not {tree}")
                if shape == "trajectory" and result["trips"] != trips:
                    raise RuntimeError(f"featurize wrote {result['trips']} trajectories, silver holds {trips}")
                rows.append(
                    _row(stamp, n, trips, shape, code, jit_name, load_before, result, peak, peers, brute, miss_s)
                )
    lines = [
        f"featurize / context join, GENERATED Porto trips (real trips copied, moved {JITTER_M:g} m, inside the "
        f"extract), phi {city.phi_m:g} m, {os.cpu_count()} cores, load average {load_start:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end ({stamp})",
        "",
        "| points | trips | shape | code | driver JIT | load | join s | join CPU s | load s | points/s | peak MB "
        "| 1 proc points/s | x target (1 M/s) | x 1 proc | x brute |",
        "|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['points']:,} | {r['trips']:,} | {r['shape']} | {r['code']} | {r['driver_jit']} | "
            f"{r['load_1min_start']:.1f} | {r['join_s']:.2f} | {r['join_cpu_s']:.1f} | {r['load_s']:.2f} | "
            f"{r['points_per_s']:,} | {r['peak_mb']:,} | {r['peer_1proc_points_per_s']:,} | {r['vs_target']:.2f} | "
            f"{r['vs_1proc']:.2f} | {r['vs_brute']:,} |"
        )
    lines += [
        "",
        "shape: `trajectory rows` = featurize_date end to end (silver at a pinned version -> every feature, lists "
        "per trip -> the features partition committed), as the pipeline runs it; `point rows` = the context "
        "vectors alone on one Spark row per point into a noop sink, as it ran before issue #18",
        "1 proc: the same work in one Python process, no Spark (trajectory rows: every feature of every trip; "
        "point rows: the context vectors)",
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


def _row(stamp, n, trips, shape, code, jit_name, load_before, result, peak, peers, brute, miss_s) -> dict:
    rate = n / result["join_s"]
    peer = peers[shape]
    return {
        "date": stamp,
        "host": platform.node(),
        "cores": os.cpu_count(),
        "load_1min_start": round(load_before, 2),
        "load_1min_end": round(os.getloadavg()[0], 2),
        "points": n,
        "trips": trips,
        "shape": f"{shape} rows",
        "code": code,
        "driver_jit": jit_name,
        "join_s": round(result["join_s"], 2),
        "join_cpu_s": round(result["join_cpu_s"], 1),
        "load_s": round(result["load_s"], 2),
        "cache_miss_s": round(miss_s, 2),
        "points_per_s": round(rate),
        "peak_mb": round(peak),
        "numpy_1proc_points_per_s": round(peers["points"]),
        "features_1proc_points_per_s": round(peers["trajectory"]),
        "peer_1proc_points_per_s": round(peer),
        "vs_target": round(rate / TARGET_POINTS_S, 2),
        "vs_1proc": round(rate / peer, 2),
        "vs_brute": round(rate / brute),
        "brute_points_per_s": round(brute),
    }


if __name__ == "__main__":
    raise SystemExit(main())
