"""Ingestion benchmark: points/s and peak memory of the Spark ingestion and its two peers, in one run.

    .venv/bin/uv pip install --python .venv/bin/python -r requirements-bench.txt   # DuckDB, bench only
    .venv/bin/python bench/ingest.py --quick                  # smoke run: 200 k points
    .venv/bin/python bench/ingest.py                          # 1 M, 10 M and 30 M points
    .venv/bin/python bench/ingest.py --sizes 1M,10M --engines spark,duckdb --profile
    .venv/bin/python bench/ingest.py --real sf               # REAL: San Francisco's 21 cabspotting days
    .venv/bin/python bench/ingest.py --sizes 10M --before 7cd80e2 --jvm-profile   # before/after, where the JVM went

Input: GENERATED Porto points (jobs/generate_scale_data.py, real trips shifted in time and space, all
inside the bbox), one delivery date per size, under a work folder (default <home>/bench/ingest).
--real sf adds REAL data: the city's datasets (San Francisco: 21 cabspotting days, about 11 M fixes of a
point log, under the datasets root, TRANSFERTRAJ_DATASETS) hard-linked into one delivery; skipped with
a message when the datasets root or the files are absent. Alone, it runs no generated size.
Engines, each on the same files, each measured in a child process of its own:
  spark   jobs.ingest.ingest_date end to end: landing -> bronze, rejects, silver and a runs row in Delta
  pandas  bench/ingest_pandas.py: the same rules as one single-process pandas/numpy script -> Parquet
  duckdb  bench/ingest_duckdb.py: the same rules as SQL in embedded DuckDB -> Parquet
Every engine's kept points and trajectories are printed side by side: they must agree.

Measured per run:
  seconds    wall time of the child process, start to exit (interpreter, imports, JVM: everything)
  work s     the child's own timer around the work (Spark: ingest_date after the session is up)
  peak MB    the largest sum over the child and all its descendants (the JVM and Spark's Python workers
             included) of each process's PSS, from /proc/<pid>/smaps_rollup sampled every 0.2 s.
             PSS splits shared pages between the processes that share them, so the sum counts the
             memory of the tree once; RSS sums (which double-count shared libraries) are in the CSV.
             A spike shorter than 0.2 s can be missed.
The fixed start-up cost is measured on its own: a child that only starts Spark (JVM + Delta jars from
the Ivy cache) and stops, and a run of each engine on a tiny delivery (2,000 points). Throughput is
judged on 10 M and 30 M; the 1 M run still carries the fixed costs. Ratios are throughput ratios:
engine points/s / pandas points/s (above 1 = faster than pandas), and the same against DuckDB.
Results: a table on stdout with the ratios and the machine's load average (1, 5, 15 min) at start and
end, bench/results/ingest-<timestamp>.{csv,md}, and one dated row per engine and input appended to
bench/results/ingest.csv (so that a regression shows). --profile also writes Spark's
event log and prints the Spark jobs that took longest, by the line of code that started them.
--before COMMIT adds the Spark ingestion of that commit (its code laid out under the work folder, run on
a lake of its own over hard links of the same files) after each Spark run: a before/after in one run.
--jvm-profile records the driver JVM with Java Flight Recorder and prints its samples by component.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import date as Date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ENGINES = ("spark", "pandas", "duckdb")
FIRST_DATE = Date(2013, 7, 1)
TINY_POINTS = 2_000
REAL = {"sf": ("sanfrancisco", "2008-05-17")}  # --real NAME: (city, the delivery date its days land under)


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * mult)


def human(n: int) -> str:
    return f"{n / 1e6:g} M" if n >= 1_000_000 else f"{n / 1e3:g} k"


# ---- measuring a child process tree ---------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc (children files of every thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


def _mem_kb(pid: int) -> tuple[int, int]:
    """(PSS kB, RSS kB) of one process; (0, 0) once it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return pss, rss


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
        return 0


