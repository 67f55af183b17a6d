"""The `transfertraj` command line: every user-facing job has a subcommand here.

    transfertraj --help
    transfertraj cities                      # configured cities, their data and licences
    transfertraj check-config --city porto   # validate one city file (all when omitted)
    transfertraj spark-jars                  # fetch Delta's jars into the cache (for offline clusters)

Settings precedence: flags > environment > city file > defaults (see transfertraj/settings.py).
DAG tasks call the same functions as these subcommands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from transfertraj.core.log_config import configure_logging
from transfertraj.core.settings import Settings

log = logging.getLogger("transfertraj")


def _cmd_cities(args, settings: Settings) -> int:
    from transfertraj.core.city_config import CityConfigError, list_cities, load_city_file

    cities = list_cities(settings)
    if not cities:
        print("no city files found in " + ", ".join(map(str, settings.city_dirs)))
        return 1
    for name, path in cities.items():
        try:
            c = load_city_file(path)
        except CityConfigError as err:
            print(f"{name:14s} INVALID  {err}")
            continue
        print(f"{name:14s} {c.raw.format:10s} every {c.sampling_interval_s:g}s  tz {c.timezone:20s} CRS {c.crs}")
        print(f"{'':14s} raw: {c.raw.path}  [{c.raw.licence}]")
        osm = "none (spatial + temporal modalities only)" if not c.has_osm else f"{c.osm.kind} {c.osm.path}"
        print(f"{'':14s} osm: {osm}" + (f"  [{c.osm.licence}]" if c.has_osm else ""))
    return 0


def _cmd_check_config(args, settings: Settings) -> int:
    from transfertraj.core.city_config import CityConfigError, list_cities, load_city, load_city_file

    if args.file:
        try:
            city = load_city_file(Path(args.file))
        except CityConfigError as err:
            print(f"BAD {err}", file=sys.stderr)
            return 1
        print(f"ok  {city.name} ({args.file})")
        return 0
    names = [args.city] if args.city else list(list_cities(settings))
    failed = 0
    for name in names:
        try:
            city = load_city(name, settings)
            print(f"ok  {name} ({city.source_file})")
        except CityConfigError as err:
            failed += 1
            print(f"BAD {err}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_spark_jars(args, settings: Settings) -> int:
    from transfertraj.jobs.spark_session import get_spark

    spark = get_spark("spark-jars", settings)
    jars = sorted((settings.ivy_dir / "jars").glob("*.jar"))
    print(f"Spark {spark.version}; {len(jars)} jars cached in {settings.ivy_dir / 'jars'}")
    spark.stop()
    return 0


def _cmd_land(args, settings: Settings) -> int:
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.land_sample import land_datasets, land_sample

    city = load_city(args.city, settings)
    if args.datasets:
        landed = land_datasets(city, settings, per=args.per)
        for day, paths in landed.items():
            print(f"{day}  {', '.join(p.name for p in paths)}")
        print(f"{len(landed)} delivery date(s) under {settings.landing / city.name}")
        return 0
    for day, path in land_sample(city, settings, source=args.source, per=args.per).items():
        print(f"{day}  {path}")
    return 0


def _cmd_ingest(args, settings: Settings) -> int:
    from transfertraj.jobs.ingest import run

    return run(args, settings)


def _cmd_featurize(args, settings: Settings) -> int:
    from transfertraj.jobs.featurize import run

    return run(args, settings)


def _cmd_score_batch(args, settings: Settings) -> int:
    from transfertraj.tasks.scoring import score_city_date

    try:
        r = score_city_date(args.city, args.date, args.model, settings)
    except (FileNotFoundError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{r['city']} {r['date']}: {r['scored']} of {r['trips']} trips scored by {r['model']} (predictions v{r['version']})"
    )
    return 0


def _cmd_context(args, settings: Settings) -> int:
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.context_tables import build_context_tables
    from transfertraj.jobs.spark_session import get_spark

    city = load_city(args.city, settings)
    versions = build_context_tables(get_spark("context", settings), city, settings)
    for name, version in versions.items():
        print(f"{name}: {city.name} written, Delta version {version}")
    if not versions:
        print(f"{city.name}: no OSM source; its points get POI and road marked missing")
    if args.map and city.has_osm:
        from transfertraj.jobs.context_map import main as draw_map

        return draw_map(["--city", city.name])
    return 0


def _cmd_runs(args, settings: Settings) -> int:
    from transfertraj.jobs.run_history import runs_lines
    from transfertraj.jobs.spark_session import get_spark

    print("\n".join(runs_lines(get_spark("runs", settings), settings, args.city, args.limit)))
    return 0


def _cmd_rejects(args, settings: Settings) -> int:
    from transfertraj.jobs.run_history import rejects_lines
    from transfertraj.jobs.spark_session import get_spark

    lines = rejects_lines(get_spark("rejects", settings), settings, args.city, args.date, args.reason, args.limit)
    print("\n".join(lines))
    return 0


def _cmd_backfill(args, settings: Settings) -> int:
    from transfertraj.backfill import run

    return run(args, settings)


def _cmd_demo(args, settings: Settings) -> int:
    from transfertraj.demo import run_demo

    return run_demo(settings, onboard=args.onboard, epochs=args.epochs, n_shot=args.n_shot)


def _cmd_models_list(args, settings: Settings) -> int:
    from transfertraj.registry import registry_lines

    print("\n".join(registry_lines(settings)))
    return 0


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return "unknown"


def _cmd_models_register(args, settings: Settings) -> int:
    from transfertraj.core.city_config import CityConfigError
    from transfertraj.registry import BASE_MODEL, register_checkpoint
    from transfertraj.tasks.pretrain import pretrain_cities

    if args.city:
        cities = args.city
    elif args.name == BASE_MODEL:
        cities = pretrain_cities()  # what the pretrain DAG trains the base model on
    else:
        cities = [args.name.removeprefix("transfertraj-")]
    try:
        per_task = _task_checkpoints(args.task_checkpoint or [])
        reg = register_checkpoint(settings, args.checkpoint, args.name, cities, args.features_version, per_task)
    except (FileNotFoundError, LookupError, CityConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{reg.name} version {reg.version} (run {reg.run_id}), alias challenger")
    print("\n".join(reg.decision.lines()))
    return 0


def _task_checkpoints(pairs: list[str]) -> dict[str, Path]:
    """["tp=PATH", ...] -> {"tp": PATH}; a task named twice or a pair without "=" is refused."""
    out: dict[str, Path] = {}
    for pair in pairs:
        task, sep, path = pair.partition("=")
        if not sep or not path or task in out:
            raise LookupError(f"--task-checkpoint {pair!r}: give TASK=PATH once per task (tp=.../best.pt)")
        out[task.strip()] = Path(path)
    return out


def _cmd_models_promote(args, settings: Settings) -> int:
    from transfertraj.registry import promote

    try:
        left = promote(settings, args.name, args.version, by=_who(), reason=args.reason)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: champion is version {args.version}" + (f" (was {left})" if left else ""))
    return 0


def _cmd_models_rollback(args, settings: Settings) -> int:
    from transfertraj.registry import rollback

    try:
        left, restored = rollback(settings, args.name, by=_who(), reason=args.reason)
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: champion is version {restored} again (was {left})")
    return 0


def _cmd_predict(args, settings: Settings) -> int:
    import pandas as pd

    from transfertraj.holdout import HoldoutError, error_column, score, split, trip_errors
    from transfertraj.registry import load
    from transfertraj.serving import ServingInputError, asked_rows

    model = load(args.model, settings)
    params = {"task": args.task, "mu": args.mu, **({"city": args.city} if args.city else {})}
    # ids are strings whatever they look like (Porto's TRIP_IDs are 19-digit numbers)
    points = pd.read_csv(args.input, dtype={"trip_id": str})
    request, truth = points, None
    if args.holdout:
        try:
            request, truth = split(points, args.task, args.mu)
        except (HoldoutError, KeyError) as err:
            print(f"error: --holdout: {err}", file=sys.stderr)
            return 1
    asked = request[["trip_id", "ts", "lon", "lat"]]
    if truth is not None and args.task == "tp":  # ask about the times the held-out points were driven
        asked = pd.concat([asked, asked_rows(truth)], ignore_index=True)
    try:
        out = model.predict(asked, params=params)
    except ServingInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    request = request[request["lon"].notna()]  # the observed points (without the rows asking about times)
    if truth is not None:
        out = score(out, truth, args.task)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.output, index=False)
    print(f"{len(out)} rows -> {args.output}")
    if truth is not None:
        col = error_column(args.task)
        _, mean = trip_errors(out, args.task)
        print(f"mean {col} {mean:.1f} over {len(out)} answers of {out['trip_id'].nunique()} trip(s)")
    if args.geojson is not None or args.html:
        from transfertraj.trip_geojson import feature_collection, write_geojson

        fc = feature_collection(request, out, args.task, truth=truth, mu=args.mu, model=args.model)
        if args.geojson is not None:
            path = write_geojson(fc, args.geojson or Path(args.output).with_suffix(".geojson"))
            print(f"{len(fc['features'])} features -> {path}")
        if args.html:
            path = _write_predict_page(fc, model, args, settings)
            print(f"page ({path.stat().st_size / 1024:.0f} kB, opens offline) -> {path}")
    return 0


def _write_predict_page(fc: dict, model, args, settings: Settings) -> Path:
    """The --html page: the trips on the roads of the lake's context_roads table at the version the model
    pinned, else on the road lattice the model carries (transfertraj.page_roads.model_roads)."""
    from transfertraj.page_roads import MetricView, model_roads
    from transfertraj.trip_page import render_page, write_page

    served = model.unwrap_python_model()
    name = str(args.city or served.spec["default_city"])
    city = served.cities[name]
    view = MetricView.around(fc, city.crs)
    roads = model_roads(settings, served, name, view)
    attribution = city.osm.licence if city.has_osm else None
    return write_page(render_page(fc, view, roads=roads, title=name, mu=args.mu, attribution=attribution), args.html)


def _resolve_model(model: str, settings: Settings, task_checkpoints: dict | None = None) -> tuple[Path, dict, dict]:
    """(checkpoint path, what the report says about the model, {task key: checkpoint} of its per-task
    checkpoints) for a models:/ URI (those it carries) or a checkpoint path (`task_checkpoints`)."""
    if not model.startswith("models:/"):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path} (give a models:/NAME@ALIAS URI or a best.pt path)")
        if not task_checkpoints:
            return path, {"model": str(path)}, {}
        from transfertraj.registry import check_task_checkpoints  # MLflow's import: only when needed

        return path, {"model": str(path)}, check_task_checkpoints(task_checkpoints)
    from transfertraj.registry import checkpoint_of, configure, resolve_version, task_checkpoints_of

    if task_checkpoints:
        raise LookupError("--task-checkpoint goes with a checkpoint path: a models:/ URI carries its own")
    name, version = resolve_version(configure(settings), model)
    about = {"model": model, "model_name": name, "model_version": version}
    return checkpoint_of(model, settings), about, task_checkpoints_of(model, settings)


def _cmd_score(args, settings: Settings) -> int:
    import numpy as np

    from transfertraj.model.checkpoint import load_checkpoint
    from transfertraj.model.road_paths import road_graph
    from transfertraj.model.scoring import score_checkpoint, write_score
    from transfertraj.model.transfer_data import subset
    from transfertraj.serving import task_network
    from transfertraj.tasks.training_data import read_city_data

    if bool(args.start) != bool(args.end):
        print("error: give both --start and --end (or neither: every delivery date)", file=sys.stderr)
        return 2
    dates = (args.start, args.end) if args.start else None
    try:
        checkpoint, about, per_task = _resolve_model(
            args.model, settings, _task_checkpoints(getattr(args, "task_checkpoint", None) or [])
        )
        data, version, ctx = read_city_data(settings, [args.city], args.version, dates)
    except (FileNotFoundError, LookupError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.max_trajectories and len(data) > args.max_trajectories:
        rng = np.random.default_rng(args.seed)
        data = subset(data, np.sort(rng.choice(len(data), args.max_trajectories, replace=False)), name="sample")
    # the roads the features were built with where they record it, else the latest
    graph, roads_version = road_graph(settings, args.city, ctx.get(args.city, {}).get("context_roads"))
    trained = load_checkpoint(checkpoint)["data"]
    about.update(
        {
            "checkpoint": str(checkpoint),
            "model trained on": f"features version {trained.get('data_version')}, cities {trained.get('cities')}",
            "city": args.city,
            "features version": version,
            "delivery dates": f"{dates[0]} .. {dates[1]}" if dates else "all",
            "trips start (UTC)": " .. ".join(
                str(np.datetime64(int(t), "ns").astype("datetime64[s]"))
                for t in (data.start_ts.min(), data.start_ts.max())
            ),
            "context_roads version": roads_version if graph is not None else "none (no road-path baseline)",
            "sample": f"{len(data)} trajectories drawn with seed {args.seed}" if args.max_trajectories else "all",
            "bootstrap": f"{args.n_boot} resamples of trajectories, seed {args.seed}",
        }
    )
    by_task = {t: Path(task_network(per_task, checkpoint, t, args.city)) for t in args.tasks}
    about.update({f"{t} answered by": str(p) for t, p in by_task.items() if p != checkpoint})
    score = score_checkpoint(
        checkpoint,
        data,
        tasks=tuple(args.tasks),
        task_checkpoints=by_task,
        road_graphs={args.city: graph} if graph is not None else None,
        device=args.device,
        n_boot=args.n_boot,
        seed=args.seed,
    )
    slug = about.get("model_name", checkpoint.parent.name) + (
        f"-v{about['model_version']}" if "model_version" in about else ""
    )
    out = Path(args.out) if args.out else settings.reports / "score" / args.city / slug
    files = write_score(score, out, about)
    print(files[1].read_text())
    print("\n".join(map(str, files)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfertraj",
        description=(
            "TransferTraj pipeline: ingest GPS logs with Spark into Delta tables, join OpenStreetMap "
            "context, pretrain and fine-tune the model, evaluate and register it in MLflow."
        ),
        epilog="Data root: --home or TRANSFERTRAJ_HOME (default ~/.local/share/transfertraj).",
    )
    parser.add_argument("--home", help="data root (landing, lake, reports, checkpoints); overrides TRANSFERTRAJ_HOME")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("cities", help="list configured cities with their data sources and licences")
    p.set_defaults(func=_cmd_cities)

    p = sub.add_parser("check-config", help="validate city files; names the bad field on failure")
    p.add_argument("--city", help="one city by name (default: all on the search path)")
    p.add_argument("--file", help="a city file by path")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("land", help="drop a city's bundled sample (or --source) into landing/<city>/<date>/")
    p.add_argument("--city", required=True)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--source", type=Path, help="a raw file to land instead of the city's bundled sample")
    source.add_argument(
        "--datasets",
        action="store_true",
        help="land the city's large real data sets (raw.datasets in its config) from the datasets root "
        "(TRANSFERTRAJ_DATASETS, default ../shared/data beside the checkout), one folder per delivery date",
    )
    p.add_argument(
        "--per",
        choices=["day", "month"],
        default="day",
        help="delivery granularity: a folder per local date (default), or per month (folder = the month's "
        "first day) for an archive such as the Porto year, whose daily deliveries are tiny",
    )
    p.set_defaults(func=_cmd_land)

    from transfertraj.jobs.ingest import add_arguments as ingest_arguments

    p = sub.add_parser(
        "ingest",
        help="nightly ingestion: landing/<city>/<date>/ -> bronze, rejects, silver, runs (Delta)",
        description=(
            "Read the files landed for a city and date, keep them as bronze, quarantine bad rows and "
            "points with a reason, write clean trajectories to silver and a runs row with the accounting "
            "(read = accepted + rejected). A rerun of a date replaces that date. Exit code 1 when a date "
            "fails the city's quality gate."
        ),
    )
    ingest_arguments(p)
    p.set_defaults(func=_cmd_ingest)

    from transfertraj.jobs.featurize import add_arguments as featurize_arguments

    p = sub.add_parser(
        "context", help="build a city's OSM context tables (roads, POIs, density grid) from its OSM source"
    )
    p.add_argument("--city", required=True)
    p.add_argument(
        "--map",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also draw the POI and road density map PNG (default on)",
    )
    p.set_defaults(func=_cmd_context)

    p = sub.add_parser(
        "featurize", help="silver -> features: spatial, temporal, POI and road modalities per point (Delta)"
    )
    featurize_arguments(p)
    p.set_defaults(func=_cmd_featurize)

    p = sub.add_parser(
        "score-batch",
        help="a day's silver trips -> OD travel-time predictions of the champion (Spark), in the predictions table",
    )
    p.add_argument("--city", required=True)
    p.add_argument("--date", required=True, help="delivery date, YYYY-MM-DD")
    p.add_argument("--model", help="a model URI (models:/transfertraj-porto/3); default: the city's champion")
    p.set_defaults(func=_cmd_score_batch)

    p = sub.add_parser("runs", help="the ingestion run log of a city: counts, status, silver version")
    p.add_argument("--city", required=True)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_cmd_runs)

    p = sub.add_parser("rejects", help="the quarantine of a city and date: counts by reason and examples")
    p.add_argument("--city", required=True)
    p.add_argument("--date", required=True)
    p.add_argument("--reason", help="only this reason code")
    p.add_argument("--limit", type=int, default=10, help="examples to show")
    p.set_defaults(func=_cmd_rejects)

    p = sub.add_parser(
        "backfill",
        help="run the nightly_ingest DAG once per landed delivery date (catchup without a scheduler)",
        description="One nightly_ingest_<city> DAG run per landed delivery date, in order, executed with "
        "dag.test() in this process (Airflow metadata on SQLite under the data root). A failed date does not "
        "stop the backfill; the table at the end gives every date's state and wall time; exit code 1 if any "
        "date failed. With a scheduler, `airflow backfill create` makes the same runs.",
    )
    p.add_argument("--city", required=True)
    p.add_argument("--start", help="first delivery date YYYY-MM-DD (default: the first landed)")
    p.add_argument("--end", help="last delivery date YYYY-MM-DD, inclusive (default: the last landed)")
    p.add_argument("--out", help="also write the table as Markdown to this file")
    p.set_defaults(func=_cmd_backfill)

    p = sub.add_parser("demo", help="run the pipeline end to end on the bundled real samples (what `make demo` runs)")
    p.add_argument(
        "--onboard",
        nargs="*",
        choices=["sanfrancisco", "beijing"],
        default=None,
        help="bundled samples onboarded as new cities (default: sanfrancisco; beijing needs more delivery "
        "dates than the demo lands, see transfertraj/demo.py)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=12,
        help="pretraining and fine-tuning epochs (tiny model; about 1-2 s each on Porto)",
    )
    p.add_argument("--n-shot", type=int, default=64, help="few-shot trajectories per onboarded city")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("models", help="the MLflow registry: registered models, versions, aliases, gate metrics")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    m = msub.add_parser("list", help="every registered model version with its aliases and validation metrics")
    m.set_defaults(func=_cmd_models_list)
    m = msub.add_parser(
        "register",
        help="register a checkpoint trained by hand (pretrain/finetune, torchrun's best.pt) through the DAGs' gate",
        description=(
            "Log the checkpoint as one MLflow run, register it as a new version with the alias challenger, "
            "and let the gate re-score it against the champion on the cities' validation split."
        ),
    )
    m.add_argument("--checkpoint", required=True, type=Path, help="best.pt (last.pt beside it gives the loss history)")
    m.add_argument("--name", required=True, help="transfertraj-base or transfertraj-<city>")
    m.add_argument(
        "--city",
        action="append",
        help="the cities to score on (repeatable; default the city of transfertraj-<city>, or "
        "TRANSFERTRAJ_PRETRAIN_CITIES for transfertraj-base)",
    )
    m.add_argument("--features-version", type=int, help="the features table's Delta version (default: latest)")
    m.add_argument(
        "--task-checkpoint",
        action="append",
        metavar="TASK=PATH",
        help="a checkpoint fine-tuned for one task (tp, tr or od), carried beside --checkpoint: that task is "
        "answered by it and the gate scores that task with it; the other tasks use --checkpoint (repeatable: "
        "--task-checkpoint tp=ft-tp/best.pt --task-checkpoint od=ft-od/best.pt). TASK@CITY=PATH "
        "(tr@sanfrancisco=...) answers that task for that city's requests only, before TASK's own",
    )
    m.set_defaults(func=_cmd_models_register)
    m = msub.add_parser("promote", help="move the champion alias to a version by hand (recorded on the version)")
    m.add_argument("name")
    m.add_argument("version")
    m.add_argument("--reason", default="promoted by hand", help="recorded as the version's champion.reason tag")
    m.set_defaults(func=_cmd_models_promote)
    m = msub.add_parser("rollback", help="move the champion alias back to the version it replaced")
    m.add_argument("name")
    m.add_argument("--reason", default="rolled back by hand", help="recorded as the version's champion.reason tag")
    m.set_defaults(func=_cmd_models_rollback)

    p = sub.add_parser(
        "predict",
        help="answer TP / TR / OD-TTE for raw points with a registered model (models:/<name>@champion)",
        description=(
            "Answer a task for raw GPS points and write the answers as CSV; optionally as GeoJSON (--geojson) "
            "and as an offline HTML map (--html). With --holdout the input is complete trips, the model is "
            "given only what the task allows and its answers are scored against the rest."
        ),
    )
    p.add_argument("--model", required=True, help="models:/transfertraj-<city>@champion, or any MLflow model URI")
    p.add_argument("--task", required=True, choices=["tp", "tr", "odtte"])
    p.add_argument(
        "--input",
        required=True,
        help="CSV, one row per point: trip_id, ts (Unix s), lon, lat; for tp a trip may also name the 5 times "
        "it asks about as rows with ts and empty lon, lat (else: the city's interval after its last point, "
        "wrong where sampling is irregular, as in San Francisco)",
    )
    p.add_argument("--output", required=True, help="CSV of the answers")
    p.add_argument("--mu", type=int, default=8, choices=[4, 8, 16], help="tr: one observed point every mu intervals")
    p.add_argument("--city", help="for a model of several cities: which city's context to use")
    p.add_argument(
        "--holdout",
        action="store_true",
        help="the input holds complete trips: hide what the task predicts (tp: the last 5 points, asked at "
        "the times they were driven; tr: all but every mu-th point; odtte: the arrival time), predict it and "
        "add the truth and the error "
        "(error_m, or error_min for odtte) to the output",
    )
    p.add_argument(
        "--geojson",
        nargs="?",
        const="",
        metavar="PATH",
        help="also write a GeoJSON FeatureCollection: observed, hidden (with --holdout) and predicted points, "
        "observed / true / predicted paths, with trip_id, kind, ts and error_m (default PATH: --output with "
        ".geojson)",
    )
    p.add_argument(
        "--html",
        metavar="PAGE",
        help="also write one self-contained HTML page (inline SVG, no network) drawing the trips on the "
        "city's roads with a legend, the task and, with --holdout, the error per trip and mean; roads come "
        "from this data root's context_roads table at the version the model pinned, else from the road lattice "
        "the model carries",
    )
    p.set_defaults(func=_cmd_predict)

    from transfertraj.model.evaluation_protocol import SCORE_TASKS, TASKS

    p = sub.add_parser(
        "score",
        help="score a given model (registry URI or checkpoint) on a city's deliveries against the baselines",
        description=(
            "Score one trained model on every trajectory of a city's features for some delivery dates: each "
            "task's mask, the same baselines as the evaluation protocol (TP: last known point, constant "
            "velocity; TR: linear interpolation by time and by index, and the road-path interpolation along "
            "the city's OSM drive graph where the lake has its roads; OD-TTE: linear regressions on distance, "
            "hour and weekday, cross-fitted on the scored trajectories), and each model/baseline error ratio "
            "with a paired bootstrap 95 % CI over trajectories. Trains nothing, deletes nothing; writes "
            "score.json and score.md and prints the table (docs/evaluation.md, 'Scoring a given model')."
        ),
    )
    p.add_argument(
        "--model",
        required=True,
        help="models:/NAME@ALIAS, models:/NAME/VERSION (the MLflow registry) or a checkpoint path (best.pt)",
    )
    p.add_argument("--city", required=True, help="the city whose features to score on")
    p.add_argument("--start", help="first delivery date YYYY-MM-DD (with --end; default every date)")
    p.add_argument("--end", help="last delivery date YYYY-MM-DD, inclusive")
    p.add_argument("--version", type=int, help="the features table's Delta version (default: latest)")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(SCORE_TASKS), help="default %(default)s")
    p.add_argument("--max-trajectories", type=int, help="score a random sample of this many (seeded by --seed)")
    p.add_argument("--out", help="output folder (default <home>/reports/score/<city>/<model>)")
    p.add_argument("--seed", type=int, default=0, help="sample and bootstrap seed")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0 ...")
    p.add_argument(
        "--task-checkpoint",
        action="append",
        metavar="TASK=PATH",
        help="with a checkpoint path: the checkpoint that answers one task (tp, tr, od; TASK@CITY for one "
        "city's), as `models register --task-checkpoint` serves it (repeatable). A models:/ URI is scored "
        "with the per-task checkpoints it carries, as it is served",
    )
    p.set_defaults(func=_cmd_score)

    from transfertraj.model.commands import register as register_model_commands

    register_model_commands(sub)  # pretrain, finetune, evaluate

    p = sub.add_parser("spark-jars", help="resolve Delta Lake's jars from Maven Central into the cache")
    p.set_defaults(func=_cmd_spark_jars)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    settings = Settings.load(home=args.home)
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
