import pytest

from transfertraj.jobs import spark_session
from transfertraj.jobs.spark_session import JavaMissingError, check_java, java_major_version, spark_conf


def test_java_on_this_machine_is_new_enough():
    assert check_java() >= 17


def test_missing_java_says_what_to_install(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(spark_session.shutil, "which", lambda _: None)
    with pytest.raises(JavaMissingError, match="apt-get install openjdk-17"):
        java_major_version()


def test_old_java_is_refused(monkeypatch):
    monkeypatch.setattr(spark_session, "java_major_version", lambda: 11)
    with pytest.raises(JavaMissingError, match="Java 11 found, Spark 4 needs Java 17"):
        check_java()


def test_conf_is_sized_for_small_machines_and_overridable(settings):
    conf = spark_conf(settings, "x")
    assert conf["spark.sql.shuffle.partitions"] == "2"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.jars.ivy"].endswith("ivy")
    from dataclasses import replace

    conf = spark_conf(replace(settings, spark_conf={"spark.sql.shuffle.partitions": "64"}), "x")
    assert conf["spark.sql.shuffle.partitions"] == "64"
    # short jobs: C1 only, with room for the code a long-lived session compiles (C1 alone reserves 48 MB)
    assert conf["spark.driver.extraJavaOptions"] == "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"
    jit = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=4"}
    assert spark_conf(replace(settings, spark_conf=jit), "x")["spark.driver.extraJavaOptions"].endswith("=4")


def test_session_has_delta_and_runs_the_driver_python(spark):
    import sys

    jvm_args = list(
        spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    )
    assert "-XX:ReservedCodeCacheSize=240m" in jvm_args  # the driver JVM was started with DRIVER_JIT

    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"
    assert spark.sparkContext.pythonExec == sys.executable or spark.sparkContext.pythonExec.endswith("python")
    assert spark.range(10).selectExpr("sum(id)").first()[0] == 45


HEAL = """
import logging, sys
logging.basicConfig(level=logging.WARNING)
from transfertraj.core.settings import Settings
from transfertraj.jobs.spark_session import get_spark
settings = Settings.load(home=sys.argv[1], shuffle_partitions=2, driver_memory="1g", spark_master="local[1]")
first = get_spark("heal", settings)
first.sparkContext._jsc.sc().stop()  # as Spark does itself after an uncaught error in one of its threads
second = get_spark("heal", settings)
assert second is not first and not second.sparkContext._jsc.sc().isStopped()
print("sum", second.range(10).selectExpr("sum(id)").first()[0])
"""


@pytest.mark.slow  # a JVM of its own: the run's shared session must not be the one stopped
def test_a_context_stopped_by_spark_is_replaced_not_handed_out(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", HEAL, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sum 45" in out.stdout
    assert "SparkContext was stopped by Spark" in out.stderr