class TreeMemory(threading.Thread):
    """Samples a process tree: peak memory, and the CPU time each process was last seen with (a process
    that ends between two samples loses at most `interval` of CPU)."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_pss_kb = self.peak_rss_kb = self.max_procs = 0
        self.cpu_ticks: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pids = _tree(self.pid)
            for p in pids:
                self.cpu_ticks[p] = max(self.cpu_ticks.get(p, 0), _cpu_ticks(p))
            mems = [_mem_kb(p) for p in pids]
            self.peak_pss_kb = max(self.peak_pss_kb, sum(m[0] for m in mems))
            self.peak_rss_kb = max(self.peak_rss_kb, sum(m[1] for m in mems))
            self.max_procs = max(self.max_procs, len(pids))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure(cmd: list[str], *, env: dict[str, str], timeout: float, log_path: Path, cwd: Path = REPO) -> dict:
    """Run cmd as a child, sample its tree's memory; the child's last stdout line is its JSON result."""
    import resource

    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=cwd, start_new_session=True
        )
        mon = TreeMemory(proc.pid)
        mon.start()
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the child's own process group: the JVM goes with it
            out, _ = proc.communicate()
            out += f'\n{{"error": "timeout after {timeout} s"}}'
        finally:
            mon.stop()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)  # the waited-for tree
    sampled = sum(mon.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"error": f"no result (exit {proc.returncode}); see {log_path}"}
    if proc.returncode and "error" not in result:
        result["error"] = f"exit {proc.returncode}; see {log_path}"
    result.update(
        seconds=wall,
        cpu_s=max(reaped, sampled),
        peak_mb=mon.peak_pss_kb / 1024,
        peak_rss_sum_mb=mon.peak_rss_kb / 1024,
        processes=mon.max_procs,
    )
    return result


# ---- the Spark child --------------------------------------------------------------------------------


def spark_child(args) -> int:
    """Runs in the child: start Spark, ingest one date (or only start, with --startup-only)."""
    import logging

    t_start = time.perf_counter()
    from transfertraj.core.city_config import load_city
    from transfertraj.core.settings import Settings
    from transfertraj.jobs.spark_session import get_spark

    marks: list[tuple[float, str]] = []

    class Marks(logging.Handler):
        def emit(self, record):
            marks.append((time.perf_counter(), record.getMessage()[:160]))

    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("transfertraj").addHandler(Marks())  # jobs and feature_store log as transfertraj.*
    settings = Settings.load(home=Path(args.home), city_dirs=(Path(args.cities),))
    spark = get_spark("bench-ingest", settings)
    spark.range(1).count()
    t_up = time.perf_counter()
    result = {"startup_s": t_up - t_start, "spark": spark.version}
    if not args.startup_only:
        from transfertraj.jobs.ingest import ingest_date

        commits_before = _delta_commits(settings.lake)
        tracker = spark.sparkContext.statusTracker()
        jobs_before = set(tracker.getJobIdsForGroup())
        report = ingest_date(spark, load_city(args.city, settings), args.date, settings)
        t_end = time.perf_counter()
        result.update(
            work_s=t_end - t_up,
            spark_jobs=len(set(tracker.getJobIdsForGroup()) - jobs_before),
            delta_commits=_delta_commits(settings.lake) - commits_before,
            rows_read=report.rows_read,
            rows_rejected=report.rows_rejected,
            points_read=report.points_read,
            points_kept=report.points_kept,
            points_dropped=report.points_dropped,
            points_dropped_by_reason=report.points_dropped_by_reason,
            trajectories_out=report.trajectories_out,
            marks=[(round(t - t_up, 2), m) for t, m in marks],
        )
    spark.stop()
    print(json.dumps(result), flush=True)
    return 0


def _delta_commits(lake: Path) -> int:
    """Commit files in the lake's Delta logs (one per table version)."""
    return sum(1 for _ in Path(lake).glob("*/_delta_log/*.json"))


# ---- the driver -------------------------------------------------------------------------------------


def child_cmd(
    engine: str, *, delivery: Path, out: Path, city_file: Path, date: str, work: Path, startup_only: bool = False
) -> list[str]:
    py = sys.executable
    if engine == "spark":
        cmd = [
            py,
            str(Path(__file__).resolve()),
            "--child-spark",
            "--home",
            str(work / "home"),
            "--cities",
            str(city_file.parent),
            "--city",
            city_file.stem,
            "--date",
            date,
        ]
        return cmd + (["--startup-only"] if startup_only else [])
    script = REPO / "bench" / f"ingest_{engine}.py"
    return [py, str(script), "--input", str(delivery), "--out", str(out), "--city-file", str(city_file), "--date", date]


