"""Delta maintenance: the retention that keeps protected versions, and OPTIMIZE + VACUUM on a real table."""

import subprocess
import sys

import pytest

from transfertraj.core.settings import Settings
from transfertraj.feature_store.delta_io import replace_partition
from transfertraj.feature_store.maintenance import (
    optimize_and_vacuum,
    partitions_to_compact,
    vacuum_retention_hours,
)


def test_vacuum_retention_reaches_back_past_protected_versions():
    hour = 3_600_000
    now = 1_000 * hour
    assert vacuum_retention_hours(168, None, now) == 168
    assert vacuum_retention_hours(168, now - 10 * hour, now) == 168  # recent: the default already keeps it
    assert vacuum_retention_hours(168, now - 500.5 * hour, now) == 502  # 20 days old: keep 502 h of history


def test_compacts_only_partitions_with_enough_small_files():
    mb = 1024**2
    grid = [("city=sf", 40 * mb)] * 4  # a city's context grid: 4 files of 40 MB, nothing to gain
    runs = [("city=porto", 10_000)] * 30  # one tiny file per run appended: worth merging
    big = [("city=rome", 900 * mb)] * 20  # large files are left alone however many
    assert partitions_to_compact(grid + runs + big) == ["city=porto"]
    assert partitions_to_compact(grid, min_small_files=4) == ["city=sf"]
    assert partitions_to_compact(grid, small_file_bytes=32 * mb, min_small_files=1) == []
    assert partitions_to_compact([]) == []


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
    # one file per partition: OPTIMIZE skipped; the replaced file is seconds old: VACUUM finds nothing
    assert done == [
        {"table": "silver", "protected_version": v0, "retention_hours": 168.0, "optimized": [], "vacuumed": 0}
    ]
    assert spark.read.format("delta").option("versionAsOf", v0).load(path).count() == 1

    def no_spark():
        raise AssertionError("nothing to compact or delete, yet Spark was started")

    # the same decision from the Delta log alone: the session factory is never called
    again = optimize_and_vacuum(no_spark, settings, protected={"silver": v0}, tables=["silver", "features"])
    assert again == done

    # eight small files in one partition: compacted there, rows unchanged
    bronze = str(settings.lake / "bronze")
    many = spark.createDataFrame([("porto", "d1", str(i)) for i in range(16)], df.schema).repartition(8)
    replace_partition(many, bronze, {"city": "porto", "date": "d1"}, partition_by=("city", "date"))
    [done] = optimize_and_vacuum(lambda: spark, settings, protected={}, tables=["bronze"])
    assert done["optimized"] == ["city=porto/date=d1"]
    assert spark.read.format("delta").load(bronze).count() == 16

    with pytest.raises(ValueError, match=r"unknown tables \['golden'\]; the lake has \['bronze'"):
        optimize_and_vacuum(spark, settings, protected={}, tables=["golden"])
