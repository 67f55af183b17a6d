"""Parsing bronze rows of each raw format into verdicts and points."""

import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import point_log_city, porto_like
from transfertraj.jobs.landed_files import inspect_file
from transfertraj.jobs.parse_points import (
    check_rows,
    count_verdicts,
    detected_timestamp_formats,
    epoch_seconds,
    explode_points,
    final_reason,
    parse_polylines,
    parse_rows,
    points_of_rows,
    row_verdicts,
    timestamp_format_of,
)
from transfertraj.jobs.schemas import BRONZE_SCHEMA

PORTO_HEADER = "TRIP_ID,CALL_TYPE,ORIGIN_CALL,ORIGIN_STAND,TAXI_ID,TIMESTAMP,DAY_TYPE,MISSING_DATA,POLYLINE"
GOOD = '"1","C","","","20000589","1372636858","A","False","[[-8.61,41.14],[-8.62,41.15]]"'


def bronze(spark, header, lines):
    rows = [("f.csv", i, line, header, "c", "d") for i, line in enumerate(lines)]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def verdict_of(spark, city, header, lines):
    verdicts, points = parse_rows(bronze(spark, header, lines), city, [header])
    return [r.reason for r in verdicts.orderBy("row_id").collect()], points


@pytest.mark.parametrize(
    "value, fmt, tz, expected",
    [
        ("1372636858", "unix_s", "UTC", 1372636858),
        ("1372636858000", "unix_s", "UTC", 1372636858),  # milliseconds detected
        ("1372636858000", "unix_ms", "UTC", 1372636858),
        ("2008-10-23 05:53:05", "yyyy-MM-dd HH:mm:ss", "UTC", 1224741185),
        ("2008-10-23 13:53:05", "yyyy-MM-dd HH:mm:ss", "Asia/Shanghai", 1224741185),
        ("2013-07-01T00:00:58", "auto", "UTC", 1372636858),
        ("2013-07-01T01:00:58+01:00", "auto", "Asia/Shanghai", 1372636858),  # an offset wins over the zone
        # A fleet log's microseconds, with and without an offset, 'T' or a space, 'Z'.
        ("2014-01-31 23:00:00.739166", "auto", "UTC", 1391209200.739166),
        ("2014-02-01 07:00:00.739166", "auto", "Asia/Shanghai", 1391209200.739166),
        ("2014-02-01T07:00:00.739166+08:00", "auto", "UTC", 1391209200.739166),
        ("2014-02-01 07:00:00.739166+0800", "auto", "UTC", 1391209200.739166),
        ("2014-01-31T23:00:00.739166Z", "auto", "Europe/Lisbon", 1391209200.739166),
        ("2014-01-31T23:00:00.5Z", "auto", "UTC", 1391209200.5),
        ("2014-01-31T23:00:00.739166123Z", "auto", "UTC", 1391209200.739166),  # nanoseconds: kept to the us
        ("2014-01-31 23:00:00.123", "auto", "UTC", 1391209200.123),
        ("1391209200", "auto", "UTC", 1391209200),
        ("1391209200739", "auto", "UTC", 1391209200.739),
        ("1391209200739166", "auto", "UTC", 1391209200.739166),  # microseconds detected
        ("1391209200739166123", "auto", "UTC", 1391209200.739166),  # nanoseconds detected (kept to ~0.3 us)
        ("1391209200739166123", "unix_s", "Asia/Shanghai", 1391209200.739166),
        ("1391209200739166", "unix_us", "UTC", 1391209200.739166),
        ("1391209200000000000", "unix_ns", "UTC", 1391209200),
        ("yesterday", "auto", "UTC", None),
        ("2014-01-31 23:00:00.", "auto", "UTC", None),
        ("2014-01-31 23:00:00.1234567890", "auto", "UTC", None),
        ("2014-13-31 23:00:00", "auto", "UTC", None),
        ("", "unix_s", "UTC", None),
    ],
)
def test_epoch_seconds(spark, value, fmt, tz, expected):
    got = spark.range(1).select(epoch_seconds(F.lit(value), fmt, tz).alias("t")).first().t
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-6))