def summarise_event_log(folder: Path, top: int = 12) -> list[str]:
    """Spark jobs, stages and tasks of each run's event log (<folder>/<run tag>/): totals, then by phase (the
    job description jobs/ingest.py sets per step) and by the call site that started them, longest first.
    Seconds are wall seconds covered by jobs (the union of their spans: adaptive execution runs a query's
    stages as jobs of their own, side by side); task CPU is the executors' CPU time in those jobs."""
    lines = []
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        jobs: dict[int, dict] = {}
        stage_job: dict[int, int] = {}
        for log in (p for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith((".", "appstatus"))):
            with open(log) as f:
                for raw in f:
                    ev = json.loads(raw)
                    kind = ev.get("Event")
                    if kind == "SparkListenerJobStart":
                        props = ev.get("Properties") or {}
                        jobs[ev["Job ID"]] = {
                            "start": ev["Submission Time"],
                            "site": props.get("callSite.short") or "?",
                            "phase": props.get("spark.job.description") or "(no phase)",
                            "stages": 0,
                            "tasks": 0,
                            "cpu_ns": 0,
                        }
                        for sid in ev.get("Stage IDs", []):
                            stage_job[sid] = ev["Job ID"]
                    elif kind == "SparkListenerJobEnd" and ev["Job ID"] in jobs:
                        jobs[ev["Job ID"]]["end"] = ev["Completion Time"]
                    elif kind == "SparkListenerStageCompleted":
                        job = jobs.get(stage_job.get(ev["Stage Info"]["Stage ID"], -1))
                        if job is not None:
                            job["stages"] += 1
                            job["tasks"] += ev["Stage Info"].get("Number of Tasks", 0)
                    elif kind == "SparkListenerTaskEnd":
                        job = jobs.get(stage_job.get(ev.get("Stage ID", -1), -1))
                        if job is not None:
                            job["cpu_ns"] += (ev.get("Task Metrics") or {}).get("Executor CPU Time", 0)
        done = [j for j in jobs.values() if "end" in j]
        first = min((j["start"] for j in done), default=0)
        last = max((j["end"] for j in done), default=0)

        def figures(js: list[dict]) -> str:
            return (
                f"{_covered_s(js):7.1f} s  {len(js):3d} job(s) {sum(j['stages'] for j in js):3d} stage(s) "
                f"{sum(j['tasks'] for j in js):4d} task(s) {sum(j['cpu_ns'] for j in js) / 1e9:6.1f} task CPU s"
            )

        lines.append(f"{run_dir.name}: {figures(done).strip()}; {(last - first) / 1000:.1f} s first job to last")
        for key, title in (("phase", "by phase"), ("site", "by call site")):
            groups: dict[str, list[dict]] = {}
            for j in done:
                groups.setdefault(j[key], []).append(j)
            lines.append(f"  {title}:")
            for name, js in sorted(groups.items(), key=lambda kv: -_covered_s(kv[1]))[:top]:
                lines.append(f"  {figures(js)}  {name}")
    return lines


# Where the driver JVM's samples go, by the first frame of each stack that names one of these (in this
# order: a Parquet write under a Delta commit counts as Parquet). Everything else is "other".
JVM_COMPONENTS = (
    ("Parquet writer (Delta tables)", ("org.apache.parquet.", "shaded.parquet.")),
    ("SHA-256 (line and trip hashes)", ("sun.security.provider.",)),
    ("CSV parser (from_csv)", ("com.univocity.",)),
    (
        "Arrow to/from the Python workers",
        ("org.apache.arrow.", "org.apache.spark.sql.execution.arrow.", "org.apache.spark.sql.execution.python."),
    ),  # fmt: skip
    ("in-memory cache (persist)", ("org.apache.spark.sql.execution.columnar.",)),
    ("Delta log and statistics", ("org.apache.spark.sql.delta.", "io.delta.")),
    ("shuffle", ("org.apache.spark.shuffle.", "org.apache.spark.util.collection.")),
    ("text reading (Hadoop)", ("org.apache.hadoop.",)),
    ("Spark SQL generated code and strings", ("org.apache.spark.sql.catalyst.", "org.apache.spark.unsafe.")),
    ("class loading, JIT and start-up", ("java.util.zip.", "java.lang.ClassLoader", "jdk.internal.loader.")),
)


