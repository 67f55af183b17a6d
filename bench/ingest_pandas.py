"""The pandas peer of the ingestion benchmark: the Porto cleaning as one plain single-process script.

    python bench/ingest_pandas.py --input DELIVERY_DIR --out OUT_DIR --city-file config/cities/porto.yaml

Run by bench/ingest.py in a child process of its own; prints one JSON line of counts and timings.
Same rules, in the same order, as jobs/ingest.py + jobs/clean_trips.py (Porto CSV only):
  rows:   duplicate_row, missing_field, bad_timestamp, bad_polyline, empty_polyline
  points: invalid_coordinate, duplicate_fix, duplicate_timestamp, outside_bbox (splits)
          -> speed_spike -> stay (splits) + segments (gap, jump) -> resample (nearest fix per tick)
          -> sub-segments at missing ticks -> max_points windows, short_trajectory, not_vehicle
Writes bronze (the rows as read), rejects (rows and points, with reason) and silver (one row per
trajectory, arrays of ts/lon/lat, trip id and keyed vehicle hash) as Parquet files. Differences from the
Spark job, all in the peers' favour: no Delta log or runs table, dropped points keep ts/lon/lat as
columns instead of a formatted detail string, and the stream id is the row number, not a line hash.
Rows are parsed with pandas' C CSV reader and json.loads (the row rules for blank, broken or repeated
header lines are left out: pandas' reader would stop on them, and generated data has none); the rules are vectorised numpy over the
points sorted by (stream, ts), so "the previous fix of the stream" is a shift with a boundary mask.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transfertraj.city_config import load_city_file  # noqa: E402

EARTH_RADIUS_M = 6_371_008.8
FIX_INTERVAL_S = 15
MIN_EPOCH_S, MAX_EPOCH_S = 631_152_000, 4_102_444_800
POINT_REASONS = ["", "invalid_coordinate", "duplicate_fix", "duplicate_timestamp", "outside_bbox", "speed_spike",
                 "stay", "resampled_out", "short_trajectory", "too_long", "not_vehicle"]
CODE = {r: i for i, r in enumerate(POINT_REASONS)}


def haversine_m(lon1, lat1, lon2, lat2):
    lon1, lat1, lon2, lat2 = map(np.radians, (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def prev(x: np.ndarray, first: np.ndarray, fill=np.nan) -> np.ndarray:
    """x of the previous element in the same group (first[i]: i starts a group); `fill` for the first."""
    out = np.empty_like(x, dtype=np.result_type(x, type(fill)))
    out[1:] = x[:-1]
    out[first] = fill
    return out


def nxt(x: np.ndarray, first: np.ndarray, fill=np.nan) -> np.ndarray:
    last = np.append(first[1:], True)
    out = np.empty_like(x, dtype=np.result_type(x, type(fill)))
    out[:-1] = x[1:]
    out[last] = fill
    return out


def starts(key: np.ndarray) -> np.ndarray:
    """True where a sorted group key changes."""
    s = np.ones(len(key), bool)
    s[1:] = key[1:] != key[:-1]
    return s


def read_rows(files: list[Path]) -> pd.DataFrame:
    parts = []
    for f in files:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        df.insert(0, "source_file", f.name)
        parts.append(df)
    rows = pd.concat(parts, ignore_index=True)
    rows.insert(1, "row_id", np.arange(len(rows), dtype=np.int64))
    return rows


def row_verdicts(rows: pd.DataFrame) -> tuple[np.ndarray, list, np.ndarray]:
    """(reason per row, '' = accepted; parsed polylines; ts0). First rule that fires wins."""
    n = len(rows)
    reason = np.full(n, "", dtype=object)

    def fire(mask, name):
        reason[(reason == "") & mask] = name

    fire(rows.duplicated(subset=[c for c in rows.columns if c not in ("source_file", "row_id")]).to_numpy(),
         "duplicate_row")
    fire(((rows["TAXI_ID"].str.strip() == "") | (rows["POLYLINE"] == "")).to_numpy(), "missing_field")
    ts0 = pd.to_numeric(rows["TIMESTAMP"], errors="coerce").to_numpy(dtype=np.float64)
    ts0 = np.where(ts0 > 1e11, ts0 / 1000.0, ts0)
    fire(~((ts0 >= MIN_EPOCH_S) & (ts0 <= MAX_EPOCH_S)), "bad_timestamp")
    polys: list[np.ndarray | None] = []
    for text in rows["POLYLINE"].tolist():
        try:
            a = np.asarray(json.loads(text), dtype=np.float64)
        except (ValueError, TypeError):  # not JSON, ragged, or not numbers
            a = None
        if a is not None and a.size and (a.ndim != 2 or a.shape[1] != 2):
            a = None
        polys.append(a)
    fire(np.array([a is None for a in polys]), "bad_polyline")
    fire(np.array([a is not None and a.size == 0 for a in polys]), "empty_polyline")
    return reason, polys, ts0


def explode(rows: pd.DataFrame, ok: np.ndarray, polys: list, ts0: np.ndarray) -> dict[str, np.ndarray]:
    idx = np.flatnonzero(ok)
    accepted = [polys[i] for i in idx]
    lengths = np.fromiter(map(len, accepted), np.int64, count=len(accepted))
    xy = np.concatenate(accepted).reshape(-1, 2) if accepted else np.empty((0, 2))
    row = np.repeat(idx, lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    point_idx = np.arange(len(row)) - np.repeat(first, lengths)
    return {
        "row": row, "point_idx": point_idx.astype(np.int32),
        "ts": np.floor(ts0[row]).astype(np.int64) + point_idx * FIX_INTERVAL_S,
        "lon": np.ascontiguousarray(xy[:, 0]), "lat": np.ascontiguousarray(xy[:, 1]),
    }


def clean(p: dict[str, np.ndarray], city) -> tuple[dict[str, np.ndarray], list[tuple[dict, np.ndarray]]]:
    """The rules of jobs/ingest.clean_points on numpy arrays. Returns (kept points with chunk id, dropped)."""
    c, b = city.cleaning, city.bbox
    vmax = c.max_speed_kmh / 3.6
    dropped = []
    row, ts = p["row"], p["ts"]
    in_order = np.all((row[1:] > row[:-1]) | ((row[1:] == row[:-1]) & (ts[1:] > ts[:-1])))
    if not in_order:  # stream = row; within it (ts, row, point_idx)
        order = np.lexsort((p["point_idx"], p["row"], p["ts"], p["row"]))
        p = {k: v[order] for k, v in p.items()}

    def split(p, reason, extra=()):
        keep = reason == 0
        dropped.append(({k: v[~keep] for k, v in p.items() if k in ("row", "point_idx", "ts", "lon", "lat")},
                        reason[~keep]))
        return {k: v[keep] for k, v in p.items()} | {k: v[keep] for k, v in extra}

    def flag(reason, mask, name):
        reason[(reason == 0) & mask] = CODE[name]

    # 1. invalid, duplicates, bbox
    first = starts(p["row"])
    lon, lat, ts = p["lon"], p["lat"], p["ts"]
    reason = np.zeros(len(ts), np.int8)
    valid = ~np.isnan(lon) & ~np.isnan(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90) & ~((lon == 0) & (lat == 0))
    flag(reason, ~valid, "invalid_coordinate")
    same_ts = ~first & (prev(ts, first, 0) == ts)
    same_pos = (prev(lon, first) == lon) & (prev(lat, first) == lat)
    flag(reason, same_ts & same_pos, "duplicate_fix")
    flag(reason, same_ts, "duplicate_timestamp")
    outside = ~((lon >= b.min_lon) & (lon <= b.max_lon) & (lat >= b.min_lat) & (lat <= b.max_lat))
    brk = prev(outside, first, False).astype(bool)
    flag(reason, outside, "outside_bbox")
    p = split(p, reason, extra=[])
    brk = brk[reason == 0]

    # 2. speed spikes among the kept fixes
    first = starts(p["row"])
    lon, lat, ts = p["lon"], p["lat"], p["ts"].astype(np.float64)
    plon, plat, nlon, nlat = prev(lon, first), prev(lat, first), nxt(lon, first), nxt(lat, first)
    dt_in, dt_out = ts - prev(ts, first), nxt(ts, first) - ts
    with np.errstate(invalid="ignore", divide="ignore"):
        spike = ((haversine_m(plon, plat, lon, lat) / dt_in > vmax) & (haversine_m(lon, lat, nlon, nlat) / dt_out > vmax)
                 & (haversine_m(plon, plat, nlon, nlat) / (dt_in + dt_out) <= vmax))
    reason = np.where(spike, CODE["speed_spike"], 0).astype(np.int8)
    p = split(p, reason)
    brk = brk[reason == 0]

    # 3. stays, then segments (on the frame that still holds the stay fixes)
    first = starts(p["row"])
    lon, lat, ts = p["lon"], p["lat"], p["ts"]
    dt = (ts - prev(ts, first, 0)).astype(np.float64)
    d_in = haversine_m(prev(lon, first), prev(lat, first), lon, lat)
    with np.errstate(invalid="ignore", divide="ignore"):
        speed = d_in / dt
        moving = ~(speed * 3.6 < c.stay_max_speed_kmh) | first  # null speed (first fix) counts as moving
    run = np.cumsum(moving)  # a stream's first fix is moving, so run ids never cross streams
    rs = np.flatnonzero(starts(run))
    cnt = np.diff(np.append(rs, len(run)))
    span = haversine_m(np.minimum.reduceat(lon, rs), np.minimum.reduceat(lat, rs),
                       np.maximum.reduceat(lon, rs), np.maximum.reduceat(lat, rs))
    run_s = np.maximum.reduceat(ts, rs) - np.minimum.reduceat(ts, rs)
    stay_run = (run_s >= c.stay_split_s) & (span <= c.stay_radius_m)
    stay = ~moving & np.repeat(stay_run, cnt)
    brk = brk | prev(stay, first, False).astype(bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        jump = ~first & ((dt > c.gap_split_s) | (d_in / dt > vmax))
    seg = np.cumsum(first | brk | jump)  # global segment id; a new stream always starts one
    reason = np.where(stay, CODE["stay"], 0).astype(np.int8)
    p = split(p, reason, extra=[("seg", seg)])

    # 4. resample: per tick of the interval from the segment's first fix, the nearest fix
    seg, ts = p["seg"], p["ts"]
    ss = starts(seg)
    t0 = np.repeat(ts[ss], np.diff(np.append(np.flatnonzero(ss), len(ts))))
    tick = np.floor((ts - t0) / city.sampling_interval_s + 0.5).astype(np.int64)  # Spark round(): half up
    off = np.abs(ts - (t0 + tick * city.sampling_interval_s))
    reason = np.zeros(len(ts), np.int8)
    dup = ~ss & (tick == prev(tick, ss, -1))
    if dup.any():  # several fixes per tick: keep the nearest (then earliest)
        o = np.lexsort((np.arange(len(ts)), off, tick, seg))
        first_of = starts(seg[o]) | starts(tick[o])
        reason[o[~first_of]] = CODE["resampled_out"]
    p = split(p, reason, extra=[("tick", tick)])

    # 5. sub-segments at missing ticks, 6. max_points windows, min_points, min speed
    seg, tick = p["seg"], p["tick"]
    ss = starts(seg)
    piece = np.cumsum(ss | (tick - prev(tick, ss, 0) > 1))
    ps = np.flatnonzero(starts(piece))
    pos = np.arange(len(piece)) - np.repeat(ps, np.diff(np.append(ps, len(piece))))
    n_piece = np.repeat(np.diff(np.append(ps, len(piece))), np.diff(np.append(ps, len(piece))))
    reason = np.zeros(len(piece), np.int8)
    if c.long_trips == "drop":
        flag(reason, n_piece > city.max_points, "too_long")
        chunk_start = starts(piece)
    else:
        chunk_start = starts(piece) | (pos % city.max_points == 0)
    chunk = np.cumsum(chunk_start)
    cs = np.flatnonzero(chunk_start)
    cn = np.diff(np.append(cs, len(chunk)))
    flag(reason, np.repeat(cn, cn) < city.min_points, "short_trajectory")
    lon, lat, ts = p["lon"], p["lat"], p["ts"]
    step = np.nan_to_num(haversine_m(prev(lon, chunk_start), prev(lat, chunk_start), lon, lat), nan=0.0)
    if c.min_vehicle_speed_kmh > 0:
        length = np.add.reduceat(step, cs)
        duration = np.maximum.reduceat(ts, cs) - np.minimum.reduceat(ts, cs)
        slow = length / np.maximum(duration, 1) * 3.6 < c.min_vehicle_speed_kmh
        flag(reason, np.repeat(slow, cn), "not_vehicle")
    p = split(p, reason, extra=[("chunk", chunk), ("step_m", step)])
    return p, dropped


def build_trajectories(p: dict[str, np.ndarray], rows: pd.DataFrame, city_name: str, date: str, key: str) -> pa.Table:
    cs = np.flatnonzero(starts(p["chunk"]))
    n = np.diff(np.append(cs, len(p["chunk"])))
    offsets = pa.array(np.append(cs, len(p["chunk"])).astype(np.int32))
    last = cs + n - 1
    start, end = p["ts"][cs], p["ts"][last]
    row = p["row"][cs]
    vehicle = rows["TAXI_ID"].to_numpy()[row]
    trip_id = [hashlib.sha256(f"{city_name}|{r}|{s}".encode()).hexdigest()[:24] for r, s in zip(row.tolist(), start.tolist())]
    kb = (key + ":").encode()
    vkey = [hashlib.sha256(kb + hashlib.sha256(kb + v.strip().encode()).hexdigest().encode()).hexdigest()[:32]
            for v in vehicle]
    return pa.table({
        "trip_id": trip_id,
        "vehicle_key": vkey,
        "start_ts": pa.array(start * 1_000_000, pa.timestamp("us", tz="UTC")),
        "end_ts": pa.array(end * 1_000_000, pa.timestamp("us", tz="UTC")),
        "n_points": n.astype(np.int32),
        "duration_s": end - start,
        "length_m": np.add.reduceat(p["step_m"], cs),
        "ts": pa.ListArray.from_arrays(offsets, pa.array(p["ts"])),
        "lon": pa.ListArray.from_arrays(offsets, pa.array(p["lon"])),
        "lat": pa.ListArray.from_arrays(offsets, pa.array(p["lat"])),
        "source_file": rows["source_file"].to_numpy()[row],
        "city": pa.array([city_name] * len(cs)),
        "date": pa.array([date] * len(cs)),
    })


def run(input_dir: Path, out: Path, city_file: Path, date: str, key: str = "bench-key") -> dict:
    city = load_city_file(city_file)
    t0 = time.perf_counter()
    files = sorted(f for f in input_dir.iterdir() if f.is_file() and not f.name.startswith((".", "_")))
    rows = read_rows(files)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), out / "bronze.parquet")
    t_read = time.perf_counter()
    reason, polys, ts0 = row_verdicts(rows)
    points = explode(rows, reason == "", polys, ts0)
    del polys
    t_parse = time.perf_counter()
    kept, dropped = clean(points, city)
    t_clean = time.perf_counter()
    trips = build_trajectories(kept, rows, city.name, date, key)
    pq.write_table(trips, out / "silver.parquet")
    rej_rows = rows.loc[reason != "", ["source_file", "row_id"]].assign(reason=reason[reason != ""])
    by_reason: dict[str, int] = {}
    rejects = [pa.table({"row": rej_rows["row_id"].to_numpy(), "point_idx": pa.nulls(len(rej_rows), pa.int32()),
                         "reason": rej_rows["reason"].to_numpy().astype(str),
                         "ts": pa.nulls(len(rej_rows), pa.int64()), "lon": pa.nulls(len(rej_rows), pa.float64()),
                         "lat": pa.nulls(len(rej_rows), pa.float64())})]
    for d, codes in dropped:
        names = np.asarray(POINT_REASONS, dtype=object)[codes]
        for r, k in zip(*np.unique(codes, return_counts=True)):
            by_reason[POINT_REASONS[r]] = by_reason.get(POINT_REASONS[r], 0) + int(k)
        rejects.append(pa.table({"row": d["row"], "point_idx": d["point_idx"], "reason": names.astype(str),
                                 "ts": d["ts"], "lon": d["lon"], "lat": d["lat"]}))
    pq.write_table(pa.concat_tables(rejects), out / "rejects.parquet")
    t_write = time.perf_counter()
    stats = {
        "rows_read": len(rows), "rows_rejected": int((reason != "").sum()), "points_read": len(points["ts"]),
        "points_kept": len(kept["ts"]), "points_dropped": sum(len(c) for _, c in dropped),
        "points_dropped_by_reason": by_reason, "trajectories_out": trips.num_rows,
        "stage_s": {"read+bronze": t_read - t0, "parse+explode": t_parse - t_read, "clean": t_clean - t_parse,
                    "build+write": t_write - t_clean},
        "work_s": t_write - t0,
    }
    assert stats["points_read"] == stats["points_kept"] + stats["points_dropped"], stats
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, help="delivery folder of Porto CSV files")
    parser.add_argument("--out", type=Path, help="output folder for the Parquet files")
    parser.add_argument("--city-file", type=Path, help="city YAML (bbox and cleaning thresholds)")
    parser.add_argument("--date", default="2013-07-01")
    args = parser.parse_args(argv)
    if not (args.input and args.out and args.city_file):
        print("bench/ingest_pandas.py is a peer run by bench/ingest.py; run that (or pass --input --out --city-file)")
        return 0
    print(json.dumps(run(args.input, args.out, args.city_file, args.date)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
