"""Issue #17, the "Deliveries" classes: odd file names, entries outside the landing folder, one bad
file in a delivery, quoted newlines, the gate's share, local time, conflicting duplicates, a killed run.

Every test builds its own small delivery of generated Porto rows (tests/jobs/ingest_fixtures.porto_rows)."""

from __future__ import annotations

import argparse
import gzip
import os
import unicodedata
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import PORTO_HEADER, porto_like, porto_rows, write_rows
from transfertraj.feature_store.delta_io import read_table, table_exists
from transfertraj.feature_store.tables import table_path
from transfertraj.jobs import ingest as ingest_job
from transfertraj.jobs.ingest import AccountingError, QualityGateError, ingest_date
from transfertraj.jobs.landed_files import LandingError

DATE = "2013-07-01"


def _table(spark, settings, name, city, date=DATE):
    df, _ = read_table(spark, table_path(settings, name), where={"city": city, "date": date})
    return df


def _per_file(df) -> dict[str, int]:
    return {r.source_file.split("/")[-1]: r["count"] for r in df.groupBy("source_file").count().collect()}


# ----------------------------------------------------------------------------------- 1. odd file names

ODD_NAMES = [
    "with space.csv",
    "paren (1).csv",
    'quote\'s "q".csv',
    "dollar$HOME.csv",
    unicodedata.normalize("NFC", "café nfc.csv"),
    unicodedata.normalize("NFD", "café nfd.csv"),
    "glob[1]{a,b}*?.csv",
    "percent%20x.csv",
    "colon:x #hash.csv",
]


@pytest.mark.slow
def test_odd_file_names_reach_bronze_and_silver(spark, settings):
    city = porto_like("oddnames")
    folder = settings.landing / city.name / DATE
    for i, name in enumerate(ODD_NAMES):
        write_rows(folder / name, porto_rows(3, taxi=100 + i))
    r = ingest_date(spark, city, DATE, settings)
    assert r.status == "published" and r.files == len(ODD_NAMES)
    assert r.rows_read == r.lines_read == 3 * len(ODD_NAMES) == r.rows_accepted
    bronze = _per_file(_table(spark, settings, "bronze", city.name))
    assert bronze == {name: 3 for name in ODD_NAMES}
    silver = _per_file(_table(spark, settings, "silver", city.name))
    assert set(silver) == set(ODD_NAMES)


def test_rows_lost_before_bronze_fail_the_run(spark, settings, monkeypatch):
    """The row count comes from the files, not from bronze: a reader that drops a file cannot balance."""
    city = porto_like("lossy")
    folder = settings.landing / city.name / DATE
    write_rows(folder / "a.csv", porto_rows(3, taxi=1))
    write_rows(folder / "b c.csv", porto_rows(3, taxi=2))
    real = ingest_job.read_landed_rows

    def lossy(spark, files, **kw):
        return real(spark, files, **kw).where(~F.col("source_file").endswith("b c.csv"))

    monkeypatch.setattr(ingest_job, "read_landed_rows", lossy)
    with pytest.raises(AccountingError, match=r"b c\.csv: 3 data line\(s\) in the file, 0 in bronze"):
        ingest_date(spark, city, DATE, settings)


# ---------------------------------------------------------------------- 2. nothing outside is ever read