def jfr_samples(text: str):
    """`jfr print --events jdk.ExecutionSample` output -> (samples by JVM_COMPONENTS, samples by top frame),
    two Counters. A sample counts for the component of the first frame, from the top of its stack, that
    names one."""
    import collections
    import re

    by_component: collections.Counter = collections.Counter()
    by_frame: collections.Counter = collections.Counter()
    for event in text.split("jdk.ExecutionSample {")[1:]:
        frames = [
            re.sub(r"\s+line:.*", "", f.strip())
            for f in event.split("stackTrace = [", 1)[-1].split("]\n", 1)[0].splitlines()
            if f.strip() and not f.strip().startswith("...")
        ]
        if not frames:
            continue
        by_frame[frames[0]] += 1
        by_component[
            next(
                (name for f in frames for name, prefixes in JVM_COMPONENTS if f.startswith(prefixes)),
                "other (JDK, Scala, Spark core)",
            )
        ] += 1
    return by_component, by_frame


def summarise_jfr(path: Path, top: int = 12) -> list[str]:
    """A Java Flight Recorder file (--jvm-profile) -> its CPU samples by JVM_COMPONENTS and by hottest frame,
    read with the JDK's own `jfr print`."""
    try:
        text = subprocess.run(
            ["jfr", "print", "--stack-depth", "64", "--events", "jdk.ExecutionSample", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        return [f"{path.name}: no profile ({err})"]
    by_component, by_frame = jfr_samples(text)
    n = sum(by_frame.values())
    if not n:
        return [f"{path.name}: no samples"]
    lines = [f"{path.stem}: {n} samples of running Java threads (JFR's default sampler; native code not seen)"]
    lines += [f"  {100 * c / n:5.1f} %  {name}" for name, c in by_component.most_common()]
    lines += ["  hottest frames:"] + [f"  {100 * c / n:5.1f} %  {f[:130]}" for f, c in by_frame.most_common(top)]
    return lines


def _covered_s(jobs: list[dict]) -> float:
    """Seconds covered by the jobs' [start, end] spans (ms), overlaps counted once."""
    total, reach = 0, None
    for j in sorted(jobs, key=lambda j: j["start"]):
        start = j["start"] if reach is None else max(j["start"], reach)
        total += max(0, j["end"] - start)
        reach = j["end"] if reach is None else max(reach, j["end"])
    return total / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="comma-separated point counts (default 1M,10M,30M; none with --real)")
    parser.add_argument("--real", choices=sorted(REAL), action="append", default=[], help="also real data (sf)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200k points only")
    parser.add_argument("--engines", default=",".join(ENGINES), help="subset of spark,pandas,duckdb")
    parser.add_argument("--work", type=Path, help="work folder for data and outputs (default <home>/bench/ingest)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results", help="where CSV/MD go")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before one run is killed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up and tiny-input runs")
    parser.add_argument("--profile", action="store_true", help="Spark event log + longest jobs by call site")
    parser.add_argument(
        "--jvm-profile",
        action="store_true",
        help="record each Spark run's driver JVM with Java Flight Recorder (the JDK's own sampler) and "
        "print where its CPU went: by component (Parquet writer, SHA-256, CSV parser, in-memory cache...) and "
        "by hottest frame",
    )
    parser.add_argument("--note", default="", help="conditions to record with the figures (shared cores...)")
    parser.add_argument(
        "--before",
        metavar="COMMIT",
        help="also run the Spark ingestion as of COMMIT (its code checked out under the work folder, its own "
        "lake) on the same files, after each Spark run: engine spark@COMMIT, the before/after in one run",
    )
    # the Spark child (internal)
    parser.add_argument("--child-spark", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--cities", help=argparse.SUPPRESS)
    parser.add_argument("--city", help=argparse.SUPPRESS)
    parser.add_argument("--date", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_spark:
        return spark_child(args)

    from transfertraj.core.city_config import load_city
    from transfertraj.core.settings import Settings
    from transfertraj.jobs.generate_scale_data import MARKER, generate, generated_city_config

    settings = Settings.load()
    work = (args.work or settings.home / "bench" / "ingest").resolve()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s) {sorted(unknown)}")
    if "duckdb" in engines:
        try:
            import duckdb  # noqa: F401
        except ImportError:
            parser.error(
                "DuckDB is missing: .venv/bin/uv pip install --python .venv/bin/python -r requirements-bench.txt"
            )
    sizes_text = args.sizes if args.sizes is not None else ("" if args.real else "1M,10M,30M")
    sizes = [200_000] if args.quick else [parse_size(s) for s in sizes_text.split(",") if s.strip()]
    porto = load_city("porto", settings)
    city_file = generated_city_config(porto, work / "cities")
    env = dict(os.environ, TRANSFERTRAJ_SPARK_UI="false", TRANSFERTRAJ_SPARK_LOG_LEVEL="ERROR", PYTHONUNBUFFERED="1")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    cores = os.cpu_count()
    load_start = os.getloadavg()
    conditions = (
        f"{platform.node()}: {cores} CPU(s), load average {_loads(load_start)} (1, 5, 15 min) at start, "
        f"Python {platform.python_version()}, driver memory {settings.driver_memory}, "
        f"shuffle partitions {settings.shuffle_partitions}. {args.note}"
    ).strip()
    print(f"GENERATED data (jobs/generate_scale_data.py, see {MARKER} in each delivery); work folder {work}")
    print(conditions, flush=True)

    def delivery_for(points: int, index: int) -> tuple[Path, str]:
        day = (FIRST_DATE + timedelta(days=index)).isoformat()
        folder = work / "home" / "landing" / city_file.stem / day
        marker = folder / MARKER
        if not (
            marker.exists()
            and f"points: {points}\n" in marker.read_text()
            and f"seed: {args.seed}\n" in marker.read_text()
        ):
            t = time.perf_counter()
            generate(city=porto, out=folder, points=points, seed=args.seed, date=day)
            print(f"generated {human(points)} points in {time.perf_counter() - t:.1f} s -> {folder}", flush=True)
        return folder, day

    before = before_tree(args.before, work) if args.before else None
    if before is not None:
        engines = [x for e in engines for x in ([e, before.name] if e == "spark" else [e])]

    def one(
        engine: str, points: int, folder: Path, day: str, tag: str, startup_only: bool = False, city: Path | None = None
    ) -> dict:
        out = work / "out" / engine / tag
        cmd = child_cmd(
            "spark" if engine.startswith("spark@") else engine,
            delivery=folder,
            out=out,
            city_file=city or city_file,
            date=day,
            work=work,
            startup_only=startup_only,
        )
        run_env = dict(env)
        if engine.startswith("spark@"):  # the commit's own code and child, on a lake of its own
            cmd[1] = str(before / "bench" / "ingest.py")
            cmd[cmd.index("--home") + 1] = str(_linked_home(work, before.name, folder))
            # ... in its Python workers too: they import the functions the driver ships by module name, with
            # their working folder first on sys.path (this checkout's transfertraj/ would win from REPO)
            run_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(before), env.get("PYTHONPATH")]))
        if args.profile and engine.startswith("spark"):
            log_dir = work / "eventlog" / (tag if engine == "spark" else f"{tag}-{engine}")
            shutil.rmtree(log_dir, ignore_errors=True)
            log_dir.mkdir(parents=True)
            extra = f"spark.eventLog.enabled=true,spark.eventLog.compress=false,spark.eventLog.dir={log_dir.as_uri()}"
            run_env["TRANSFERTRAJ_SPARK_CONF"] = ",".join(filter(None, [env.get("TRANSFERTRAJ_SPARK_CONF"), extra]))
        if args.jvm_profile and engine.startswith("spark"):
            from transfertraj.jobs.spark_session import DRIVER_JIT

            jfr = work / "jfr" / f"{tag}-{engine}.jfr"
            jfr.parent.mkdir(parents=True, exist_ok=True)
            jfr.unlink(missing_ok=True)
            extra = f"spark.driver.extraJavaOptions={DRIVER_JIT} -XX:StartFlightRecording=filename={jfr}"
            run_env["TRANSFERTRAJ_SPARK_CONF"] = ",".join(filter(None, [run_env.get("TRANSFERTRAJ_SPARK_CONF"), extra]))
        log_path = work / "logs" / f"{engine}-{tag}.log"
        r = measure(
            cmd,
            env=run_env,
            timeout=args.timeout,
            log_path=log_path,
            cwd=before if engine.startswith("spark@") else REPO,
        )
        r.update(engine=engine, size=points, tag=tag)
        state = r.get("error") or f"{r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB"
        print(f"  {engine:6s} {tag:8s} {state}", flush=True)
        return r

    results: list[dict] = []
    startup: dict[str, dict] = {}

    def write(final: bool) -> None:
        """The results so far, rewritten after each input (a run stopped early keeps what it measured)."""
        nonlocal load_end
        load_end = os.getloadavg()
        end_note = f"; load average at the end: {_loads(load_end)}." if final else " (partial: still running)"
        table = build_table(results, startup)
        md = render_markdown(table, startup, conditions + end_note, sizes)
        check = agreement(results) + ratio_lines(table)
        if final:
            print()
            print(md)
            for line in check:
                print(line)
        args.results.mkdir(parents=True, exist_ok=True)
        with open(base.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0].keys()) if table else ["engine"])
            w.writeheader()
            w.writerows(table)
        extra = [""] + check
        if args.jvm_profile:
            prof = [line for f in sorted((work / "jfr").glob("*.jfr")) for line in summarise_jfr(f)]
            if final:
                print("\n".join(prof))
            extra += ["", "Driver JVM CPU samples (--jvm-profile, Java Flight Recorder):", "```", *prof, "```"]
        if args.profile:
            prof = summarise_event_log(work / "eventlog")
            if final:
                print("\n".join(prof))
            extra += ["", "Spark jobs by call site (--profile):", "```", *prof, "```"]
        spark_marks = [r for r in results if r["engine"].startswith("spark") and r.get("marks")]
        for r in spark_marks:
            extra += [
                "",
                f"{r['engine'].replace('spark', 'Spark')} {human(r['size'])}: log marks (s after the session was up):",
                "```",
                *(f"{t:8.1f}  {m}" for t, m in r["marks"]),
                "```",
            ]
        base.with_suffix(".md").write_text(md + "\n".join(extra) + "\n")

    base = args.results / f"ingest-{stamp}"
    load_end = load_start
    # Throughput first (the sizes), then the fixed costs, then real data: each input's rows are written
    # as soon as its engines are done.
    for i, points in enumerate(sizes):
        folder, day = delivery_for(points, i)
        print(f"{human(points)} points:", flush=True)
        for e in engines:
            results.append(one(e, points, folder, day, human(points).replace(" ", "")))
        write(final=False)
    if not args.no_startup:
        print("fixed costs:", flush=True)
        folder, day = delivery_for(TINY_POINTS, 99)
        if "spark" in engines:
            startup["spark-start"] = one("spark", 0, folder, day, "start", startup_only=True)
        for e in engines:
            startup[e] = one(e, TINY_POINTS, folder, day, "tiny")
        folder, day = delivery_for(TINY_POINTS, 100)
        for e in (e for e in engines if e.startswith("spark")):  # the next night: a new date into that lake
            startup[f"{e} next night"] = one(e, TINY_POINTS, folder, day, "night")
        write(final=False)
    for name in args.real:
        found = real_delivery(name, settings, work)
        if found is None:
            continue
        folder, day, real_city, points = found
        print(f"REAL {name}: {human(points)} points ({folder}):", flush=True)
        for e in engines:
            r = one(e, points, folder, day, f"real-{name}", city=real_city)
            results.append(r | {"label": f"REAL {name}"})
        write(final=False)
    write(final=True)
    table = build_table(results, startup)

    append_history(args.results / "ingest.csv", stamp, load_start, load_end, table, args.note)
    print(f"\nresults: {base.with_suffix('.csv')} and {base.with_suffix('.md')}")
    return 1 if any(r.get("error") for r in results) else 0


