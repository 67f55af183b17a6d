"""The pandas peer of the ingestion benchmark: the Porto cleaning as one plain single-process script.

    python bench/ingest_pandas.py --input DELIVERY_DIR --out OUT_DIR --city-file config/cities/porto.yaml

Run by bench/ingest.py in a child process of its own; prints one JSON line of counts and timings.
The same row rules as jobs/parse_points.py and the pipeline's own point rules (jobs/clean_points.clean_sorted,
pure numpy: the peers compare engines, not rule implementations), Porto CSV only:
  rows:   duplicate_row, missing_field, bad_timestamp, bad_polyline, empty_polyline
  points: invalid_coordinate, duplicate_fix, duplicate_timestamp, outside_bbox (splits)
          -> speed_spike -> stay (splits) + segments (gap, jump) -> resample (nearest fix per tick)
          -> sub-segments at missing ticks -> max_points windows, short_trajectory, not_vehicle
Writes bronze (the rows as read), rejects (rows and points, with reason) and silver (one row per
trajectory, arrays of ts/lon/lat, trip id and keyed vehicle hash) as Parquet files. Differences from the
Spark job, all in the peers' favour: no Delta log or runs table, dropped points keep ts/lon/lat as
columns instead of a formatted detail string, and the stream id is the row number, not a line hash.
Rows are parsed with pandas' C CSV reader and json.loads (the row rules for blank, broken or repeated
header lines are left out: pandas' reader would stop on them, and generated data has none); the point
rules run in this one process over all points sorted by (row, ts).
"""

from __future__ import annotations

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

from bench.peer_cli import peer_main  # noqa: E402
from transfertraj.core.city_config import load_city_file  # noqa: E402
from transfertraj.core.constants import EPOCH_UNITS  # noqa: E402
from transfertraj.jobs.clean_points import REASONS, CleaningRules, clean_sorted, starts  # noqa: E402

FIX_INTERVAL_S = 15
MIN_EPOCH_S, MAX_EPOCH_S = 631_152_000, 4_102_444_800


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

    fire(
        rows.duplicated(subset=[c for c in rows.columns if c not in ("source_file", "row_id")]).to_numpy(),
        "duplicate_row",
    )
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
        "row": row,
        "point_idx": point_idx.astype(np.int32),
        "ts": np.floor(ts0[row]).astype(np.int64) + point_idx * FIX_INTERVAL_S,
        "lon": np.ascontiguousarray(xy[:, 0]),
        "lat": np.ascontiguousarray(xy[:, 1]),
    }


def clean(p: dict[str, np.ndarray], city) -> tuple[dict[str, np.ndarray], list[tuple[dict, np.ndarray]]]:
    """The pipeline's own rules (jobs/clean_points.clean_sorted, pure numpy) on the points of every row,
    in this one process. Returns (kept points with their trajectory key, [(dropped points, reason codes)])."""
    order = np.lexsort((p["point_idx"], p["ts"], p["row"]))  # stream = row; within it (ts, point_idx)
    p = {k: v[order] for k, v in p.items()}
    v = clean_sorted(p["row"], p["ts"], p["lon"], p["lat"], None, CleaningRules.for_city(city))
    keep = v["reason"] == 0
    kept = {k: a[keep] for k, a in p.items()}
    kept["chunk"] = v["seg"][keep] * (city.max_points + 1) + v["chunk"][keep]  # one id per trajectory
    kept["step_m"] = v["step_m"][keep]
    dropped = {k: a[~keep] for k, a in p.items() if k in ("row", "point_idx", "ts", "lon", "lat")}
    return kept, [(dropped, v["reason"][~keep])]


def build_trajectories(p: dict[str, np.ndarray], rows: pd.DataFrame, city_name: str, date: str, key: str) -> pa.Table:
    cs = np.flatnonzero(starts(p["chunk"]))
    n = np.diff(np.append(cs, len(p["chunk"])))
    offsets = pa.array(np.append(cs, len(p["chunk"])).astype(np.int32))
    last = cs + n - 1
    start, end = p["ts"][cs], p["ts"][last]
    row = p["row"][cs]
    vehicle = rows["TAXI_ID"].to_numpy()[row]
    trip_id = [
        hashlib.sha256(f"{city_name}|{r}|{s}".encode()).hexdigest()[:24] for r, s in zip(row.tolist(), start.tolist())
    ]
    kb = (key + ":").encode()
    vkey = [
        hashlib.sha256(kb + hashlib.sha256(kb + v.strip().encode()).hexdigest().encode()).hexdigest()[:32]
        for v in vehicle
    ]
    return pa.table(
        {
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
        }
    )


