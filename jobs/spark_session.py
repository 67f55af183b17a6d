"""The one Spark session factory every job uses.

    from transfertraj.jobs.spark_session import get_spark
    spark = get_spark("ingest")          # local[*] by default, Delta Lake enabled

Master and extra configuration come from `transfertraj.core.settings.Settings` (environment
TRANSFERTRAJ_SPARK_MASTER / TRANSFERTRAJ_SPARK_CONF), so the same code runs against a standalone
cluster, YARN or Kubernetes. Under `spark-submit` (a session already configured by the launcher) the
launcher's master wins.

Delta's jars come from Maven Central through Spark's Ivy on first start (33 artifacts, ~87 MB, ~20 s)
and are cached in `<cache>/ivy`; the resolved list is written to a manifest there, and later starts
pass those files as `spark.jars` directly (no Ivy, no network). To pre-fetch them for an offline cluster,
run `transfertraj spark-jars` once on a connected machine and copy `<cache>/ivy/jars/*.jar` to the
cluster (then set `spark.jars` to them instead of `spark.jars.packages`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import sys

from transfertraj.core.cores import available_cores
from transfertraj.core.settings import Settings

log = logging.getLogger(__name__)

MIN_JAVA = 17
# settings.spark_conf may override it (e.g. -XX:TieredStopAtLevel=4). With C1 alone the JVM reserves only 48 MB
# for compiled code, and a long-lived session (the demo's DAG runs, a test run) filled it: "CodeCache is full.
# Compiler has been disabled", and every method compiled after that ran interpreted. 240 MB is the tiered
# JVM's own default; it is reserved address space, committed only as code is compiled.
DRIVER_JIT = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"


class JavaMissingError(RuntimeError):
    """Java is absent or older than Spark 4 needs."""


def java_version_text(java: str | None = None) -> str:
    """The path and what `java -version` prints, for the `java` that Spark will start (JAVA_HOME first,
    then PATH)."""
    java = java or (
        os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    )
    if not java or not os.path.exists(java):
        raise JavaMissingError(
            f"Java {MIN_JAVA}+ is required by Spark 4 and none was found (JAVA_HOME or PATH). "
            "Install it, e.g. 'apt-get install openjdk-17-jre-headless', or set JAVA_HOME."
        )
    return java + "\n" + _version_output(java)


@functools.cache
def _version_output(java: str) -> str:
    return subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr


def java_major_version(java: str | None = None) -> int:
    """Major version of the `java` that Spark will start (JAVA_HOME first, then PATH)."""
    out = java_version_text(java)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise JavaMissingError(f"could not read the Java version from '{java} -version': {out.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 else major  # "1.8.0" style means 8


def check_java() -> int:
    major = java_major_version()
    if major < MIN_JAVA:
        raise JavaMissingError(
            f"Java {major} found, Spark 4 needs Java {MIN_JAVA}+. Install a newer JDK/JRE "
            "(e.g. 'apt-get install openjdk-17-jre-headless') and point JAVA_HOME at it."
        )
    return major


def spark_conf(settings: Settings, app_name: str) -> dict[str, str]:
    """The configuration every session gets; `settings.spark_conf` overrides any of it."""
    # local[*] would take the host's core count; a container or a taskset gets its own (core.cores).
    master = f"local[{available_cores()}]" if settings.spark_master == "local[*]" else settings.spark_master
    conf = {
        "spark.app.name": f"transfertraj-{app_name}",
        "spark.master": master,
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.default.parallelism": str(max(2, settings.shuffle_partitions)),
        # Delta MERGE repartitions by its own setting (50 by default): far too many tasks here.
        "spark.databricks.delta.merge.repartitionBeforeWrite.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        # Instants are stored as UTC timestamps; local calendar fields are derived with the city's zone.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.timestampType": "TIMESTAMP_LTZ",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.jars.ivy": str(settings.ivy_dir),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.debug.maxToStringFields": "500",
        "spark.ui.enabled": os.environ.get("TRANSFERTRAJ_SPARK_UI", "true"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.databricks.delta.retentionDurationCheck.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # The driver JVM's JIT stops at its first tier (C1): a nightly job is short, and C2's compiler
        # threads spent more CPU than they saved. Measured on 2 shared cores, one run after the other
        # (bench/results/ingest-20261205T072126Z.md, C1, and -073021Z.md, C2): a 2,000-point delivery
        # 33 CPU s instead of 65 (whole process), 10 M points 111 CPU s instead of 135 (the hot loops
        # run in the Python workers, not in JIT-compiled Java).
        "spark.driver.extraJavaOptions": DRIVER_JIT,
    }
    conf.update(settings.spark_conf)
    return conf


def _jar_manifest(settings: Settings) -> os.PathLike[str]:
    from importlib.metadata import version

    return settings.ivy_dir / f"delta-jars-{version('delta-spark')}-spark-{version('pyspark')}.txt"


def _cached_jars(settings: Settings) -> str | None:
    """The jar list of an earlier successful start, if every file is still there (skips Ivy)."""
    manifest = _jar_manifest(settings)
    if not manifest.exists():
        return None
    jars = manifest.read_text().strip()
    paths = [j.removeprefix("file://") for j in jars.split(",") if j]
    return jars if paths and all(os.path.exists(p) for p in paths) else None


def get_spark(app_name: str = "transfertraj", settings: Settings | None = None):
    """Return the active session or build one with Delta Lake configured.

    A process that outlives its SparkContext (an Airflow worker running tasks in-process, a test run) gets
    a new one: Spark stops the context itself after an uncaught error in one of its threads (the JVM log
    says which), and PySpark would otherwise hand out the stopped one to every later job."""
    from delta import configure_spark_with_delta_pip
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    stale = SparkContext._active_spark_context
    if stale is not None and stale._jsc is not None and stale._jsc.sc().isStopped():
        log.warning("the SparkContext was stopped by Spark (see the JVM log above for why): starting a new one")
        stale.stop()  # clears PySpark's handles, so the builder below starts a new context in the same JVM
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings = settings or Settings.load()
    check_java()
    # Python workers must run the interpreter (and venv) of the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no hostname lookup on a laptop
    settings.ivy_dir.mkdir(parents=True, exist_ok=True)
    conf = spark_conf(settings, app_name)
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Started by spark-submit (its JVM is already up): the launcher's --master is the command-line
        # flag and wins; setting spark.master here would silently turn a cluster job into a local one.
        conf.pop("spark.master")
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    log.info("starting Spark (%s, master %s)", app_name, conf.get("spark.master", "given by spark-submit"))
    jars = None if "spark.jars" in settings.spark_conf else _cached_jars(settings)
    if jars and "PYSPARK_GATEWAY_PORT" not in os.environ and "spark.driver.extraJavaOptions" not in settings.spark_conf:
        from transfertraj.jobs.class_archive import class_archive_options

        archive = class_archive_options(settings, jars, java_version_text())
        builder = builder.config("spark.driver.extraJavaOptions", f"{DRIVER_JIT} {archive}".strip())
    if jars:
        spark = builder.config("spark.jars", jars).getOrCreate()
    else:
        spark = configure_spark_with_delta_pip(builder).getOrCreate()
        resolved = spark.sparkContext.getConf().get("spark.jars", "")
        if "delta-spark" in resolved:
            _jar_manifest(settings).write_text(resolved)
    spark.sparkContext.setLogLevel(os.environ.get("TRANSFERTRAJ_SPARK_LOG_LEVEL", "WARN"))
    return spark