def test_auto_timestamps_of_a_fleet_log_with_microseconds(spark):
    header = "vehicle_id,timestamp,lon,lat"
    city = point_log_city(raw={**point_log_city().raw.model_dump(mode="json"), "timestamp_timezone": "Asia/Shanghai"})
    lines = [
        "1131,2014-02-01 07:00:00.739166,104.07,30.67",
        "1131,2014-02-01T07:00:15.739166+08:00,104.07,30.67",
        "1131,2014-01-31T23:00:30.739166Z,104.07,30.67",
        "1131,1391209245,104.07,30.67",
        "1131,1391209260000,104.07,30.67",
        "1131,1391209275000000,104.07,30.67",
        "1131,1391209290000000000,104.07,30.67",
        "1131,2014-02-01 07:01:75.1,104.07,30.67",
    ]
    checked = check_rows(bronze(spark, header, lines), city, [header]).persist()  # as jobs/ingest.py does
    verdicts = row_verdicts(checked, city)
    assert [r.reason for r in verdicts.orderBy("row_id").collect()] == [None] * 7 + ["bad_timestamp"]
    points = explode_points(verdicts)
    assert [r.ts for r in points.orderBy("row_id").collect()] == [1391209200 + 15 * i for i in range(7)]
    formats = bronze(spark, header, [line.split(",")[1] for line in lines]).select(
        timestamp_format_of(F.col("line"), "auto").alias("f")
    )
    assert [r.f for r in formats.orderBy("row_id").collect()] == [
        "iso_local",
        "iso_offset",
        "iso_offset",
        "unix_s",
        "unix_ms",
        "unix_us",
        "unix_ns",
        None,
    ]
    checked.unpersist()


def test_porto_row_verdicts(spark):
    lines = [
        GOOD,
        GOOD,  # an exact copy
        GOOD.replace('"1372636858"', '"soon"').replace('"1"', '"2"', 1),
        GOOD.replace("[[-8.61,41.14],[-8.62,41.15]]", "[]").replace('"1"', '"3"', 1),
        GOOD.replace("[[-8.61,41.14],[-8.62,41.15]]", "[[-8.61,41.14],[-8.6").replace('"1"', '"4"', 1),
        GOOD.replace("[[-8.61,41.14],[-8.62,41.15]]", "[[-8.61,41.14,3.0]]").replace('"1"', '"5"', 1),
        GOOD.replace('"20000589"', '""').replace('"1"', '"6"', 1),
        GOOD[:40],  # truncated: unclosed quote, too few fields
        GOOD + ',"surplus"',
        "",
        PORTO_HEADER,
        GOOD.replace('"A"', '"\ufffd"').replace('"1"', '"7"', 1),
    ]
    got, points = verdict_of(spark, porto_like(), PORTO_HEADER, lines)
    assert got == [
        None,
        "duplicate_row",
        "bad_timestamp",
        "empty_polyline",
        "bad_polyline",
        "bad_polyline",
        "missing_field",
        "malformed_csv",
        "malformed_csv",
        "blank_line",
        "repeated_header",
        "bad_encoding",
    ]
    rows = points.orderBy("point_idx").collect()
    assert [(r.ts, r.lon, r.lat) for r in rows] == [(1372636858, -8.61, 41.14), (1372636873, -8.62, 41.15)]
    assert rows[0].vehicle_id == "20000589"


