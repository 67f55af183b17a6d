"""The nightly ingestion end to end on real Delta tables: real sample, reruns, bad inputs, the gate."""

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import BAD_INPUTS, data_lines, land, land_distinct_trips, point_log_city, porto_like
from transfertraj.core.city_config import load_city
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.tables import table_path
from transfertraj.jobs.ingest import QualityGateError, date_range, ingest_date, shuffle_partitions_for
from transfertraj.jobs.land_sample import land_sample
from transfertraj.jobs.landed_files import LandingError

PORTO_DATE = "2013-07-01"


@pytest.fixture(scope="module")
def porto_run(spark_session, settings):
    """The real Porto sample ingested once (module scope: it takes a while on 2 cores)."""
    spark = spark_session()
    city = load_city("porto")
    land_sample(city, settings)
    return city, ingest_date(spark, city, PORTO_DATE, settings)


def _silver(spark, settings, city, date):
    df, version = read_table(spark, table_path(settings, "silver"), where={"city": city, "date": date})
    return df, version


def _content_hash(df) -> str:
    return (
        df.select(F.sha2(F.to_json(F.struct(*sorted(df.columns))), 256).alias("h"))
        .orderBy("h")
        .agg(F.sha2(F.concat_ws("", F.collect_list("h")), 256))
        .first()[0]
    )


def test_porto_sample_accounting(porto_run):
    _, r = porto_run
    assert r.rows_read == 1264  # the sample's data rows (data/README.md)
    assert r.rows_read == r.rows_accepted + r.rows_rejected
    assert r.rows_rejected_by_reason == {"empty_polyline": 2}
    assert r.points_read == 60_574 - 0  # every POLYLINE point of the accepted rows
    assert r.points_read == r.points_kept + r.points_dropped
    assert r.points_dropped_by_reason["outside_bbox"] > 0
    assert 1000 < r.trajectories_out < 2000


def test_porto_silver_is_clean(spark, settings, porto_run):
    city, r = porto_run
    df, _ = _silver(spark, settings, "porto", PORTO_DATE)
    stats = df.agg(
        F.min("n_points"),
        F.max("n_points"),
        F.count("*"),
        F.sum("n_points"),
        F.min(F.array_min("lon")),
        F.max(F.array_max("lon")),
        F.max(F.col("length_m") / F.col("duration_s") * 3.6),
    ).first()
    assert stats[0] >= city.min_points and stats[1] <= city.max_points
    assert stats[2] == r.trajectories_out and stats[3] == r.points_kept
    assert city.bbox.min_lon <= stats[4] and stats[5] <= city.bbox.max_lon
    assert stats[6] < 150  # mean speeds are physical
    raw_taxis = {"20000589", "20000596"}
    assert not raw_taxis & {row.vehicle_key for row in df.select("vehicle_key").collect()}
    rejects, _ = read_table(spark, table_path(settings, "rejects"), where={"city": "porto", "date": PORTO_DATE})
    assert rejects.count() == r.rows_rejected + r.points_dropped


def test_rerun_replaces_the_partition(spark, settings, porto_run):
    city, first = porto_run
    before, v1 = _silver(spark, settings, "porto", PORTO_DATE)
    hash1, n1 = _content_hash(before), before.count()
    again = ingest_date(spark, city, PORTO_DATE, settings)
    after, v2 = _silver(spark, settings, "porto", PORTO_DATE)
    assert v2 > v1
    assert after.count() == n1 == again.trajectories_out
    assert _content_hash(after) == hash1
    bronze, _ = read_table(spark, table_path(settings, "bronze"), where={"city": "porto", "date": PORTO_DATE})
    assert bronze.count() == first.rows_read  # not doubled
    runs, _ = read_table(spark, table_path(settings, "runs"), where={"city": "porto"})
    assert runs.where(F.col("date") == PORTO_DATE).count() >= 2  # the run log keeps every run


def test_quality_report_is_written(spark, settings, porto_run):
    from transfertraj.jobs.quality_report import write_quality_report

    city, _ = porto_run
    page = write_quality_report(spark, city, PORTO_DATE, settings)
    assert page.exists() and (page.parent / "ingest_quality.png").stat().st_size > 10_000
    assert "rows read 1,264" in page.read_text().lower().replace("rows read", "rows read")


