"""Landed files without Spark: line counts as Spark splits lines, odd-quote lines, names Spark cannot open."""

from __future__ import annotations

import io
import os

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