def test_porto_line_hashes_and_details_are_sparks_sha2_and_substring(spark):
    """The worker hashes and cuts each line (parse_points.line_hashes): the same values Spark's own
    sha2(line, 256) and substring(line, 1, 300) give, multi-byte characters and long lines included."""
    long_trip = "\u00e9\u2603" * 200  # 400 characters, 1,000 bytes of UTF-8
    lines = [GOOD, GOOD.replace('"1"', f'"{long_trip}"', 1), "", "caf\u00e9,\ufffd", GOOD[:40]]
    df = bronze(spark, PORTO_HEADER, lines)
    checked = check_rows(df, porto_like(), [PORTO_HEADER])
    got = {r.row_id: (r.stream_id, r.detail) for r in checked.collect()}
    want = {
        r.row_id: (r.h, r.d)
        for r in df.select("row_id", F.sha2("line", 256).alias("h"), F.substring("line", 1, 300).alias("d")).collect()
    }
    assert got == want


def test_verdict_counts_match_the_verdicts_they_count(spark):
    """count_verdicts moves the flagged rows (footer, duplicate, conflicting versions) in the driver: its
    counts must be those of the verdicts themselves, and a flag must lose to blank lines and structure."""
    conflict = GOOD.replace('"1"', '"9"', 1)
    lines = [
        GOOD,
        GOOD,  # an exact copy: duplicate_row
        conflict,
        conflict.replace("-8.62,41.15", "-8.63,41.16"),  # the same TRIP_ID, another content
        GOOD.replace('"1372636858"', '"soon"').replace('"1"', '"2"', 1),
        GOOD[:40],
        "",
        "EOF",  # a footer
    ]
    city = porto_like()
    checked = check_rows(bronze(spark, PORTO_HEADER, lines), city, [PORTO_HEADER]).persist()
    flags, counts = count_verdicts(checked, city)
    verdicts = row_verdicts(checked, city, flags)
    want = {
        (r.source_file, r.reason): (r.n, r.p)
        for r in verdicts.groupBy("source_file", "reason")
        .agg(F.count(F.lit(1)).alias("n"), F.sum(points_of_rows()).alias("p"))
        .collect()
    }
    assert counts == want
    assert {reason for _, reason in counts} == {
        None,
        "duplicate_row",
        "conflicting_duplicate",
        "bad_timestamp",
        "malformed_csv",
        "blank_line",
        "footer",
    }
    assert counts[("f.csv", None)] == (1, 2)  # the first copy of the good trip, two points
    checked.unpersist()
    assert final_reason("blank_line", None, "footer") == "blank_line"
    assert final_reason("malformed_csv", "bad_timestamp", "duplicate_row") == "malformed_csv"
    assert final_reason(None, "bad_timestamp", "duplicate_row") == "duplicate_row"
    assert final_reason(None, "bad_timestamp", "conflicting_duplicate") == "bad_timestamp"


def test_point_log_row_verdicts(spark):
    header = "vehicle_id,timestamp,lon,lat"
    lines = [
        "v1,1372636858,-8.61,41.14",
        "v1,1372636858000,-8.61,41.14",
        "v1,x,-8.61,41.14",
        "v1,1372636858,NaN,41.1",
        "v1,1372636858,-8.6,95",
        "v1,1372636858,0,0",
        ",1372636858,-8.6,41.1",
        "v1,1372636858,-8.6",
    ]
    got, points = verdict_of(spark, point_log_city(), header, lines)
    assert got == [
        None,
        None,
        "bad_timestamp",
        "invalid_coordinate",
        "invalid_coordinate",
        "invalid_coordinate",
        "missing_field",
        "malformed_csv",
    ]
    assert {r.ts for r in points.collect()} == {1372636858}


def test_point_log_columns_follow_the_mapping_not_the_order(spark):
    city = point_log_city(
        raw={
            "format": "point_log",
            "path": "x.csv",
            "licence": "t",
            "columns": {"vehicle_id": "uid", "timestamp": "datetime", "lon": "lng", "lat": "lat"},
            "timestamp_format": "yyyy-MM-dd HH:mm:ss",
        }
    )
    header = "lat,lng,datetime,uid"
    _, points = verdict_of(spark, city, header, ["39.98,116.31,2008-10-23 05:53:05,001"])
    p = points.first()
    assert (p.vehicle_id, p.lon, p.lat, p.ts) == ("001", 116.31, 39.98, 1224741185)


