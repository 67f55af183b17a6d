"""What the Airflow tasks do: plain functions of plain values, so the DAG files stay wiring only.

    from transfertraj import pipeline_tasks as pt
    pt.ingest_city_date("porto", "2013-07-01")      # -> {"city", "date", "trajectories_out", ...}
    pt.pretrain_base(["porto"], run_key="manual", epochs=3)

Every function loads Settings itself (TRANSFERTRAJ_HOME and friends), imports Spark/torch/MLflow only
when called, and returns JSON-serialisable dicts (they travel as XComs). The CLI and the demo call the
same functions. The DAG-level helpers at the bottom (city list, assets, pools, alerts) import nothing
heavy: the scheduler runs them every time it parses the DAG files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from transfertraj.core.constants import PHI_DEFAULT_M
from transfertraj.core.settings import Settings

log = logging.getLogger("transfertraj.pipeline")

BASE_EXPERIMENT = "transfertraj-pretrain"
CITY_EXPERIMENT = "transfertraj-onboard"
LAKE_TABLES = ("bronze", "rejects", "silver", "features", "runs", "context_roads", "context_pois", "context_grid")


def _spark(settings: Settings):
    from transfertraj.jobs.spark_session import get_spark

    return get_spark("transfertraj-airflow", settings)


# ----------------------------------------------------------------------------------------- nightly ingest


def ingest_city_date(city_name: str, date: str) -> dict:
    """landing/<city>/<date>/ -> bronze, rejects, silver, runs. Fails (QualityGateError) on the city's gate."""
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.ingest import QualityGateError, ingest_date

    settings = Settings.load()
    city = load_city(city_name, settings)
    folder = settings.landing / city.name / date
    if not folder.is_dir():
        raise FileNotFoundError(f"{city.name} {date}: nothing landed at {folder} (was the delivery late?)")
    spark = _spark(settings)
    try:
        report = ingest_date(spark, city, date, settings)
    except QualityGateError:
        _quality_report(spark, city, date, settings)  # the report is what an operator opens first
        raise
    log.info("%s", report.summary())
    return {
        "city": city.name,
        "date": date,
        "trajectories_out": report.trajectories_out,
        "silver_version": report.silver_version,
        "summary": report.summary(),
    }


def featurize_city_date(city_name: str, date: str) -> dict:
    """silver -> features for one city and date (builds the context tables on first use)."""
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.featurize import featurize_date

    settings = Settings.load()
    city = load_city(city_name, settings)
    return featurize_date(_spark(settings), city, date, settings)


def _quality_report(spark, city, date: str, settings: Settings) -> str:
    from transfertraj.jobs.quality_report import write_quality_report

    return str(write_quality_report(spark, city, date, settings))


def quality_report(city_name: str, date: str) -> str:
    from transfertraj.core.city_config import load_city

    settings = Settings.load()
    return _quality_report(_spark(settings), load_city(city_name, settings), date, settings)


# ----------------------------------------------------------------------------------------- training data


