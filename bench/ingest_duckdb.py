"""The DuckDB peer of the ingestion benchmark: the Porto cleaning as SQL in one embedded DuckDB.

    python bench/ingest_duckdb.py --input DELIVERY_DIR --out OUT_DIR --city-file config/cities/porto.yaml

DuckDB is a benchmark-only dependency (requirements-bench.txt): the single-node engine a user might pick
instead of Spark. Run by bench/ingest.py in a child process of its own; prints one JSON line of counts
and timings. Same rules, in the same order, as jobs/ingest.py + jobs/clean_trips.py and as
bench/ingest_pandas.py (see its docstring for the list and for what the peers leave out). Each split of
the rule chain is materialised as a temporary table, as the Spark job persists its frames there.
DuckDB uses every core it sees (threads = CPU count) and spills to a temp folder beside the output.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peer_cli import peer_main  # noqa: E402
from transfertraj.core.city_config import load_city_file  # noqa: E402
from transfertraj.core.constants import EPOCH_UNITS  # noqa: E402
from transfertraj.core.geo import EARTH_RADIUS_M  # the same sphere as the pipeline

FIX_INTERVAL_S = 15
MIN_EPOCH_S, MAX_EPOCH_S = 631_152_000, 4_102_444_800


def _q(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def statements(files: list[Path], out: Path, city, date: str, key: str) -> list[tuple[str, str]]:
    """(stage, SQL) in order."""
    c, b = city.cleaning, city.bbox
    # A stream: a Porto row (one trip as recorded), or a point log's vehicle; its fixes in (ts, row) order.
    skey, tie = ("row_id", "point_idx") if city.raw.format == "porto_csv" else ("vehicle_id", "row_id")
    STREAM = f"(PARTITION BY {skey} ORDER BY ts, {tie})"  # noqa: N806
    state_value = city.raw.trip_state_value if city.raw.format == "point_log" else None
    off_trip = "false" if state_value is None else f"state IS DISTINCT FROM '{state_value}'"
    vmax = c.max_speed_kmh / 3.6
    file_list = "[" + ", ".join(_q(f) for f in files) + "]"
    hav = "hav({0}, {1}, {2}, {3})".format
    cols = "TRIP_ID, CALL_TYPE, ORIGIN_CALL, ORIGIN_STAND, TAXI_ID, TIMESTAMP, DAY_TYPE, MISSING_DATA, POLYLINE"
    stages = [
        (
            "setup",
            f"""
CREATE MACRO hav(lon1, lat1, lon2, lat2) AS 2 * {EARTH_RADIUS_M} * asin(least(1.0, sqrt(
    sin(radians(lat2 - lat1) / 2) ^ 2 + cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2) ^ 2)));
CREATE TEMP TABLE rejects (source_file VARCHAR, row_id BIGINT, point_idx INTEGER, reason VARCHAR,
                           ts BIGINT, lon DOUBLE, lat DOUBLE);""",
        ),
        (
            "read+bronze",
            f"""
CREATE TEMP TABLE raw AS
SELECT row_number() OVER () - 1 AS row_id, parse_filename(filename) AS source_file, * EXCLUDE (filename)
FROM read_csv({file_list}, header = true, all_varchar = true, filename = true, quote = '"', escape = '"',
              columns = {{{", ".join(f"'{n}': 'VARCHAR'" for n in cols.split(", "))}}});
COPY raw TO {_q(out / "bronze.parquet")} (FORMAT parquet);""",
        ),
        (
            "parse+explode",
            f"""
CREATE TEMP TABLE verdict AS
WITH firsts AS (SELECT min(row_id) AS row_id FROM raw GROUP BY {cols}),  -- a hash aggregate, not a window
v AS (
    SELECT row_id, source_file, TAXI_ID, POLYLINE, f.row_id IS NULL AS dup,
           try_cast(TIMESTAMP AS DOUBLE) AS t, try_cast(POLYLINE AS DOUBLE[][]) AS poly
    FROM raw LEFT JOIN (SELECT row_id, true AS first FROM firsts) f USING (row_id))