CORPUS = sorted(p for p in BAD_INPUTS.glob("porto_*.csv") if p.name != "porto_missing_columns.csv")
CORPUS_DATE = "2013-07-02"


@pytest.fixture(scope="module")
def corpus_run(spark_session, settings):
    """Every non-fatal bad Porto file landed as one delivery and ingested once."""
    spark = spark_session()
    city = porto_like("badporto")
    land_distinct_trips(settings, city.name, CORPUS_DATE, *CORPUS)  # one delivery; no trip shared across files
    report = ingest_date(spark, city, CORPUS_DATE, settings)
    where = {"city": city.name, "date": CORPUS_DATE}
    bronze, _ = read_table(spark, table_path(settings, "bronze"), where=where)
    rejects, _ = read_table(spark, table_path(settings, "rejects"), where=where)
    silver, _ = read_table(spark, table_path(settings, "silver"), where=where)
    per_file_rows = {r.source_file.split("/")[-1]: r["count"] for r in bronze.groupBy("source_file").count().collect()}
    reasons: dict[str, dict[str, int]] = {}
    for r in rejects.groupBy("source_file", F.col("point_idx").isNull().alias("row"), "reason").count().collect():
        reasons.setdefault(r.source_file.split("/")[-1], {})[("row:" if r.row else "point:") + r.reason] = r["count"]
    trips = {r.source_file.split("/")[-1]: r["count"] for r in silver.groupBy("source_file").count().collect()}
    return report, per_file_rows, reasons, trips


def test_corpus_run_accounts_for_every_row_and_point(corpus_run):
    r, _, _, _ = corpus_run
    assert r.rows_read == sum(data_lines(p) for p in CORPUS)  # counted independently of Spark
    assert r.rows_read == r.rows_accepted + r.rows_rejected
    assert r.points_read == r.points_kept + r.points_dropped
    assert r.files == len(CORPUS)


def test_silver_lacks_the_trips_of_rows_rejected_after_they_were_written(corpus_run):
    """The cleaning workers write silver before the duplicates are known: the driver takes them out."""
    r, _, reasons, trips = corpus_run
    assert reasons["porto_duplicated_rows.csv"]["row:duplicate_row"] >= 2
    assert sum(trips.values()) == r.trajectories_out


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_every_row_of_every_bad_file_is_in_bronze(corpus_run, path: Path):
    _, per_file_rows, _, _ = corpus_run
    assert per_file_rows.get(path.name, 0) == data_lines(path)


EXPECTED_ROW_REASONS = {
    "porto_truncated_lines": {"bad_polyline"},  # cut inside the quoted POLYLINE: its JSON is broken
    "porto_broken_polyline": {"bad_polyline"},
    "porto_duplicated_rows": {"duplicate_row"},
    "porto_non_utf8": {"bad_encoding"},
    "porto_mixed_junk": {"blank_line", "repeated_header", "malformed_csv"},
    "porto_extra_columns": {"malformed_csv"},  # rows with fewer or more fields than their header
    "porto_ms_timestamps": set(),
}


@pytest.mark.parametrize("stem, expected", sorted(EXPECTED_ROW_REASONS.items()))
def test_bad_rows_get_their_reason(corpus_run, stem, expected):
    _, _, reasons, _ = corpus_run
    got = {k.removeprefix("row:") for k in reasons.get(f"{stem}.csv", {}) if k.startswith("row:")}
    # The files share real trips, so a good row may also be a duplicate of one in another file.
    assert got - {"duplicate_row"} == expected - {"duplicate_row"}
    if "duplicate_row" in expected:
        assert reasons[f"{stem}.csv"]["row:duplicate_row"] >= 2  # three copies of one trip in the file


def test_bad_points_get_their_reason(corpus_run):
    _, _, reasons, _ = corpus_run
    assert reasons["porto_nan_coordinates.csv"]["point:invalid_coordinate"] == 4  # NaN lon, NaN lat, 0/0, lon 200
    assert reasons["porto_swapped_latlon.csv"]["point:outside_bbox"] > 0  # swapped lat/lon lands far away