@pytest.mark.slow
def test_links_fifos_and_outside_files_are_skipped_never_read(spark, settings, tmp_path):
    city = porto_like("linked")
    folder = settings.landing / city.name / DATE
    write_rows(folder / "good.csv", porto_rows(4, taxi=1))
    outside = tmp_path / "outside"
    write_rows(outside / "elsewhere.csv", porto_rows(5, taxi=2))
    secret = tmp_path / "secret.csv"
    secret.write_text("root:x:0:0:SECRET-FIRST-LINE\n")
    (folder / "elsewhere.csv").symlink_to(outside / "elsewhere.csv")
    (folder / "passwd.csv").symlink_to(secret)
    (folder / "linked_dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(folder / "pipe.csv")
    r = ingest_date(spark, city, DATE, settings)  # a fifo that was opened would block here
    assert r.status == "published"
    assert r.files == 1 and r.rows_read == 4
    assert set(r.files_skipped) == {
        f"{city.name}/{DATE}/{n}" for n in ("elsewhere.csv", "passwd.csv", "linked_dir", "pipe.csv")
    }
    assert r.files_skipped[f"{city.name}/{DATE}/passwd.csv"].startswith("symlink")
    assert r.files_skipped[f"{city.name}/{DATE}/pipe.csv"].startswith("not_regular_file")
    assert "SECRET" not in r.summary() + r.message
    assert _per_file(_table(spark, settings, "bronze", city.name)) == {"good.csv": 4}
    rejects = _table(spark, settings, "rejects", city.name)
    skipped = {row.source_file.split("/")[-1]: row.reason for row in rejects.where(F.col("row_id").isNull()).collect()}
    assert skipped == {
        "elsewhere.csv": "symlink",
        "passwd.csv": "symlink",
        "linked_dir": "symlink",
        "pipe.csv": "not_regular_file",
    }
    assert not any("SECRET" in (row.detail or "") for row in rejects.collect())


def test_a_linked_landing_folder_is_refused_unread(spark, settings, tmp_path):
    city = porto_like("linkedfolder")
    write_rows(tmp_path / "real" / "x.csv", porto_rows(2, taxi=1))
    (settings.landing / city.name).mkdir(parents=True)
    (settings.landing / city.name / DATE).symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(LandingError, match="link or lies outside"):
        ingest_date(spark, city, DATE, settings)


# ------------------------------------------------------------- 3. one bad file fails only that file


def _text(rows: list[str]) -> str:
    return "\n".join([PORTO_HEADER, *rows]) + "\n"


def _bad_files(folder):
    """Good and bad files of one delivery: name -> expected quarantine reason (None: ingested)."""
    good = porto_rows(4, taxi=1)
    write_rows(folder / "good.csv", good)
    write_rows(folder / "cr_only.csv", porto_rows(3, taxi=2), sep="\r")
    (folder / "utf16.csv").write_bytes(_text(porto_rows(2, taxi=3)).encode("utf-16"))
    (folder / "gzipped.csv").write_bytes(gzip.compress(_text(porto_rows(2, taxi=4)).encode()))
    whole = gzip.compress(_text(porto_rows(400, taxi=5)).encode())
    (folder / "truncated.csv.gz").write_bytes(whole[: len(whole) * 2 // 3])
    (folder / os.fsdecode(b"latin1 caf\xe9.csv")).write_bytes(_text(porto_rows(2, taxi=6)).encode())
    return {
        "good.csv": None,
        "cr_only.csv": None,
        "utf16.csv": "bad_file_encoding",
        "gzipped.csv": "wrong_compression",
        "truncated.csv.gz": "unreadable_file",
        "latin1 caf\\xe9.csv": None,
    }


@pytest.mark.slow
def test_one_bad_file_is_quarantined_and_the_others_publish(spark, settings):
    city = porto_like("onebad")
    expected = _bad_files(settings.landing / city.name / DATE)
    r = ingest_date(spark, city, DATE, settings)
    assert r.status == "published"
    assert r.files == 3 and r.rows_read == r.rows_accepted == 4 + 3 + 2
    got = {k.split("/")[-1]: v.split(" ")[0].rstrip(":") for k, v in r.files_quarantined.items()}
    assert got == {k: v for k, v in expected.items() if v}
    assert "(line " in r.files_quarantined[f"{city.name}/{DATE}/truncated.csv.gz"]
    assert _per_file(_table(spark, settings, "bronze", city.name)) == {
        "good.csv": 4,
        "cr_only.csv": 3,
        "latin1 caf\\xe9.csv": 2,
    }
    rejects = _table(spark, settings, "rejects", city.name).where(F.col("row_id").isNull())
    assert {row.source_file.split("/")[-1]: row.reason for row in rejects.collect()} == got
    assert set(_per_file(_table(spark, settings, "silver", city.name))) == {
        "good.csv",
        "cr_only.csv",
        "latin1 caf\\xe9.csv",
    }


@pytest.mark.slow
def test_a_date_of_only_unreadable_files_fails_naming_them(spark, settings):
    city = porto_like("allbad")
    folder = settings.landing / city.name / DATE
    folder.mkdir(parents=True)
    (folder / "utf16.csv").write_bytes(_text(porto_rows(2, taxi=3)).encode("utf-16"))
    with pytest.raises(LandingError, match=r"utf16\.csv: bad_file_encoding"):
        ingest_date(spark, city, DATE, settings)
    runs = read_table(spark, table_path(settings, "runs"), where={"city": city.name})[0]
    assert sorted(row.status for row in runs.collect()) == ["failed_unreadable", "running"]


@pytest.mark.slow
def test_backfill_reports_every_date_and_fails_at_the_end(spark, settings, monkeypatch, capsys):
    city = porto_like("backfill")
    base = settings.landing / city.name
    write_rows(base / "2013-07-01" / "a.csv", porto_rows(3, taxi=1))
    (base / "2013-07-02").mkdir(parents=True)
    (base / "2013-07-02" / "bad.csv").write_bytes(gzip.compress(b"x"))
    write_rows(base / "2013-07-03" / "c.csv", porto_rows(3, taxi=3))
    monkeypatch.setattr(ingest_job, "load_city", lambda name, settings: city)
    args = argparse.Namespace(
        city=city.name, date=None, start="2013-07-01", end="2013-07-03", all_landed=False, report=False
    )
    assert ingest_job.run(args, settings) == 1
    out = capsys.readouterr().out
    assert "2 date(s) ok, 1 failed" in out
    assert "2013-07-02  FAILED LandingError" in out and "bad.csv: wrong_compression" in out
    runs = read_table(spark, table_path(settings, "runs"), where={"city": city.name})[0]
    assert {row.date: row.status for row in runs.where(F.col("status") != "running").collect()} == {
        "2013-07-01": "published",
        "2013-07-02": "failed_unreadable",
        "2013-07-03": "published",
    }


# ------------------------------------------------------------------ 4. quoted newlines inside a field


@pytest.mark.slow
def test_a_quoted_field_may_span_lines(spark, settings):
    city = porto_like("multiline")
    folder = settings.landing / city.name / DATE
    rows = porto_rows(3, taxi=1)
    rows[1] = rows[1].replace("],[", "],\n[", 2)  # the POLYLINE of row 2 spans 3 lines
    rows[2] = rows[2].replace(',"C",', ',"C\r\nstreet hail",', 1)  # CRLF inside CALL_TYPE
    write_rows(folder / "multiline.csv", rows)
    good = porto_rows(2, taxi=2)
    cut = good[0][: good[0].index("],[") + 5]  # a truncated line: its quote never closes
    write_rows(folder / "truncated.csv", [cut, *good])
    r = ingest_date(spark, city, DATE, settings)
    assert r.lines_read == (1 + 3 + 2) + 3  # physical lines: row 2 spans 3, row 3 spans 2
    assert r.rows_rejected_by_reason == {"bad_polyline": 1}
    assert r.rows_read == 3 + 3 and r.rows_accepted == 3 + 2
    assert _per_file(_table(spark, settings, "bronze", city.name)) == {"multiline.csv": 6, "truncated.csv": 3}
    silver = _table(spark, settings, "silver", city.name)
    assert silver.where(F.col("source_file").endswith("multiline.csv")).agg(F.sum("n_points")).first()[0] == 3 * 8


# ------------------------------------------------------------- 5. the quality gate counts data rows


@pytest.mark.slow
def test_blank_lines_and_a_footer_do_not_fail_the_gate(spark, settings):
    city = porto_like("footer", quality={"max_rejected_share": 0.2, "min_trajectories": 1})
    folder = settings.landing / city.name / DATE
    rows = porto_rows(4, taxi=1)
    write_rows(folder / "with_footer.csv", [rows[0], "", rows[1], "", "", rows[2], rows[3], "", "EOF", "total 4 rows"])
    r = ingest_date(spark, city, DATE, settings)
    assert r.status == "published" and r.rows_accepted == 4
    assert r.rows_rejected_by_reason == {"blank_line": 4, "footer": 2}


@pytest.mark.slow
def test_the_gate_names_the_files_and_reasons_that_drove_it(spark, settings):
    city = porto_like("gatefiles", quality={"max_rejected_share": 0.2, "min_trajectories": 1})
    folder = settings.landing / city.name / DATE
    write_rows(folder / "good.csv", porto_rows(6, taxi=1))
    write_rows(folder / "junk.csv", [*porto_rows(2, taxi=2), '"x","y"', "a,b,c", '"1","2"', "", "EOF"])
    with pytest.raises(QualityGateError) as err:
        ingest_date(spark, city, DATE, settings)
    msg = str(err.value)
    assert "rejected share 27.3% of 11 data rows" in msg
    assert "junk.csv: malformed_csv 3" in msg and "good.csv" not in msg


# ------------------------------------------------------------------- 7. conflicting duplicates


@pytest.mark.slow  # one more whole ingestion of a delivery variant
def test_one_trip_id_with_two_contents_is_quarantined_as_a_conflict(spark, settings):
    city = porto_like("conflict")
    folder = settings.landing / city.name / DATE
    rows = porto_rows(3, taxi=1)
    other = rows[0].replace("[-8.", "[-8.0", 1).replace(",41.15", ",41.16", 1)  # same TRIP_ID, another POLYLINE
    write_rows(folder / "a.csv", [rows[0], rows[1], rows[0]])
    write_rows(folder / "b.csv", [other, rows[2]])
    r = ingest_date(spark, city, DATE, settings)
    assert r.rows_rejected_by_reason == {"conflicting_duplicate": 2, "duplicate_row": 1}
    assert r.rows_accepted == 2
    rejects = _table(spark, settings, "rejects", city.name).where(F.col("reason") == "conflicting_duplicate")
    assert {row.source_file.split("/")[-1] for row in rejects.collect()} == {"a.csv", "b.csv"}


# ------------------------------------------------------------------------------ 8. a killed run


class Killed(BaseException):
    """What a SIGKILL between two tables looks like from inside: nothing after it runs."""


@pytest.mark.slow
def test_a_run_killed_between_tables_is_visible_and_the_next_run_repairs_it(spark, settings, monkeypatch):
    from transfertraj.jobs.run_history import runs_lines

    city = porto_like("killed")
    write_rows(settings.landing / city.name / DATE / "a.csv", porto_rows(3, taxi=1))
    real = ingest_job.commit_parts

    def kill_before_silver(sink, *args, **kw):  # silver's files are written; its commit never happens
        if not sink.table.rstrip("/").endswith("silver"):
            return real(sink, *args, **kw)  # the rejects, committed before silver
        raise Killed

    monkeypatch.setattr(ingest_job, "commit_parts", kill_before_silver)
    with pytest.raises(Killed):
        ingest_date(spark, city, DATE, settings)
    monkeypatch.setattr(ingest_job, "commit_parts", real)
    assert (
        not table_exists(spark, table_path(settings, "silver"))
        or not read_table(spark, table_path(settings, "silver"), where={"city": city.name})[0].count()
    )  # the files written before the kill are in no version
    killed = ingest_job.interrupted_runs(spark, settings, city.name, DATE)
    assert len(killed) == 1
    folder = Path(table_path(settings, "silver")) / f"city={city.name}"
    run_id = killed[0].split(" ")[0]
    assert not [f for f in folder.rglob("*.parquet") if run_id in f.name]  # its workers' files went with it
    assert any(" interrupted " in line for line in runs_lines(spark, settings, city.name))
    r = ingest_date(spark, city, DATE, settings)
    assert r.status == "published" and f"repairs interrupted run {killed[0]}" in r.message
    assert ingest_job.interrupted_runs(spark, settings, city.name, DATE) == []  # closed: said once
    runs = read_table(spark, table_path(settings, "runs"), where={"city": city.name})[0]
    assert sorted(row.status for row in runs.collect()) == ["interrupted", "published", "running", "running"]


# ------------------------------------------------------------------------- 6. local time and DST


def _local_fixes(vehicle: str, start: str, n: int, lat: float) -> list[str]:
    from datetime import datetime, timedelta

    t0 = datetime.fromisoformat(start)
    out = []
    for k in range(n):
        tri = k % 80 if k % 80 < 40 else 80 - k % 80  # back and forth inside the box, ~20 km/h
        t = t0 + timedelta(seconds=15 * k)
        out.append(f"{vehicle},{t:%Y-%m-%d %H:%M:%S},{-8.64 + 0.001 * tri:.6f},{lat:.6f}")
    return out


@pytest.mark.slow
def test_dst_hours_are_resolved_by_fix_order_or_quarantined(spark, settings):
    from tests.jobs.ingest_fixtures import point_log_city

    raw = point_log_city("dst").raw.model_dump(mode="json", exclude_none=True)
    city = point_log_city("dst", raw={**raw, "timestamp_timezone": "Europe/Lisbon"})
    day = "2013-10-27"  # Lisbon: at 02:00 WEST the clock goes back to 01:00 WET; 01:00-01:59 happens twice
    rows = _local_fixes("v1", "2013-10-27 00:30:00", 360, 41.15)  # 00:30 .. 01:59:45, summer time
    rows += _local_fixes("v1", "2013-10-27 01:00:00", 120, 41.15)[:120]  # 01:00 .. 01:29:45 again, winter
    rows += _local_fixes("v2", "2013-10-27 01:10:00", 40, 41.16)  # only inside the repeated hour: which pass?
    rows += ["v3,2013-03-31 01:30:00,-8.61,41.15"]  # the spring change skips 01:00-01:59: never happened
    write_rows(settings.landing / city.name / day / "fixes.csv", rows, header="vehicle_id,timestamp,lon,lat")
    r = ingest_date(spark, city, day, settings)
    assert r.rows_rejected_by_reason == {"nonexistent_local_time": 1}
    assert r.points_dropped_by_reason.get("ambiguous_local_time") == 40  # v2, not guessed
    assert not {"duplicate_timestamp", "duplicate_fix"} & set(r.points_dropped_by_reason)
    silver = _table(spark, settings, "silver", city.name, day)
    ts = sorted(t for row in silver.select("ts").collect() for t in row.ts)
    assert len(ts) == len(set(ts)) == r.points_kept
    assert ts[0] == 1382830200 and ts[-1] == 1382830200 + 479 * 15  # 23:30 UTC .. 01:29:45 UTC, no hole