def test_a_tab_separated_point_log(spark, tmp_path):
    header = "taxi\ttime\tlng\tlat"
    lines = [
        "1131\t2014-02-01 07:00:00.739166\t104.0707\t30.6713",
        "1131\t2014-02-01 07:00:15.112\t104.0711\t30.6719",
        "1131\t2014-02-01 07:00:30\t104.0716",  # a field short
        "",
        "EOF",
    ]
    raw = {
        "format": "point_log",
        "path": "chengdu.tsv",
        "licence": "t",
        "columns": {"vehicle_id": "taxi", "timestamp": "time", "lon": "lng", "lat": "lat"},
        "timestamp_timezone": "Asia/Shanghai",
    }
    city = point_log_city(raw=raw)
    path = tmp_path / "chengdu 2014-02-01.tsv"
    path.write_text("\n".join([header, *lines]) + "\n")
    assert inspect_file(path, city).columns == ("taxi", "time", "lng", "lat")
    rows = [(path.name, i, line, header, "c", "d") for i, line in enumerate(lines)]
    checked = check_rows(spark.createDataFrame(rows, BRONZE_SCHEMA), city, [header]).persist()
    verdicts = row_verdicts(checked, city)
    assert [r.reason for r in verdicts.orderBy("row_id").collect()] == [
        None,
        None,
        "malformed_csv",
        "blank_line",
        "footer",
    ]
    points = explode_points(verdicts).orderBy("row_id").collect()
    assert [(p.vehicle_id, p.ts, p.lon, p.lat) for p in points] == [
        ("1131", 1391209200, 104.0707, 30.6713),
        ("1131", 1391209215, 104.0711, 30.6719),
    ]
    checked.unpersist()


def test_the_detected_timestamp_formats_are_counted_for_the_log(spark):
    header = "vehicle_id,timestamp,lon,lat"
    lines = [
        "1131,2014-02-01 07:00:00.739166,104.07,30.67",
        "1131,2014-02-01 07:00:01.1,104.07,30.67",
        "1131,2014-01-31T23:00:30.739166Z,104.07,30.67",
        "1131,yesterday,104.07,30.67",
        "",
    ]
    city = point_log_city()
    assert detected_timestamp_formats(bronze(spark, header, lines), city, [header]) == {
        "iso_local": 2,
        "iso_offset": 1,
        "unreadable": 1,
    }
    assert detected_timestamp_formats(bronze(spark, header, lines), porto_like(), [header]) == {"unix_s": None}


def test_polylines_are_read_by_their_grammar_only():
    """parse_polylines (the Arrow worker's parse): JSON arrays of number pairs, whitespace anywhere between
    tokens; anything else is not a POLYLINE (a null coordinate, a leading zero, a third value, a cut)."""
    import numpy as np
    import pyarrow as pa

    texts = ["[[-8.61,41.14],[-8.62,41.15]]", "[]", " [ [1 , 2],\n[3e1,-4.5] ] ", "[[NaN,-INF]]", "[[1,null]]"]
    texts += ["[[01,2]]", "[[-8.61,41.14,3.0]]", "[[-8.61,41.14],[-8.6", "[[1,2],]", "[[1,2][3,4]]", None]
    ok, counts, lon, lat = parse_polylines(pa.array(texts))
    assert ok.tolist() == [True, True, True, True] + [False] * 7
    assert counts.tolist() == [2, 0, 2, 1] + [0] * 7
    assert lon[:4].tolist() == [-8.61, -8.62, 1.0, 30.0] and np.isnan(lon[4])
    assert lat.tolist() == [41.14, 41.15, 2.0, -4.5, -np.inf]
