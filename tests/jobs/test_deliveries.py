"""Issue #17, the "Deliveries" classes: odd file names, entries outside the landing folder, one bad
file in a delivery, quoted newlines, the gate's share, local time, conflicting duplicates, a killed run.

Every test builds its own small delivery of generated Porto rows (tests/jobs/ingest_fixtures.porto_rows)."""

from __future__ import annotations

import argparse
import gzip
import os
import unicodedata

import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import PORTO_HEADER, porto_like, porto_rows, write_rows
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.tables import table_path
from transfertraj.jobs import ingest as ingest_job
from transfertraj.jobs.ingest import AccountingError, ingest_date
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


def test_a_date_of_only_unreadable_files_fails_naming_them(spark, settings):
    city = porto_like("allbad")
    folder = settings.landing / city.name / DATE
    folder.mkdir(parents=True)
    (folder / "utf16.csv").write_bytes(_text(porto_rows(2, taxi=3)).encode("utf-16"))
    with pytest.raises(LandingError, match=r"utf16\.csv: bad_file_encoding"):
        ingest_date(spark, city, DATE, settings)
    runs = read_table(spark, table_path(settings, "runs"), where={"city": city.name})[0]
    assert [row.status for row in runs.collect()] == ["failed_unreadable"]


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
    assert {row.date: row.status for row in runs.collect()} == {
        "2013-07-01": "published",
        "2013-07-02": "failed_unreadable",
        "2013-07-03": "published",
    }