def read_city_features(settings: Settings, cities: list[str]):
    """(pyarrow table of these cities' features rows, Delta version read, {city: context versions})."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from transfertraj.feature_store.tables import table_path
    from transfertraj.model.trajectory_data import read_features

    path = Path(table_path(settings, "features"))
    if not (path / "_delta_log").is_dir():
        raise FileNotFoundError(f"no features table at {path}: run nightly_ingest (or `transfertraj featurize`) first")
    table, version = read_features(path)
    table = table.filter(pc.is_in(table.column("city"), value_set=pa.array(cities)))
    found = set(table.column("city").to_pylist())
    missing = sorted(set(cities) - found)
    if missing:
        raise ValueError(f"the features table (version {version}) has no rows for {missing}")
    return table, version, context_versions(table)


def context_versions(table) -> dict[str, dict]:
    """city -> {context table: version} the features rows were built with (the newest per table)."""
    out: dict[str, dict] = {}
    for city, src in zip(table.column("city").to_pylist(), table.column("source_versions").to_pylist()):
        versions = out.setdefault(city, {})
        for key, value in json.loads(src or "{}").items():
            name = key.removesuffix("_version")
            if name.startswith("context_") and value is not None:
                versions[name] = max(int(value), versions.get(name, -1))
    return out


def _train_overrides(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if v is not None}


# ----------------------------------------------------------------------------------------- pretrain


def pretrain_base(cities: list[str], *, run_key: str, **overrides) -> dict:
    """Pretrain on these cities' features, log one MLflow run, register `transfertraj-base`, gate it."""
    from transfertraj import registry
    from transfertraj.core.city_config import load_city
    from transfertraj.model.train import pretrain

    settings = Settings.load()
    table, version, ctx = read_city_features(settings, cities)
    out_dir = settings.checkpoints / registry.BASE_MODEL / _safe(run_key)
    t0 = time.time()
    ckpt = pretrain(table, version, out_dir, progress=False, **_train_overrides(overrides))
    log.info("pretrained on %s (features v%s) in %.0f s: %s", cities, version, time.time() - t0, ckpt)
    reg = registry.log_and_register(
        settings=settings,
        experiment=BASE_EXPERIMENT,
        model_name=registry.BASE_MODEL,
        checkpoint=ckpt,
        cities=[load_city(c, settings) for c in cities],
        data_versions={"features_version": version},
        context_versions=ctx,
        features=table,
        features_version=version,
        run_name=f"pretrain {run_key}",
    )
    return _registered(reg)


def _registered(reg) -> dict:
    return {
        "name": reg.name,
        "version": reg.version,
        "run_id": reg.run_id,
        "promoted": reg.decision.promoted,
        "reason": reg.decision.reason,
        "metrics": _finite(reg.metrics),
    }


