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


def run_demo(settings: Settings, *, cities: list[str]) -> int:
    from jobs.land_sample import land_sample

    started = time.time()
    log.info("data root: %s (set TRANSFERTRAJ_HOME to move it)", settings.home)
    for name in cities:
        city = load_city(name, settings)
        landed = land_sample(city, settings)
        log.info("%s: landed %d delivery date(s) [%s]", name, len(landed), city.raw.licence)
    log.info("demo finished in %.0f s", time.time() - started)
    return 0
