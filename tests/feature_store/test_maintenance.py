"""Delta maintenance: the retention that keeps protected versions, and OPTIMIZE + VACUUM on a real table."""

import subprocess
import sys

import pytest

from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import replace_partition
from transfertraj.feature_store.maintenance import optimize_and_vacuum, vacuum_retention_hours


def test_vacuum_retention_reaches_back_past_protected_versions():
    hour = 3_600_000
    now = 1_000 * hour
    assert vacuum_retention_hours(168, None, now) == 168
    assert vacuum_retention_hours(168, now - 10 * hour, now) == 168  # recent: the default already keeps it
    assert vacuum_retention_hours(168, now - 500.5 * hour, now) == 502  # 20 days old: keep 502 h of history


def test_importing_it_starts_no_spark():
    """The DAG files and the delta-rs reader import the feature store; pyspark must not come with it."""
    code = (
        "import sys, transfertraj.feature_store.maintenance; "
        "print(sorted(m for m in ('pyspark', 'delta') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_optimizes_and_vacuums_existing_tables_keeping_the_protected_version(spark, tmp_path):
    settings = Settings.load(home=tmp_path)
    path = str(settings.lake / "silver")
    df = spark.createDataFrame([("porto", "d1", "a")], "city string, date string, trip_id string")
    v0 = replace_partition(df, path, {"city": "porto", "date": "d1"}, partition_by=("city", "date"))
    replace_partition(df, path, {"city": "porto", "date": "d1"}, partition_by=("city", "date"))

    done = optimize_and_vacuum(spark, settings, protected={"silver": v0}, tables=["silver", "features"])
    # features does not exist yet: skipped; silver's protected commit is seconds old: 7 days keep it
    assert done == [{"table": "silver", "protected_version": v0, "retention_hours": 168.0}]
    assert spark.read.format("delta").option("versionAsOf", v0).load(path).count() == 1

    with pytest.raises(ValueError, match=r"unknown tables \['golden'\]; the lake has \['bronze'"):
        optimize_and_vacuum(spark, settings, protected={}, tables=["golden"])