def _finite(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


# ----------------------------------------------------------------------------------------- onboard a city

RAW_PRESETS: dict[str, dict] = {
    "porto_csv": {"format": "porto_csv", "timestamp_format": "unix_s"},
    "cabspotting": {
        "format": "point_log",
        "timestamp_format": "unix_s",
        "trip_state_value": "1",
        "columns": {
            "vehicle_id": "cab_id",
            "timestamp": "timestamp",
            "lon": "lon",
            "lat": "lat",
            "trip_state": "occupied",
        },
    },
    "geolife": {
        "format": "point_log",
        "timestamp_format": "yyyy-MM-dd HH:mm:ss",
        "timestamp_timezone": "UTC",
        "columns": {"vehicle_id": "uid", "timestamp": "datetime", "lon": "lng", "lat": "lat"},
    },
}


class OnboardParamsError(ValueError):
    """A trigger of onboard_city with parameters that cannot work; the message lists every problem."""


def _inside(root: Path, value: str | None, what: str, problems: list[str]) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    path = (root / path) if not path.is_absolute() else path
    path = path.resolve()
    if not path.is_relative_to(root.resolve()):
        problems.append(f"{what}: {value} is outside the data root {root} (put deliveries under it)")
        return None
    if not path.exists():
        problems.append(f"{what}: {path} does not exist")
        return None
    return path


def onboard_config(params: dict, settings: Settings) -> dict:
    """Trigger params -> a city config dict (not yet validated by the city schema). Raises with all problems."""
    problems: list[str] = []
    name = str(params.get("city") or "")
    from transfertraj.core.constants import CITY_NAME_PATTERN

    if not re.match(CITY_NAME_PATTERN, name):
        problems.append(f"city: {name!r} must match {CITY_NAME_PATTERN} (lower case, digits, underscores)")
    bbox = params.get("bbox")
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        problems.append(f"bbox: {bbox!r} must be four numbers [min_lon, min_lat, max_lon, max_lat]")
        bbox = None
    preset = params.get("raw_preset") or ""
    if preset and preset not in RAW_PRESETS:
        problems.append(f"raw_preset: {preset!r} is not one of {sorted(RAW_PRESETS)}")
    raw = dict(RAW_PRESETS.get(preset, {}))
    for key in ("raw_format", "timestamp_format", "timestamp_timezone", "trip_state_value"):
        if params.get(key):
            raw[key.removeprefix("raw_")] = params[key]
    if params.get("columns"):
        raw["columns"] = dict(params["columns"])
    if "format" not in raw:
        problems.append("raw_format: give raw_format (porto_csv | point_log) or a raw_preset")
    raw_path = _inside(settings.home, params.get("raw_path"), "raw_path", problems)
    if not params.get("raw_path"):
        problems.append("raw_path: the raw GPS file is required (a path inside the data root)")
    if not str(params.get("licence") or "").strip():
        problems.append("licence: say under which licence the raw data may be used (it travels with the data)")
    osm_kind = params.get("osm_kind") or "none"
    osm: dict = {"kind": osm_kind}
    if osm_kind in ("osm_xml", "gis_extract"):
        p = _inside(settings.home, params.get("osm_path"), "osm_path", problems)
        if not params.get("osm_path"):
            problems.append(f"osm_path: osm_kind {osm_kind} needs a file inside the data root")
        osm["path"] = str(p) if p else None
        if osm_kind == "gis_extract":
            pp = _inside(settings.home, params.get("osm_points_path"), "osm_points_path", problems)
            osm["points_path"] = str(pp) if pp else None
    if params.get("osm_snapshot_date"):
        osm["snapshot_date"] = params["osm_snapshot_date"]
    if params.get("poi_categories_covered"):
        osm["poi_categories_covered"] = list(params["poi_categories_covered"])
    if problems:
        raise OnboardParamsError("onboard_city: bad parameters:\n  " + "\n  ".join(problems))
    return {
        "name": name,
        "description": str(params.get("description") or f"{name}: onboarded with the onboard_city DAG"),
        "bbox": dict(zip(("min_lon", "min_lat", "max_lon", "max_lat"), bbox)),
        "timezone": params.get("timezone"),
        "raw": {
            **raw,
            "path": str(raw_path),
            "licence": params["licence"],
            "provenance": str(params.get("provenance") or ""),
        },
        "osm": {k: v for k, v in osm.items() if v is not None},
        "sampling_interval_s": params.get("sampling_interval_s"),
        "phi_m": params.get("phi_m", PHI_DEFAULT_M),
        "cleaning": dict(params.get("cleaning") or {}),
        "quality": dict(params.get("quality") or {}),
    }


def write_city_config(params: dict) -> str:
    """First onboarding task: validate the trigger, write <data root>/config/cities/<name>.yaml, load it back."""
    from transfertraj.core.city_config import CityConfigError, city_to_yaml, list_cities, load_city_file, parse_city

    settings = Settings.load()
    data = onboard_config(params, settings)
    try:
        city = parse_city(data, f"onboard_city params for {data['name']}")
    except CityConfigError as err:
        raise OnboardParamsError(f"onboard_city: bad parameters:\n  {err}") from None
    folder = (settings.home / "config" / "cities").resolve()
    if folder not in [Path(d).resolve() for d in settings.city_dirs]:
        raise OnboardParamsError(
            f"onboard_city: {folder} is not on the city search path ({os.pathsep.join(map(str, settings.city_dirs))}); "
            "add it to TRANSFERTRAJ_CITY_DIRS"
        )
    existing = list_cities(settings).get(city.name)
    target = folder / f"{city.name}.yaml"
    if existing is not None:
        if not params.get("replace"):
            raise OnboardParamsError(
                f"onboard_city: a city named {city.name!r} exists ({existing}); trigger with replace=true to replace it"
            )
        if Path(existing).resolve() != target:
            raise OnboardParamsError(
                f"onboard_city: {city.name!r} is defined by {existing}, ahead of {folder} on the search path; "
                "choose another name (bundled cities are not replaced by a trigger)"
            )
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# written by onboard_city at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\n" + city_to_yaml(city))
    load_city_file(target)  # what every later task will read, checked once more from disk
    log.info("wrote %s", target)
    return str(target)


def build_city_context(city_name: str) -> dict:
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.context_tables import build_context_tables

    settings = Settings.load()
    city = load_city(city_name, settings)
    return build_context_tables(_spark(settings), city, settings)


def land_and_ingest(city_name: str, max_dates: int) -> dict:
    """Land the city's raw file by delivery date, ingest and featurize the first `max_dates` dates.

    A date failing the quality gate is reported and skipped; no date at all is an error."""
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.featurize import featurize_date
    from transfertraj.jobs.ingest import QualityGateError, ingest_date
    from transfertraj.jobs.land_sample import land_sample

    settings = Settings.load()
    city = load_city(city_name, settings)
    spark = _spark(settings)
    dates = list(land_sample(city, settings))[: max(1, int(max_dates))]
    done, failed = [], {}
    for day in dates:
        try:
            report = ingest_date(spark, city, day, settings)
        except QualityGateError as err:
            failed[day] = str(err)
            continue
        finally:
            _quality_report(spark, city, day, settings)
        if report.trajectories_out:
            feats = featurize_date(spark, city, day, settings)
            done.append(
                {"date": day, "trajectories": feats["trajectories"], "features_version": feats["features_version"]}
            )
    if not done:
        raise RuntimeError(f"{city.name}: no delivery date produced features ({failed or 'no trajectories'})")
    return {"city": city.name, "dates": done, "failed": failed}


def zero_shot(city_name: str) -> dict:
    """The base champion on the new city's validation split, before any fine-tuning."""
    from transfertraj import registry

    settings = Settings.load()
    registry.configure(settings)
    uri = f"models:/{registry.BASE_MODEL}@{registry.CHAMPION}"
    _require_champion(settings, registry.BASE_MODEL)
    table, version, _ = read_city_features(settings, [city_name])
    metrics = registry.validation_metrics(registry.load_torch(uri, settings), table, version)
    log.info("zero-shot %s on %s (features v%s): %s", uri, city_name, version, metrics)
    return {"model": uri, "features_version": version, "metrics": _finite(metrics)}


def _require_champion(settings: Settings, name: str) -> None:
    from transfertraj import registry

    if registry.champion_model(registry.configure(settings), name) is None:
        raise LookupError(f"{name} has no champion yet: run the pretrain DAG (or `transfertraj demo`) first")


def finetune_city(
    city_name: str, *, n_shot: int, run_key: str, zero_shot_metrics: dict | None = None, **overrides
) -> dict:
    """Few-shot fine-tune the base champion on the city, log the run, register transfertraj-<city>, gate it.

    The fine-tune uses the pretraining mask (every modality of random points and segments hidden), so one
    city model answers TP, TR and OD-TTE; the task masks differ only at inference (model.masking)."""
    from transfertraj import registry
    from transfertraj.core.city_config import load_city
    from transfertraj.model.train import finetune

    settings = Settings.load()
    _require_champion(settings, registry.BASE_MODEL)
    base_uri = f"models:/{registry.BASE_MODEL}@{registry.CHAMPION}"
    base_version = registry.champion_model(registry.configure(settings), registry.BASE_MODEL).version
    base_ckpt = registry.checkpoint_of(base_uri, settings)
    table, version, ctx = read_city_features(settings, [city_name])
    out_dir = settings.checkpoints / registry.city_model_name(city_name) / _safe(run_key)
    ckpt = finetune(
        base_ckpt,
        "pretrain",
        table,
        data_version=version,
        out_dir=out_dir,
        n_shot=int(n_shot),
        progress=False,
        **_train_overrides(overrides),
    )
    extra = {f"zero_shot/{k}": v for k, v in (zero_shot_metrics or {}).items() if v is not None}
    reg = registry.log_and_register(
        settings=settings,
        experiment=CITY_EXPERIMENT,
        model_name=registry.city_model_name(city_name),
        checkpoint=ckpt,
        cities=[load_city(city_name, settings)],
        data_versions={"features_version": version},
        context_versions=ctx,
        features=table,
        features_version=version,
        run_name=f"{city_name} {n_shot}-shot {run_key}",
        extra_metrics=extra,
        extra_tags={"base_model": f"{registry.BASE_MODEL}/{base_version}", "n_shot": str(n_shot)},
    )
    return _registered(reg)


# ----------------------------------------------------------------------------------------- maintenance


def optimize_and_vacuum(min_retention_hours: float = 168.0, tables: list[str] | None = None) -> list[dict]:
    """OPTIMIZE (compaction) then VACUUM every lake table, keeping every file of any table version a
    registered champion or challenger records (the retention stretches back past that version's commit)."""
    from delta.tables import DeltaTable

    from transfertraj import registry
    from transfertraj.feature_store.delta_io import table_exists
    from transfertraj.feature_store.tables import table_path

    settings = Settings.load()
    spark = _spark(settings)
    protected = registry.protected_versions(settings)
    # VACUUM compares file removal times with the real clock, so the protection is computed against it
    # too (a backfilled run's data interval would understate how old the protected version is).
    now_ms = time.time() * 1000
    out = []
    unknown = sorted(set(tables or ()) - set(LAKE_TABLES))
    if unknown:
        raise ValueError(f"unknown tables {unknown}; the lake has {list(LAKE_TABLES)}")
    for name in tables or LAKE_TABLES:
        path = table_path(settings, name)
        if not table_exists(spark, path):
            continue
        dt = DeltaTable.forPath(spark, path)
        dt.optimize().executeCompaction()
        keep = protected.get(name)
        commit_ms = None
        if keep is not None:
            row = dt.history().where(f"version = {keep}").select("timestamp").first()
            commit_ms = row[0].timestamp() * 1000 if row is not None else None
        retention = vacuum_retention_hours(min_retention_hours, commit_ms, now_ms)
        dt.vacuum(retention)
        out.append({"table": name, "protected_version": keep, "retention_hours": retention})
        log.info("%s: optimized; vacuumed with %.0f h retention (protects version %s)", name, retention, keep)
    return out


def vacuum_retention_hours(min_hours: float, protected_commit_ms: float | None, now_ms: float) -> float:
    """Hours of history VACUUM must keep: at least `min_hours`, and back past the protected version's commit.

    A file of version v is removed by a later commit (timestamp >= v's); VACUUM deletes removed files
    older than the retention, so a retention reaching before v's commit keeps every file of v."""
    if protected_commit_ms is None:
        return float(min_hours)
    age_h = (now_ms - protected_commit_ms) / 3_600_000
    return float(max(min_hours, math.ceil(age_h) + 1))


# ----------------------------------------------------------------------------------------- DAG-level helpers (light)


def configured_cities(settings: Settings | None = None) -> dict:
    """name -> CityConfig of every valid city file; invalid files are logged and skipped (no DAG)."""
    from transfertraj.core.city_config import CityConfigError, list_cities, load_city_file

    settings = settings or Settings.load()
    out = {}
    for name, path in list_cities(settings).items():
        try:
            out[name] = load_city_file(path)
        except CityConfigError as err:
            log.error("no nightly_ingest DAG for %s: %s", name, err)
    return out


def features_asset_uri(city: str, settings: Settings | None = None) -> str:
    settings = settings or Settings.load()
    return f"file://{Path(settings.lake) / 'features'}/city={city}"


def pretrain_cities() -> list[str]:
    """The source cities of the base model (TRANSFERTRAJ_PRETRAIN_CITIES, comma-separated; default porto)."""
    return [c.strip() for c in os.environ.get("TRANSFERTRAJ_PRETRAIN_CITIES", "porto").split(",") if c.strip()]


def train_pool() -> str:
    """The Airflow pool of training tasks: `gpu` when the operator made one and named it here."""
    return os.environ.get("TRANSFERTRAJ_TRAIN_POOL", "default_pool")


def train_queue() -> str:
    return os.environ.get("TRANSFERTRAJ_TRAIN_QUEUE", "default")


def failure_alert(context) -> None:
    """on_failure_callback: log one line per failed task (routing to e-mail or chat: docs/operations.md)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = context.get("run_id") or getattr(ti, "run_id", "?")
    log.error("ALERT transfertraj task failed: %s.%s run %s: %s", dag_id, task_id, run_id, context.get("exception"))
    webhook = os.environ.get("TRANSFERTRAJ_ALERT_WEBHOOK")
    if webhook:
        import urllib.request

        body = json.dumps(
            {"text": f"transfertraj: {dag_id}.{task_id} failed (run {run_id}): {context.get('exception')}"}
        )
        req = urllib.request.Request(webhook, data=body.encode(), headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except OSError as err:
            log.error("alert webhook failed: %s", err)


DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(minutes=5), "on_failure_callback": failure_alert}