def test_millisecond_timestamps_are_detected(corpus_run, spark, settings):
    _, _, _, trips = corpus_run
    assert trips.get("porto_ms_timestamps.csv", 0) > 0
    df, _ = _silver(spark, settings, "badporto", CORPUS_DATE)
    years = {r.y for r in df.select(F.year("start_ts").alias("y")).distinct().collect()}
    assert years == {2013}


@pytest.mark.slow  # one more whole ingestion of a delivery variant
def test_point_log_with_bad_values(spark, settings):
    city = point_log_city()
    path = BAD_INPUTS / "pointlog_bad_values.csv"
    land(settings, city.name, "2013-07-01", path)
    r = ingest_date(spark, city, "2013-07-01", settings)
    assert r.rows_read == data_lines(path)
    assert r.rows_rejected_by_reason == {
        "bad_timestamp": 1,
        "invalid_coordinate": 3,
        "missing_field": 1,
        "malformed_csv": 2,
        "blank_line": 1,
    }
    assert r.points_dropped_by_reason["duplicate_fix"] == 1
    assert r.points_dropped_by_reason["duplicate_timestamp"] == 1
    assert r.points_read == r.points_kept + r.points_dropped
    assert r.trajectories_out == 1  # v1's 30 fixes; v2 is too short


@pytest.mark.slow  # one more whole ingestion of a delivery variant
def test_missing_columns_is_fatal_and_names_the_file(spark, settings):
    city = porto_like("fatalporto")
    land(settings, city.name, "2013-07-01", BAD_INPUTS / "porto_missing_columns.csv")
    with pytest.raises(
        LandingError,
        match=r"porto_missing_columns.csv: bad_header \(line 1\): the header lacks required column\(s\) .*POLYLINE",
    ):
        ingest_date(spark, city, "2013-07-01", settings)


def test_missing_landing_folder_is_fatal(spark, settings):
    with pytest.raises(LandingError, match="no such landing folder"):
        ingest_date(spark, porto_like("nowhere"), "2013-07-01", settings)


@pytest.mark.slow  # one more whole ingestion of a delivery variant
def test_quality_gate_failure_publishes_nothing_to_silver(spark, settings):
    city = porto_like("gateporto", quality={"max_rejected_share": 0.2, "min_trajectories": 1})
    land(settings, city.name, "2013-07-01", BAD_INPUTS / "porto_mixed_junk.csv")
    with pytest.raises(QualityGateError, match=r"rejected share .* above quality.max_rejected_share 20%"):
        ingest_date(spark, city, "2013-07-01", settings)
    silver_path = table_path(settings, "silver")
    from transfertraj.feature_store.delta_io import table_exists

    if table_exists(spark, silver_path):
        df, _ = read_table(spark, silver_path, where={"city": city.name})
        assert df.count() == 0
    bronze, _ = read_table(spark, table_path(settings, "bronze"), where={"city": city.name})
    assert bronze.count() == data_lines(BAD_INPUTS / "porto_mixed_junk.csv")  # kept for inspection
    runs, _ = read_table(spark, table_path(settings, "runs"), where={"city": city.name})
    assert sorted(r.status for r in runs.collect()) == ["failed_quality_gate", "running"]  # start, outcome


def test_date_range():
    assert date_range("2013-06-30", "2013-07-02") == ["2013-06-30", "2013-07-01", "2013-07-02"]
    with pytest.raises(ValueError, match="before"):
        date_range("2013-07-02", "2013-07-01")


def test_shuffle_partitions_follow_the_delivery_size():
    mb = 1024 * 1024
    assert shuffle_partitions_for(200 * 1024, 4) == 1  # a 2,000-point delivery: one partition
    assert shuffle_partitions_for(0, 4) == 1
    assert shuffle_partitions_for(300 * mb, 4) == 3
    assert shuffle_partitions_for(300 * mb, 2) == 2  # never more than the session is configured for
    assert shuffle_partitions_for(30_000 * mb, 200) == 200