def run(input_dir: Path, out: Path, city_file: Path, date: str, key: str = "bench-key") -> dict:
    city = load_city_file(city_file)
    files = sorted(f for f in input_dir.iterdir() if f.is_file() and not f.name.startswith((".", "_")))
    if city.raw.format == "point_log":
        return run_point_log(files, out, city, date, key)
    t0 = time.perf_counter()
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
    rejects = [
        pa.table(
            {
                "row": rej_rows["row_id"].to_numpy(),
                "point_idx": pa.nulls(len(rej_rows), pa.int32()),
                "reason": rej_rows["reason"].to_numpy().astype(str),
                "ts": pa.nulls(len(rej_rows), pa.int64()),
                "lon": pa.nulls(len(rej_rows), pa.float64()),
                "lat": pa.nulls(len(rej_rows), pa.float64()),
            }
        )
    ]
    for d, codes in dropped:
        names = np.asarray(REASONS, dtype=object)[codes]
        for r, k in zip(*np.unique(codes, return_counts=True)):
            by_reason[REASONS[r]] = by_reason.get(REASONS[r], 0) + int(k)
        rejects.append(
            pa.table(
                {
                    "row": d["row"],
                    "point_idx": d["point_idx"],
                    "reason": names.astype(str),
                    "ts": d["ts"],
                    "lon": d["lon"],
                    "lat": d["lat"],
                }
            )
        )
    pq.write_table(pa.concat_tables(rejects), out / "rejects.parquet")
    t_write = time.perf_counter()
    stats = {
        "rows_read": len(rows),
        "rows_rejected": int((reason != "").sum()),
        "points_read": len(points["ts"]),
        "points_kept": len(kept["ts"]),
        "points_dropped": sum(len(c) for _, c in dropped),
        "points_dropped_by_reason": by_reason,
        "trajectories_out": trips.num_rows,
        "stage_s": {
            "read+bronze": t_read - t0,
            "parse+explode": t_parse - t_read,
            "clean": t_clean - t_parse,
            "build+write": t_write - t_clean,
        },
        "work_s": t_write - t0,
    }
    assert stats["points_read"] == stats["points_kept"] + stats["points_dropped"], stats
    return stats


# ---- point logs (a row per fix, e.g. San Francisco's cabspotting days) -----------------------------


def epoch_s(num: np.ndarray) -> np.ndarray:
    """Unix seconds of epoch numbers, the unit told by magnitude (core.constants.EPOCH_UNITS)."""
    out = num
    for threshold, per_second in reversed(EPOCH_UNITS):
        out = np.where(num > threshold, num / per_second, out)
    return out


