"""Parsing bronze rows of each raw format into verdicts and points."""

import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import point_log_city, porto_like
from transfertraj.jobs.parse_points import epoch_seconds, parse_rows
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
        ("yesterday", "auto", "UTC", None),
        ("", "unix_s", "UTC", None),
    ],
)
def test_epoch_seconds(spark, value, fmt, tz, expected):
    got = spark.range(1).select(epoch_seconds(F.lit(value), fmt, tz).alias("t")).first().t
    assert got == expected


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