def before_tree(commit: str, work: Path) -> Path:
    """The code of `commit` with its bench/ (bench/code_tree.py): work/spark@<short>/. Its child runs from
    there, so it runs the commit's ingestion, not this checkout's."""
    from bench.code_tree import code_tree

    tree = code_tree(commit, work, prefix="spark@")
    print(f"before: the Spark ingestion of {tree.name.removeprefix('spark@')} from {tree}", flush=True)
    return tree


def _linked_home(work: Path, name: str, delivery: Path) -> Path:
    """work/home-<name>: a home of its own whose landing holds hard links to `delivery`'s files."""
    home = work / f"home-{name}"
    target = home / delivery.relative_to(work / "home")
    target.mkdir(parents=True, exist_ok=True)
    for f in delivery.iterdir():
        if f.is_file() and not (target / f.name).exists():
            os.link(f, target / f.name)
    return home


def _loads(loads: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.1f}" for x in loads)


def real_delivery(name: str, settings, work: Path) -> tuple[Path, str, Path, int] | None:
    """(delivery folder, date, city file, points) of --real NAME: the city's dataset files (city.raw.datasets
    under the datasets root) hard-linked into one delivery folder. None, with a message, when absent."""
    import glob

    from transfertraj.core.city_config import city_to_yaml, load_city, load_city_file

    city_name, day = REAL[name]
    city = load_city(city_name, settings)
    root = settings.datasets
    patterns = city.raw.datasets or []
    files = sorted(p for pat in patterns for p in glob.glob(str(root / pat))) if root else []
    if not files:
        where = f"{root}/{' '.join(patterns)}" if root else "no datasets root (set TRANSFERTRAJ_DATASETS)"
        print(f"REAL {name}: skipped, no dataset files found ({where})", flush=True)
        return None
    folder = work / "home" / "landing" / city.name / day
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = folder / Path(f).name
        if not target.exists():
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)
    cities = work / "cities-real"
    cities.mkdir(parents=True, exist_ok=True)
    city_file = cities / f"{city.name}.yaml"
    city_file.write_text(
        f"# REAL data: {city.name} as configured (bench/ingest.py --real {name}).\n" + city_to_yaml(city)
    )
    load_city_file(city_file)
    count = folder / "_points.txt"  # data lines of the files (a point log: one fix a line), counted once
    if not count.exists():
        import gzip

        n = 0
        for f in sorted(folder.glob("*.csv*")):
            with gzip.open(f, "rb") if f.name.endswith(".gz") else open(f, "rb") as fh:
                n += sum(chunk.count(b"\n") for chunk in iter(lambda fh=fh: fh.read(1 << 24), b"")) - 1
        count.write_text(str(n))
    return folder, day, city_file, int(count.read_text())


