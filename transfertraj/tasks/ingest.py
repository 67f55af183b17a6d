"""The nightly_ingest tasks: one city's delivery date from landing to features, and its quality report.

    from transfertraj.tasks import ingest
    ingest.ingest_city_date("porto", "2013-07-01")     # landing -> bronze, rejects, silver, runs
    ingest.featurize_city_date("porto", "2013-07-01")  # silver -> features
    ingest.quality_report("porto", "2013-07-01")       # -> path of the HTML report

What cannot change on a retry (a quality-gate refusal, unreadable files, a bad city file) fails the task
at once with AirflowFailException and the same message; the rest (I/O, a delivery folder not landed yet)
raises as is and is retried. Fix the input, then clear the task:

    airflow tasks clear nightly_ingest_porto -t ingest -s 2013-07-01 -e 2013-07-01

`configured_cities` and `features_asset_uri` run while the scheduler parses dags/nightly_ingest.py
(one DAG per city file) and dags/pretrain.py (scheduled on the features Assets): they import nothing heavy.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from transfertraj.core.settings import Settings
from transfertraj.tasks.spark import task_spark

log = logging.getLogger("transfertraj.pipeline")


@contextmanager
def no_retry():
    """Errors a retry cannot mend (bad city file, gate refusal, unreadable delivery) -> AirflowFailException
    with the same message: the task fails at once instead of retrying the same input."""
    from airflow.sdk.exceptions import AirflowFailException
    from pydantic import ValidationError

    from transfertraj.core.city_config import CityConfigError
    from transfertraj.jobs.ingest import QualityGateError
    from transfertraj.jobs.landed_files import LandingError

    try:
        yield
    except (CityConfigError, ValidationError, QualityGateError, LandingError) as err:
        raise AirflowFailException(f"{type(err).__name__}: {err}") from err


def ingest_city_date(city_name: str, date: str) -> dict:
    """landing/<city>/<date>/ -> bronze, rejects, silver, runs. Fails without retry on the city's gate
    (QualityGateError) and when no landed file could be read (LandingError), after writing the quality
    report, and on a bad city file; a folder not landed yet (FileNotFoundError) is retried."""
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.ingest import QualityGateError, ingest_date
    from transfertraj.jobs.landed_files import LandingError

    settings = Settings.load()
    with no_retry():
        city = load_city(city_name, settings)
    folder = settings.landing / city.name / date
    if not folder.is_dir():
        raise FileNotFoundError(f"{city.name} {date}: nothing landed at {folder} (was the delivery late?)")
    spark = task_spark(settings)
    with no_retry():
        try:
            report = ingest_date(spark, city, date, settings)
        except (QualityGateError, LandingError):
            _timestamp_formats(spark, city, date, settings)  # a bad_timestamp flood: the first thing to look at
            _quality_report(spark, city, date, settings)  # the report is what an operator opens first
            raise
    log.info("%s", report.summary())
    formats = _timestamp_formats(spark, city, date, settings)
    return {
        "city": city.name,
        "date": date,
        "timestamp_formats": formats,
        "trajectories_out": report.trajectories_out,
        "silver_version": report.silver_version,
        "summary": report.summary(),
    }


def featurize_city_date(city_name: str, date: str) -> dict:
    """silver -> features for one city and date (builds the context tables on first use)."""
    from transfertraj.core.city_config import load_city
    from transfertraj.jobs.featurize import featurize_date

    settings = Settings.load()
    with no_retry():
        city = load_city(city_name, settings)
    return featurize_date(task_spark(settings), city, date, settings)


def quality_report(city_name: str, date: str) -> str:
    """The HTML quality report of one city's delivery date (also after a failed gate); returns its path."""
    from transfertraj.core.city_config import load_city

    settings = Settings.load()
    with no_retry():
        city = load_city(city_name, settings)
    return _quality_report(task_spark(settings), city, date, settings)


def _timestamp_formats(spark, city, date: str, settings: Settings) -> dict:
    """Log (and return) which timestamp format the date's bronze rows are written in; timestamp_format
    auto reads several (jobs/parse_points.py), and the log line says which one this delivery used."""
    from transfertraj.feature_store.delta_io import read_table, table_exists
    from transfertraj.feature_store.tables import table_path
    from transfertraj.jobs.parse_points import detected_timestamp_formats
    from transfertraj.jobs.schemas import HEADER

    if city.raw.format != "point_log" or city.raw.timestamp_format != "auto":
        fmt = city.raw.timestamp_format if city.raw.format == "point_log" else "unix_s"
        log.info("%s %s: timestamp format %s (configured)", city.name, date, fmt)
        return {fmt: None}
    path = table_path(settings, "bronze")
    try:
        if not table_exists(spark, path):
            return {}
        bronze, _ = read_table(spark, path, where={"city": city.name, "date": date})
        headers = [r[HEADER] for r in bronze.select(HEADER).distinct().collect() if r[HEADER] is not None]
        formats = detected_timestamp_formats(bronze, city, headers)
    except Exception as err:  # a log line only: never the reason a run fails, nor what hides the real one
        log.warning("%s %s: timestamp format not detected (%s)", city.name, date, err)
        return {}
    zone = city.raw.timestamp_timezone
    log.info("%s %s: timestamp format %s (text without an offset read in %s)", city.name, date, formats, zone)
    return formats


def _quality_report(spark, city, date: str, settings: Settings) -> str:
    from transfertraj.jobs.quality_report import write_quality_report

    return str(write_quality_report(spark, city, date, settings))


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
    """URI of the Asset a city's features publish (nightly_ingest) and pretrain is scheduled on."""
    settings = settings or Settings.load()
    return f"file://{Path(settings.lake) / 'features'}/city={city}"
