"""A backfill through the real nightly DAG: one `nightly_ingest_<city>` run per delivery date, in date order.

    transfertraj backfill --city sanfrancisco --start 2008-05-17 --end 2008-06-06
    transfertraj backfill --city porto --all-landed --out reports/backfill/porto.md

This is what Airflow's catchup does for the missed intervals of a DAG, run here without a scheduler: each date
is one DAG run executed with `dag.test()` in this process (the demo's way, SQLite metadata under the data root),
so Spark starts once for the whole range and every run is recorded in Airflow's metadata database with its
logical date. On a deployment with a scheduler, `airflow backfill create --dag-id nightly_ingest_<city>
--from-date .. --to-date ..` makes the same runs on the scheduler's workers.

A failed date does not stop the backfill: every date's state and wall time is printed at the end (and written
as Markdown with `--out`), and the exit code is 1 if any date failed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from transfertraj.core.settings import Settings

log = logging.getLogger("transfertraj.backfill")


@dataclass(frozen=True)
class DateRun:
    date: str
    state: str
    wall_s: float


def delivery_dates(settings: Settings, city: str, start: str | None, end: str | None) -> list[str]:
    """The landed delivery dates of a city, inside [start, end] when given (inclusive, ISO dates)."""
    root = settings.landing / city
    if not root.is_dir():
        raise SystemExit(f"nothing landed for {city} under {root}: run `transfertraj land --city {city} --datasets`")
    dates = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[:4].isdigit())
    return [d for d in dates if (start is None or d >= start) and (end is None or d <= end)]


def backfill(settings: Settings, city: str, dates: list[str], dags: dict | None = None) -> list[DateRun]:
    """Run `nightly_ingest_<city>` once per date with dag.test(); failures are recorded, not raised.

    `dags`: an already loaded DagBag's dags (tests; Airflow configured by the caller); default: prepare the
    embedded Airflow on the data root and load this checkout's DAGs.
    """
    from transfertraj.core.city_config import load_city
    from transfertraj.demo import delivery_logical_date, load_dags, prepare_airflow, run_dag

    tz = load_city(city, settings).timezone
    if dags is None:
        prepare_airflow(settings)
        dags = load_dags()
    dag_id = f"nightly_ingest_{city}"
    if dag_id not in dags:
        raise SystemExit(f"no DAG {dag_id}: is config/cities/{city}.yaml there? (`transfertraj cities`)")
    out: list[DateRun] = []
    for day in dates:
        t0 = time.time()
        try:
            state = run_dag(dags, dag_id, logical_date=delivery_logical_date(day, tz))
        except Exception as err:  # noqa: BLE001 - one date's failure must not stop the backfill
            log.exception("%s %s: the DAG run raised", dag_id, day)
            state = f"error: {type(err).__name__}"
        out.append(DateRun(day, state, time.time() - t0))
    return out


def table(city: str, runs: list[DateRun]) -> list[str]:
    """Markdown table of the backfill: one row per delivery date, then the totals."""
    lines = [f"| delivery date | nightly_ingest_{city} | wall (s) |", "|---|---|---:|"]
    lines += [f"| {r.date} | {r.state} | {r.wall_s:.1f} |" for r in runs]
    ok = sum(r.state == "success" for r in runs)
    total = sum(r.wall_s for r in runs)
    lines.append(f"| {len(runs)} dates | {ok} success, {len(runs) - ok} not | {total:.0f} |")
    return lines


def run(args, settings: Settings) -> int:
    dates = delivery_dates(settings, args.city, args.start, args.end)
    if not dates:
        raise SystemExit(f"no landed dates of {args.city} in [{args.start}, {args.end}]")
    print(f"backfill nightly_ingest_{args.city}: {len(dates)} delivery date(s), {dates[0]} .. {dates[-1]}")
    runs = backfill(settings, args.city, dates)
    lines = table(args.city, runs)
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"written: {args.out}")
    return 0 if all(r.state == "success" for r in runs) else 1