HISTORY_FIELDS = ["date", "load_start", "load_end", "note"]


def append_history(path: Path, stamp: str, load_start, load_end, table: list[dict], note: str) -> None:
    """One dated row per engine and input appended to bench/results/ingest.csv (bench/history.py: a column
    a later run adds is blank in the earlier rows)."""
    from bench.history import append_rows

    rows = [
        {"date": stamp, "load_start": _loads(load_start), "load_end": _loads(load_end), "note": note, **r}
        for r in table
    ]
    if rows:
        append_rows(path, rows)


def build_table(results: list[dict], startup: dict[str, dict]) -> list[dict]:
    rows = []
    for r in results:
        peers = {
            x["engine"]: x
            for x in results
            if x["size"] == r["size"] and x.get("label") == r.get("label") and not x.get("error")
        }
        pps = r["size"] / r["seconds"] if not r.get("error") else None
        work = r.get("work_s")
        row = {
            "size": r["size"],
            "input": r.get("label", "GENERATED Porto"),
            "engine": r["engine"],
            "seconds": round(r["seconds"], 2),
            "cpu_s": round(r["cpu_s"], 1),
            "work_s": round(work, 2) if work else None,
            "points_per_s": round(pps) if pps else None,
            "points_per_s_work": round(r["size"] / work) if work else None,
            "peak_mb": round(r["peak_mb"]),
            "peak_rss_sum_mb": round(r["peak_rss_sum_mb"]),
            "processes": r["processes"],
        }
        for peer in ("pandas", "duckdb"):
            p = peers.get(peer)
            row[f"vs_{peer}"] = round(p["seconds"] / r["seconds"], 2) if p and pps else None
            row[f"cpu_vs_{peer}"] = round(p["cpu_s"] / r["cpu_s"], 2) if p and pps and r["cpu_s"] else None
        row.update(
            points_kept=r.get("points_kept"),
            trajectories=r.get("trajectories_out"),
            spark_jobs=r.get("spark_jobs"),
            delta_commits=r.get("delta_commits"),
            error=r.get("error", ""),
        )
        rows.append(row)
    for key, r in startup.items():
        rows.append(
            {
                "size": r["size"],
                "input": "GENERATED Porto",
                "engine": key if key.endswith("start") else f"{key} (tiny)",
                "seconds": round(r["seconds"], 2),
                "cpu_s": round(r["cpu_s"], 1),
                "work_s": round(r["work_s"], 2) if r.get("work_s") else None,
                "points_per_s": None,
                "points_per_s_work": None,
                "peak_mb": round(r["peak_mb"]),
                "peak_rss_sum_mb": round(r["peak_rss_sum_mb"]),
                "processes": r["processes"],
                "vs_pandas": None,
                "vs_duckdb": None,
                "cpu_vs_pandas": None,
                "cpu_vs_duckdb": None,
                "points_kept": r.get("points_kept"),
                "trajectories": r.get("trajectories_out"),
                "spark_jobs": r.get("spark_jobs"),
                "delta_commits": r.get("delta_commits"),
                "error": r.get("error", ""),
            }
        )
    return rows


