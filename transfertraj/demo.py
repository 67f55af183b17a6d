"""The README's main command: the pipeline end to end on the bundled real samples.

It runs the same functions the Airflow DAGs call, stage by stage, and says what each produced.
Stages are added here as the pipeline grows.
"""

from __future__ import annotations

import logging
import time

from transfertraj.city_config import load_city
from transfertraj.settings import Settings

log = logging.getLogger("transfertraj.demo")


DEMO_DATES_PER_CITY = 3  # Beijing's sample spans 74 delivery dates; the demo ingests the first few


def run_demo(settings: Settings, *, cities: list[str]) -> int:
    from jobs.featurize import featurize_date
    from jobs.ingest import QualityGateError, ingest_date
    from jobs.land_sample import land_sample
    from jobs.quality_report import write_quality_report
    from jobs.spark_session import get_spark

    started = time.time()
    log.info("data root: %s (set TRANSFERTRAJ_HOME to move it)", settings.home)
    spark = get_spark("demo", settings)
    failures = 0
    summaries = []
    for name in cities:
        city = load_city(name, settings)
        landed = land_sample(city, settings)
        log.info("%s: landed %d delivery date(s) [%s]", name, len(landed), city.raw.licence)
        for day in list(landed)[:DEMO_DATES_PER_CITY]:
            try:
                report = ingest_date(spark, city, day, settings)
                summaries.append(report.summary())
            except QualityGateError as err:
                failures += 1
                summaries.append(str(err))
                continue
            finally:
                write_quality_report(spark, city, day, settings)
            if report.trajectories_out:
                feats = featurize_date(spark, city, day, settings)
                summaries.append(
                    f"  features: {feats['trajectories']} trajectories, table version {feats['features_version']}"
                    f" (silver v{feats['silver_version']})"
                )
    print("\n== ingestion ==")
    for line in summaries:
        print(line)
    print(f"\nquality reports: {settings.reports}/<city>/<date>/ingest_quality.html")
    log.info("demo finished in %.0f s", time.time() - started)
    return 1 if failures else 0