SELECT row_id, source_file, trim(TAXI_ID) AS vehicle_id, poly,
       CAST(floor(CASE WHEN t > 1e11 THEN t / 1000 ELSE t END) AS BIGINT) AS ts0,
       CASE WHEN dup THEN 'duplicate_row'
            WHEN coalesce(trim(TAXI_ID), '') = '' OR coalesce(POLYLINE, '') = '' THEN 'missing_field'
            WHEN t IS NULL OR NOT (CASE WHEN t > 1e11 THEN t / 1000 ELSE t END BETWEEN {MIN_EPOCH_S} AND {MAX_EPOCH_S})
                 THEN 'bad_timestamp'
            WHEN poly IS NULL OR NOT list_bool_and(list_transform(poly, lambda p: len(p) = 2 AND p[1] IS NOT NULL
                                                                         AND p[2] IS NOT NULL)) THEN 'bad_polyline'
            WHEN len(poly) = 0 THEN 'empty_polyline' END AS reason
FROM v;
INSERT INTO rejects SELECT source_file, row_id, NULL, reason, NULL, NULL, NULL FROM verdict WHERE reason IS NOT NULL;
CREATE TEMP TABLE p0 AS
SELECT row_id, source_file, vehicle_id, CAST(idx AS INTEGER) AS point_idx, ts0 + idx * {FIX_INTERVAL_S} AS ts,
       p[1] AS lon, p[2] AS lat, NULL::VARCHAR AS state
FROM (SELECT row_id, source_file, vehicle_id, ts0, unnest(poly) AS p, unnest(range(len(poly))) AS idx
      FROM verdict WHERE reason IS NULL);""",
        ),
        (
            "clean",
            f"""
CREATE TEMP TABLE s1 AS
WITH a AS (
    SELECT *, CASE
        WHEN lon IS NULL OR lat IS NULL OR isnan(lon) OR isnan(lat) OR abs(lon) > 180 OR abs(lat) > 90
             OR (lon = 0 AND lat = 0) THEN 'invalid_coordinate'
        WHEN lag(ts) OVER s = ts AND lag(lon) OVER s = lon AND lag(lat) OVER s = lat THEN 'duplicate_fix'
        WHEN lag(ts) OVER s = ts THEN 'duplicate_timestamp' END AS r0,
        NOT coalesce(lon BETWEEN {b.min_lon} AND {b.max_lon} AND lat BETWEEN {b.min_lat} AND {b.max_lat}, false) AS outside
    FROM p0 WINDOW s AS {STREAM}),
-- 'the last earlier fix still kept' (clean_points.prev_where): a running last value that skips nulls
e AS (
    SELECT *,
        coalesce(last_value(CASE WHEN r0 IS NULL THEN outside END IGNORE NULLS) OVER before, false) AS brk0,
        last_value(CASE WHEN r0 IS NULL AND NOT outside THEN state END IGNORE NULLS) OVER before AS prev_state
    FROM a WINDOW before AS ({STREAM[1:-1]} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))
SELECT * EXCLUDE (r0, outside, brk0, prev_state),
    CASE WHEN r0 IS NOT NULL THEN r0 WHEN outside THEN 'outside_bbox' WHEN {off_trip} THEN 'off_trip' END AS reason,
    brk0 OR coalesce({"prev_state <> state" if state_value is not None else "false"}, false) AS brk
FROM e;
INSERT INTO rejects SELECT source_file, row_id, point_idx, reason, ts, lon, lat FROM s1 WHERE reason IS NOT NULL;
CREATE TEMP TABLE s2 AS
WITH w AS (
    SELECT * EXCLUDE (reason), lag(lon) OVER s AS plon, lag(lat) OVER s AS plat, lead(lon) OVER s AS nlon,
           lead(lat) OVER s AS nlat, ts - lag(ts) OVER s AS dt_in, lead(ts) OVER s - ts AS dt_out
    FROM s1 WHERE reason IS NULL WINDOW s AS {STREAM})