def render_markdown(table: list[dict], startup: dict[str, dict], conditions: str, sizes: list[int]) -> str:
    fmt = lambda v, spec="": "" if v is None else format(v, spec)  # noqa: E731
    out = [
        "## Ingestion benchmark (GENERATED Porto data; REAL rows say so)",
        "",
        conditions,
        "",
        "| size | engine | seconds | CPU s | work s | points/s | peak MB | vs pandas | vs DuckDB | CPU vs pandas "
        "| CPU vs DuckDB | kept points | trajectories | Spark jobs | Delta commits |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        size = human(r["size"]) if r["size"] else "-"
        size = f"{r['input']} {size}" if r["input"].startswith("REAL") else size
        if r["error"]:
            out.append(f"| {size} | {r['engine']} | {r['seconds']:.1f} | FAILED: {r['error']} |||||||||||||")
            continue
        out.append(
            f"| {size} | {r['engine']} | {r['seconds']:.1f} | {r['cpu_s']:.1f} | {fmt(r['work_s'], '.1f')} "
            f"| {fmt(r['points_per_s'], ',')} | {r['peak_mb']:,} | {fmt(r['vs_pandas'], '.2f')} "
            f"| {fmt(r['vs_duckdb'], '.2f')} | {fmt(r['cpu_vs_pandas'], '.2f')} | {fmt(r['cpu_vs_duckdb'], '.2f')} "
            f"| {fmt(r['points_kept'], ',')} | {fmt(r['trajectories'], ',')} | {fmt(r['spark_jobs'])} "
            f"| {fmt(r['delta_commits'])} |"
        )
    out += [
        "",
        "seconds: child process wall time, start-up included; CPU s: the CPU time of the child's process tree "
        "(user + system; on a machine shared with other work, the figure that load changes least); work s: "
        "the child's timer around the work only (Spark: after the session is up). vs pandas / vs DuckDB: "
        "throughput ratio on seconds (above 1 = faster than the peer); CPU vs: the peer's CPU s / this "
        "engine's (above 1 = less CPU than the peer; pandas uses one core, Spark and DuckDB both). peak MB: peak of the summed PSS of the child process tree (JVM and Python "
        "workers included), sampled every 0.2 s. Spark jobs: the jobs the ingestion started (Spark's status tracker); "
        "Delta commits: the commit files it added to the lake's Delta logs.",
    ]
    if "spark-start" in startup:
        s = startup["spark-start"]
        out.append(
            f"Fixed cost of Spark: {s['seconds']:.1f} s for a process that only starts the session "
            f"(JVM + Delta jars from the Ivy cache: {s.get('startup_s', 0):.1f} s inside it) and stops."
        )
    return "\n".join(out) + "\n"


def ratio_lines(table: list[dict]) -> list[str]:
    """Spark's throughput against each peer, per input (wall seconds of the child processes)."""
    return [
        f"{r['input']} {human(r['size'])}: {r['engine'].replace('spark', 'Spark')} is {r['vs_pandas']}x pandas"
        + (f", {r['vs_duckdb']}x DuckDB" if r["vs_duckdb"] is not None else "")
        + f" on wall time; {r['cpu_vs_pandas']}x pandas"
        + (f", {r['cpu_vs_duckdb']}x DuckDB" if r["cpu_vs_duckdb"] is not None else "")
        + " on CPU time"
        for r in table
        if r["engine"].startswith("spark") and r["vs_pandas"] is not None
    ]


def agreement(results: list[dict]) -> list[str]:
    """The engines must keep the same points and trajectories from the same input."""
    lines = []
    for size in sorted({r["size"] for r in results}):
        got = {
            r["engine"]: (r.get("points_kept"), r.get("trajectories_out"))
            for r in results
            if r["size"] == size and not r.get("error")
        }
        if len(set(got.values())) > 1:
            lines.append(f"DISAGREEMENT at {human(size)}: (kept points, trajectories) {got}")
        elif got:
            lines.append(f"{human(size)}: all engines agree: {next(iter(got.values()))} (kept points, trajectories)")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
