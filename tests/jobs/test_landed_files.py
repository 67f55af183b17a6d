"""Landed files without Spark: line counts as Spark splits lines, odd-quote lines, names Spark cannot open."""

from __future__ import annotations

import io
import os
import random
import re

import pytest

from tests.jobs.ingest_fixtures import PORTO_HEADER, porto_like, porto_rows, write_rows
from transfertraj.jobs import bronze_rows, landed_files
from transfertraj.jobs.landed_files import _scan, inspect_file


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
@pytest.mark.parametrize(
    "raw, lines, odd",
    [
        (b"", 0, False),
        (b"a\nb\n", 2, False),
        (b"a\r\nb\r\nc", 3, False),
        (b"a\rb\rc\r", 3, False),
        (b"a\r\n\r\nb\n\n", 4, False),
        (b'h\n1,"x\ny",2\n', 3, True),
        (b'h\r1,"x""y",2\r', 2, False),
        (b'h\r1,"open\r', 2, True),
    ],
)
def test_scan_counts_lines_as_spark_splits_them(monkeypatch, chunk, raw, lines, odd):
    monkeypatch.setattr(landed_files, "CHUNK", chunk)
    s = _scan(io.BytesIO(raw), compressed=False)
    assert (s.lines, s.odd_quotes) == (lines, odd)


def test_a_bom_header_is_read_and_a_latin1_header_is_quarantined(tmp_path):
    city = porto_like("bom")
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + (PORTO_HEADER + "\n").encode())
    assert inspect_file(p, city).header == PORTO_HEADER
    q = tmp_path / "latin1.csv"
    q.write_bytes(PORTO_HEADER.replace("TRIP_ID", "TRIP_ID\xe9").encode("latin-1") + b"\n")
    with pytest.raises(landed_files._Quarantine, match="not UTF-8"):
        inspect_file(q, city)


def test_a_name_spark_cannot_open_goes_through_a_hard_link_or_is_left_out(tmp_path, monkeypatch):
    city = porto_like("names")
    odd = write_rows(tmp_path / "land" / os.fsdecode(b"caf\xe9 a:b.csv"), porto_rows(1, taxi=1))
    plain = write_rows(tmp_path / "land" / "plain.csv", porto_rows(1, taxi=2))
    files = [inspect_file(p, city, rel=landed_files.printable_name(p.name)) for p in (odd, plain)]
    assert [f.spark_safe_name for f in files] == [False, True]
    staging = tmp_path / "land" / ".staging" / "run"
    with bronze_rows.spark_readable(files, staging) as paths:
        linked = paths[files[0].rel]
        assert linked.parent == staging and os.path.samefile(linked, odd) and not linked.is_symlink()
        assert paths[files[1].rel] == plain
    assert not staging.exists()

    def no_link(*a, **kw):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(bronze_rows.os, "link", no_link)
    with bronze_rows.spark_readable(files, staging) as paths:
        assert set(paths) == {files[1].rel}


def _headerless_city(**raw):
    from tests.jobs.ingest_fixtures import point_log_city

    columns = {"vehicle_id": 0, "timestamp": 2, "lon": 3, "lat": 4}
    return point_log_city(raw={"format": "point_log", "path": "x.csv", "licence": "t", "header": False,
                               "columns": columns, **raw})  # fmt: skip


def test_a_headerless_file_is_read_by_position_and_every_line_is_data(tmp_path):
    city = _headerless_city()
    p = tmp_path / "gaia.csv"
    p.write_text("d1,o1,1475337610,104.04,30.69\nd1,o1,1475337613,104.05,30.69\n")
    f = inspect_file(p, city)
    assert f.columns == ("_c0", "_c1", "_c2", "_c3", "_c4") and f.header == "_c0,_c1,_c2,_c3,_c4"
    assert (f.lines, f.data_lines, f.header_line) == (2, 2, False)  # no line is a header
    short = tmp_path / "short.csv"
    short.write_text("d1,o1,1475337610\n")
    with pytest.raises(
        landed_files._Quarantine, match="the file has 3 column\\(s\\); the mapping needs lon \\(position 3\\)"
    ):
        inspect_file(short, city)


def test_a_parquet_file_names_its_columns_and_counts_its_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.jobs.ingest_fixtures import point_log_city

    city = point_log_city()
    p = tmp_path / "fleet.parquet"
    table = pa.table({"vehicle_id": ["a", "b\nc"], "timestamp": [1, 2], "lon": [1.0, 2.0], "lat": [3.0, 4.0]})
    pq.write_table(table, p)
    f = inspect_file(p, city)
    assert f.parquet and f.header == "vehicle_id,timestamp,lon,lat" and f.columns == tuple(table.column_names)
    assert (f.lines, f.bronze_rows) == (3, 2)  # 2 rows; one text value holds a line break its CSV text will too
    by_position = _headerless_city(columns={"vehicle_id": 0, "timestamp": 1, "lon": 2, "lat": 3})
    assert inspect_file(p, by_position).columns == ("_c0", "_c1", "_c2", "_c3")  # header: false: by position
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(landed_files._Quarantine, match="not a readable Parquet file"):
        inspect_file(bad, city)
    lacking = tmp_path / "lacking.parquet"
    pq.write_table(table.drop_columns(["lat"]), lacking)
    with pytest.raises(landed_files._Quarantine, match="lacks required column"):
        inspect_file(lacking, city)


def test_odd_quote_lines_are_found_as_a_line_by_line_count_finds_them():
    """has_odd_quote_line against the plain definition, on random lines of quotes, breaks and text."""
    rng = random.Random(7)
    for _ in range(2000):
        body = bytes(rng.choice(b'"\n\rab,') for _ in range(rng.randrange(0, 30)))
        want = any(line.count(b'"') % 2 for line in re.split(rb"\r|\n", body))
        assert landed_files.has_odd_quote_line(body) == want, body