def run_point_log(files: list[Path], out: Path, city, date: str, key: str) -> dict:
    """A point log with unix timestamps (as San Francisco's): the row rules missing_field, bad_timestamp
    and invalid_coordinate, then the pipeline's point rules over every vehicle's fixes sorted by
    (vehicle, ts, row), with the trip-state rule. Rows of a file that pandas cannot split are not
    handled (real cabspotting files have none)."""
    if city.raw.timestamp_format not in ("unix_s", "auto"):
        raise SystemExit(f"{city.name}: the pandas peer reads unix timestamps only")
    cols = city.raw.file_columns
    t0 = time.perf_counter()
    parts = []
    for f in files:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        df.insert(0, "source_file", f.name)
        parts.append(df)
    rows = pd.concat(parts, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), out / "bronze.parquet")
    t_read = time.perf_counter()
    n = len(rows)
    reason = np.full(n, "", dtype=object)

    def fire(mask, name):
        reason[(reason == "") & mask] = name

    vehicle = rows[cols["vehicle_id"]].str.strip().to_numpy()
    ts_s = epoch_s(pd.to_numeric(rows[cols["timestamp"]].str.strip(), errors="coerce").to_numpy(np.float64))
    lon = pd.to_numeric(rows[cols["lon"]].str.strip(), errors="coerce").to_numpy(np.float64)
    lat = pd.to_numeric(rows[cols["lat"]].str.strip(), errors="coerce").to_numpy(np.float64)
    fire(vehicle == "", "missing_field")
    fire(~((ts_s >= MIN_EPOCH_S) & (ts_s <= MAX_EPOCH_S)), "bad_timestamp")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
    fire(~(valid & ~((lon == 0) & (lat == 0))), "invalid_coordinate")
    ok = np.flatnonzero(reason == "")
    state = rows[cols["trip_state"]].str.strip().to_numpy()[ok] if "trip_state" in cols else None
    codes, uniques = pd.factorize(vehicle[ok], sort=True)
    ts = np.trunc(ts_s[ok]).astype(np.int64)
    order = np.lexsort((ok, ts, codes))  # (vehicle, ts, row): the pipeline's sort
    p = {"row": ok[order], "vehicle": codes[order], "ts": ts[order], "lon": lon[ok][order], "lat": lat[ok][order]}
    t_parse = time.perf_counter()
    v = clean_sorted(
        p["vehicle"], p["ts"], p["lon"], p["lat"], None if state is None else state[order], CleaningRules.for_city(city)
    )
    t_clean = time.perf_counter()
    keep = v["reason"] == 0
    k = np.flatnonzero(keep)
    seg, chunk = v["seg"][k], v["chunk"][k]
    first = np.ones(len(k), bool)
    first[1:] = (seg[1:] != seg[:-1]) | (chunk[1:] != chunk[:-1])
    cs = np.flatnonzero(first)
    sizes = np.diff(np.append(cs, len(k)))
    offsets = pa.array(np.append(cs, len(k)).astype(np.int32))
    start, end = p["ts"][k][cs], p["ts"][k][cs + sizes - 1]
    veh = np.asarray(uniques, dtype=object)[p["vehicle"][k][cs]]
    kb = (key + ":").encode()
    trips = pa.table(
        {
            "trip_id": [
                hashlib.sha256(f"{city.name}|{a}|{b}".encode()).hexdigest()[:24] for a, b in zip(veh, start.tolist())
            ],
            "vehicle_key": [
                hashlib.sha256(kb + hashlib.sha256(kb + x.encode()).hexdigest().encode()).hexdigest()[:32] for x in veh
            ],
            "start_ts": pa.array(start * 1_000_000, pa.timestamp("us", tz="UTC")),
            "end_ts": pa.array(end * 1_000_000, pa.timestamp("us", tz="UTC")),
            "n_points": sizes.astype(np.int32),
            "duration_s": end - start,
            "length_m": np.add.reduceat(v["step_m"][k], cs) if len(cs) else np.zeros(0),
            "ts": pa.ListArray.from_arrays(offsets, pa.array(p["ts"][k])),
            "lon": pa.ListArray.from_arrays(offsets, pa.array(p["lon"][k])),
            "lat": pa.ListArray.from_arrays(offsets, pa.array(p["lat"][k])),
            "source_file": rows["source_file"].to_numpy()[p["row"][k][cs]],
            "city": pa.array([city.name] * len(cs)),
            "date": pa.array([date] * len(cs)),
        }
    )
    pq.write_table(trips, out / "silver.parquet")
    d = np.flatnonzero(~keep)
    bad = np.flatnonzero(reason != "")
    rejects = pa.table(
        {
            "row": np.concatenate([bad, p["row"][d]]),
            "reason": pa.array(
                np.concatenate([reason[bad], np.asarray(REASONS, dtype=object)[v["reason"][d]]]).astype(str)
            ),
            "ts": pa.array(np.concatenate([np.zeros(len(bad), np.int64), p["ts"][d]])),
            "lon": np.concatenate([lon[bad], p["lon"][d]]),
            "lat": np.concatenate([lat[bad], p["lat"][d]]),
        }
    )
    pq.write_table(rejects, out / "rejects.parquet")
    t_write = time.perf_counter()
    by_reason = {REASONS[r]: int(c) for r, c in zip(*np.unique(v["reason"][d], return_counts=True))}
    stats = {
        "rows_read": n,
        "rows_rejected": len(bad),
        "points_read": len(ok),
        "points_kept": len(k),
        "points_dropped": len(d),
        "points_dropped_by_reason": by_reason,
        "trajectories_out": len(cs),
        "stage_s": {
            "read+bronze": t_read - t0,
            "parse": t_parse - t_read,
            "clean": t_clean - t_parse,
            "build+write": t_write - t_clean,
        },
        "work_s": t_write - t0,
    }
    assert stats["points_read"] == stats["points_kept"] + stats["points_dropped"], stats
    return stats


def main(argv: list[str] | None = None) -> int:
    return peer_main(__doc__, "bench/ingest_pandas.py", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