SELECT * EXCLUDE (plon, plat, nlon, nlat, dt_in, dt_out),
       CASE WHEN coalesce({hav("plon", "plat", "lon", "lat")} / dt_in > {vmax}
                     AND {hav("lon", "lat", "nlon", "nlat")} / dt_out > {vmax}
                     AND {hav("plon", "plat", "nlon", "nlat")} / (dt_in + dt_out) <= {vmax}, false)
            THEN 'speed_spike' END AS reason
FROM w;
INSERT INTO rejects SELECT source_file, row_id, point_idx, reason, ts, lon, lat FROM s2 WHERE reason IS NOT NULL;
CREATE TEMP TABLE s3 AS
WITH a AS (
    SELECT * EXCLUDE (reason), ts - lag(ts) OVER s AS dt,
           {hav("lag(lon) OVER s", "lag(lat) OVER s", "lon", "lat")} AS d_in
    FROM s2 WHERE reason IS NULL WINDOW s AS {STREAM}),
b AS (SELECT *, coalesce(d_in / dt * 3.6 >= {c.stay_max_speed_kmh}, true) AS moving FROM a),
r AS (SELECT *, sum(moving::INT) OVER (PARTITION BY {skey} ORDER BY ts, {tie}
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run FROM b),
st AS (SELECT *, NOT moving AND max(ts) OVER g - min(ts) OVER g >= {c.stay_split_s}
                 AND {hav("min(lon) OVER g", "min(lat) OVER g", "max(lon) OVER g", "max(lat) OVER g")} <= {c.stay_radius_m}
                 AS stay
       FROM r WINDOW g AS (PARTITION BY {skey}, run)),
k AS (SELECT *, (brk OR coalesce(lag(stay) OVER s, false)
                 OR coalesce(dt > {c.gap_split_s} OR d_in / dt > {vmax}, false))::INT AS brk_all
      FROM st WINDOW s AS {STREAM})
SELECT source_file, row_id, vehicle_id, point_idx, ts, lon, lat,
       sum(brk_all) OVER (PARTITION BY {skey} ORDER BY ts, {tie}
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS seg,
       CASE WHEN stay THEN 'stay' END AS reason
FROM k;
INSERT INTO rejects SELECT source_file, row_id, point_idx, reason, ts, lon, lat FROM s3 WHERE reason IS NOT NULL;
CREATE TEMP TABLE s4 AS
WITH t AS (
    SELECT * EXCLUDE (reason),
           CAST(round((ts - min(ts) OVER (PARTITION BY {skey}, seg)) / {city.sampling_interval_s}) AS BIGINT) AS tick,
           min(ts) OVER (PARTITION BY {skey}, seg) AS t0
    FROM s3 WHERE reason IS NULL)
SELECT * EXCLUDE (t0),
       CASE WHEN row_number() OVER (PARTITION BY {skey}, seg, tick
                                    ORDER BY abs(ts - (t0 + tick * {city.sampling_interval_s})), ts, {tie}) > 1
            THEN 'resampled_out' END AS reason
FROM t;
INSERT INTO rejects SELECT source_file, row_id, point_idx, reason, ts, lon, lat FROM s4 WHERE reason IS NOT NULL;
CREATE TEMP TABLE s5 AS
WITH g AS (
    SELECT * EXCLUDE (reason),
           coalesce(tick - lag(tick) OVER (PARTITION BY {skey}, seg ORDER BY tick) > 1, false)::INT AS gap
    FROM s4 WHERE reason IS NULL),
u AS (SELECT *, sum(gap) OVER (PARTITION BY {skey}, seg ORDER BY tick
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sub FROM g),
p AS (SELECT *, count(*) OVER (PARTITION BY {skey}, seg, sub) AS n,
             (row_number() OVER (PARTITION BY {skey}, seg, sub ORDER BY ts) - 1) AS pos FROM u),
q AS (SELECT *, {"0" if c.long_trips == "drop" else f"pos // {city.max_points}"} AS chunk FROM p),
x AS (SELECT *, count(*) OVER ch AS cn,
             coalesce({hav("lag(lon) OVER cho", "lag(lat) OVER cho", "lon", "lat")}, 0.0) AS step_m
      FROM q WINDOW ch AS (PARTITION BY {skey}, seg, sub, chunk),
                    cho AS (PARTITION BY {skey}, seg, sub, chunk ORDER BY ts)),
y AS (SELECT *, sum(step_m) OVER ch / greatest(max(ts) OVER ch - min(ts) OVER ch, 1) * 3.6 AS speed_kmh
      FROM x WINDOW ch AS (PARTITION BY {skey}, seg, sub, chunk))
SELECT source_file, row_id, vehicle_id, point_idx, ts, lon, lat, seg, sub, chunk, step_m,
       CASE WHEN {"n > " + str(city.max_points) if c.long_trips == "drop" else "false"} THEN 'too_long'
            WHEN cn < {city.min_points} THEN 'short_trajectory'
            WHEN {c.min_vehicle_speed_kmh} > 0 AND speed_kmh < {c.min_vehicle_speed_kmh} THEN 'not_vehicle'
            END AS reason
FROM y;
INSERT INTO rejects SELECT source_file, row_id, point_idx, reason, ts, lon, lat FROM s5 WHERE reason IS NOT NULL;""",
        ),
        (
            "build+write",
            f"""
CREATE TEMP TABLE silver AS
WITH t AS (
    SELECT {skey} AS stream, seg, sub, chunk, list(ts ORDER BY ts) AS ts, list(lon ORDER BY ts) AS lon,
           list(lat ORDER BY ts) AS lat, sum(step_m) AS length_m, first(vehicle_id) AS vehicle_id,
           min(source_file) AS source_file
    FROM s5 WHERE reason IS NULL GROUP BY {skey}, seg, sub, chunk)
SELECT substr(sha256('{city.name}|' || stream || '|' || ts[1]), 1, 24) AS trip_id,
       substr(sha256('{key}:' || sha256('{key}:' || vehicle_id)), 1, 32) AS vehicle_key,
       to_timestamp(ts[1]) AS start_ts, to_timestamp(ts[-1]) AS end_ts, CAST(len(ts) AS INTEGER) AS n_points,
       ts[-1] - ts[1] AS duration_s, length_m, ts, lon, lat, source_file,
       '{city.name}' AS city, '{date}' AS date
FROM t;
COPY silver TO {_q(out / "silver.parquet")} (FORMAT parquet);
COPY rejects TO {_q(out / "rejects.parquet")} (FORMAT parquet);""",
        ),
    ]
    if city.raw.format == "point_log":
        stages[1:3] = _point_log_input(file_list, out, city)
    return stages


def _point_log_input(file_list: str, out: Path, city) -> list[tuple[str, str]]:
    """A point log's read and row rules (missing_field, bad_timestamp, invalid_coordinate): accepted
    rows are the points (p0), one fix each. Unix timestamps, the unit told by magnitude."""
    col = city.raw.file_columns
    t = f"try_cast(trim({col['timestamp']}) AS DOUBLE)"
    units = " ".join(f"WHEN t0 > {th} THEN t0 / {ps}" for th, ps in EPOCH_UNITS)
    state = f"trim({col['trip_state']})" if "trip_state" in col else "NULL::VARCHAR"
    return [
        (
            "read+bronze",
            f"""
CREATE TEMP TABLE raw AS
SELECT row_number() OVER () - 1 AS row_id, parse_filename(filename) AS source_file, * EXCLUDE (filename)
FROM read_csv({file_list}, header = true, all_varchar = true, filename = true);
COPY raw TO {_q(out / "bronze.parquet")} (FORMAT parquet);""",
        ),
        (
            "parse+explode",
            f"""
CREATE TEMP TABLE verdict AS
WITH v AS (
    SELECT row_id, source_file, trim({col["vehicle_id"]}) AS vehicle_id, {t} AS t0,
           try_cast(trim({col["lon"]}) AS DOUBLE) AS lon, try_cast(trim({col["lat"]}) AS DOUBLE) AS lat,
           {state} AS state
    FROM raw),
w AS (SELECT *, CASE {units} ELSE t0 END AS t FROM v)
SELECT row_id, source_file, vehicle_id, CAST(trunc(t) AS BIGINT) AS ts, lon, lat, state,
       CASE WHEN coalesce(vehicle_id, '') = '' THEN 'missing_field'
            WHEN t IS NULL OR NOT (t BETWEEN {MIN_EPOCH_S} AND {MAX_EPOCH_S}) THEN 'bad_timestamp'
            WHEN lon IS NULL OR lat IS NULL OR isnan(lon) OR isnan(lat) OR abs(lon) > 180 OR abs(lat) > 90
                 OR (lon = 0 AND lat = 0) THEN 'invalid_coordinate' END AS reason
FROM w;
INSERT INTO rejects SELECT source_file, row_id, NULL, reason, NULL, NULL, NULL FROM verdict WHERE reason IS NOT NULL;
CREATE TEMP TABLE p0 AS
SELECT row_id, source_file, vehicle_id, 0 AS point_idx, ts, lon, lat, state FROM verdict WHERE reason IS NULL;""",
        ),
    ]


def run(input_dir: Path, out: Path, city_file: Path, date: str, key: str = "bench-key") -> dict:
    import duckdb

    city = load_city_file(city_file)
    t0 = time.perf_counter()
    files = sorted(f for f in input_dir.iterdir() if f.is_file() and not f.name.startswith((".", "_")))
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET temp_directory = {_q(out / 'duckdb_tmp')}")
    con.execute("SET preserve_insertion_order = true")
    # Half the memory available at start (DuckDB's default, 80 % of RAM, gets it killed on a shared machine);
    # it spills to temp_directory beyond that.
    with open("/proc/meminfo") as f:
        avail_kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    con.execute(f"SET memory_limit = '{avail_kb // 2 // 1024}MB'")
    stage_s: dict[str, float] = {}
    for stage, sql in statements(files, out, city, date, key):
        t = time.perf_counter()
        con.execute(sql)
        stage_s[stage] = stage_s.get(stage, 0.0) + time.perf_counter() - t
    one = lambda q: con.execute(q).fetchone()[0]  # noqa: E731
    by_reason = dict(
        con.execute(
            "SELECT reason, count(*) FROM rejects WHERE point_idx IS NOT NULL GROUP BY reason ORDER BY reason"
        ).fetchall()
    )
    stats = {
        "rows_read": one("SELECT count(*) FROM raw"),
        "rows_rejected": one("SELECT count(*) FROM rejects WHERE point_idx IS NULL"),
        "points_read": one("SELECT count(*) FROM p0"),
        "points_kept": int(one("SELECT coalesce(sum(n_points), 0) FROM silver")),
        "points_dropped": sum(by_reason.values()),
        "points_dropped_by_reason": by_reason,
        "trajectories_out": one("SELECT count(*) FROM silver"),
        "stage_s": stage_s,
        "work_s": time.perf_counter() - t0,
        "threads": one("SELECT current_setting('threads')"),
        "duckdb": duckdb.__version__,
    }
    assert stats["points_read"] == stats["points_kept"] + stats["points_dropped"], stats
    return stats


def main(argv: list[str] | None = None) -> int:
    return peer_main(__doc__, "bench/ingest_duckdb.py", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
