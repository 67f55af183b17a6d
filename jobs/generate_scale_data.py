"""GENERATED scale-test data: N points in the Porto CSV format, made from the real bundled sample.

    python -m jobs.generate_scale_data --points 10000000                 # -> <home>/landing/porto_generated/2013-07-01/
    python -m jobs.generate_scale_data --points 200000 --out /tmp/land/porto_generated/2013-07-01 --seed 7

How: the real trips of the city's sample (`raw.path` of config/cities/porto.yaml) are cut to their runs of
points inside the city's bbox (a trip that leaves the box and comes back gives two templates; points
outside it would get no OSM context). Templates are drawn at random with replacement and each copy is
  * shifted in time by a whole number of minutes (0 to --spread-hours) plus whole days from the sample's
    day to --date, so the copies of one trip do not coincide;
  * shifted in space by one offset for the whole trip, at most --max-offset-m in each axis and less (or
    not at all) where the trip would leave the bbox: every generated point is inside the bbox, exactly
    (coordinates are handled as integer microdegrees, the precision of the Porto file);
  * given a new TRIP_ID (its new start second followed by a 9-digit sequence number, unique in the set)
    and a derived TAXI_ID (the real id plus 1,000,000 x a fleet copy number), so vehicles look like a
    larger fleet. CALL_TYPE, ORIGIN_CALL, ORIGIN_STAND, DAY_TYPE and MISSING_DATA are the template's.
The shape of the trips (point spacing, stays, GPS glitches, 15 s sampling) is real; only where and when
they happen is made up. The last trip is cut short so the set holds exactly --points points. The same
--seed, --points and sample give byte-identical files.

Output: plain CSV part files `part-NNNNN-generated.csv` (no compression: writing gzip costs more time
than Spark saves reading it, and several parts let every reader go parallel), each with the Porto
header, plus `_GENERATED.txt` saying how the set was made (the leading underscore makes
ingestion skip it as a marker file, like `_SUCCESS`). Formatting runs in pyarrow compute kernels;
30 M points take well under a minute on one core.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transfertraj.core.city_config import BBox, CityConfig, city_to_yaml, load_city, load_city_file
from transfertraj.core.settings import Settings
from transfertraj.jobs.landed_files import PORTO_COLUMNS

log = logging.getLogger(__name__)

MICRO = 1_000_000  # coordinates as integer microdegrees: the Porto file's 6 decimals
FIX_INTERVAL_S = 15
METRES_PER_DEGREE_LAT = 111_320.0
FLEET_STRIDE = 1_000_000  # derived TAXI_ID = real id + copy * FLEET_STRIDE
FLEET_COPIES = 20
MARKER = "_GENERATED.txt"  # leading "_": ingestion skips it like any marker (jobs/landed_files.py)
DEFAULT_DATE = "2013-07-01"
HEADER = ",".join(PORTO_COLUMNS)


@dataclass(frozen=True)
class Templates:
    """Real trips cut to their inside-bbox runs, coordinates in microdegrees."""

    lon: np.ndarray  # (P,) int64, all runs back to back
    lat: np.ndarray  # (P,) int64
    start: np.ndarray  # (T,) int64 index of each run's first point
    length: np.ndarray  # (T,) int64
    ts0: np.ndarray  # (T,) int64 unix s of each run's first point
    min_lon: np.ndarray  # (T,) int64 per-run extent, for the offsets that keep it inside
    max_lon: np.ndarray
    min_lat: np.ndarray
    max_lat: np.ndarray
    fields: dict[str, np.ndarray]  # CALL_TYPE, ORIGIN_CALL, ORIGIN_STAND, TAXI_ID, DAY_TYPE, MISSING_DATA (T,) str


def bbox_micro(bbox: BBox) -> tuple[int, int, int, int]:
    """The bbox in integer microdegrees, rounded inwards so integer points inside are inside the real box."""
    return (
        math.ceil(bbox.min_lon * MICRO - 1e-6),
        math.ceil(bbox.min_lat * MICRO - 1e-6),
        math.floor(bbox.max_lon * MICRO + 1e-6),
        math.floor(bbox.max_lat * MICRO + 1e-6),
    )


def load_templates(sample: Path, bbox: BBox) -> Templates:
    """Read a Porto CSV and cut every trip into its maximal runs of points inside the bbox."""
    x0, y0, x1, y1 = bbox_micro(bbox)
    lons, lats, starts, lengths, ts0s = [], [], [], [], []
    keep = ("CALL_TYPE", "ORIGIN_CALL", "ORIGIN_STAND", "TAXI_ID", "DAY_TYPE", "MISSING_DATA")
    fields: dict[str, list[str]] = {k: [] for k in keep}
    n = 0
    with open(sample, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("MISSING_DATA") == "True":
                continue
            try:
                poly = np.asarray(json.loads(row["POLYLINE"]), dtype=np.float64).reshape(-1, 2)
                ts = int(row["TIMESTAMP"])
            except (ValueError, TypeError, json.JSONDecodeError):
                continue
            if not len(poly):
                continue
            x = np.rint(poly[:, 0] * MICRO).astype(np.int64)
            y = np.rint(poly[:, 1] * MICRO).astype(np.int64)
            inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
            # Runs of consecutive inside points: [a, b) pairs from the edges of `inside`.
            edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
            for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
                lons.append(x[a:b])
                lats.append(y[a:b])
                starts.append(n)
                lengths.append(b - a)
                ts0s.append(ts + int(a) * FIX_INTERVAL_S)
                n += b - a
                for k in keep:
                    fields[k].append(row[k])
    if not starts:
        raise ValueError(f"{sample}: no trip has a point inside the bbox {bbox}")
    lon, lat = np.concatenate(lons), np.concatenate(lats)
    start, length = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    return Templates(
        lon=lon,
        lat=lat,
        start=start,
        length=length,
        ts0=np.asarray(ts0s, np.int64),
        min_lon=np.minimum.reduceat(lon, start),
        max_lon=np.maximum.reduceat(lon, start),
        min_lat=np.minimum.reduceat(lat, start),
        max_lat=np.maximum.reduceat(lat, start),
        fields={k: np.asarray(v, dtype=object) for k, v in fields.items()},
    )


@dataclass(frozen=True)
class Plan:
    """One row per generated trip."""

    template: np.ndarray  # (K,) index into Templates
    length: np.ndarray  # (K,) points taken (the template's, the last one cut short)
    dt: np.ndarray  # (K,) seconds added to the template's start
    dlon: np.ndarray  # (K,) microdegrees
    dlat: np.ndarray
    fleet: np.ndarray  # (K,) fleet copy number for the derived TAXI_ID


def _offsets(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, limit: int) -> np.ndarray:
    """Uniform integer offsets in [max(lo, -limit), min(hi, limit)]; lo <= 0 <= hi, so 0 is always allowed."""
    a, b = np.maximum(lo, -limit), np.minimum(hi, limit)
    return a + np.floor(rng.random(len(a)) * (b - a + 1)).astype(np.int64)


def plan_trips(
    t: Templates, *, points: int, bbox: BBox, seed: int, day_shift_s: int, spread_hours: float, max_offset_m: float
) -> Plan:
    """Draw templates until `points` points, then the time and space shift of each copy."""
    if points < 1:
        raise ValueError("--points must be at least 1")
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    total = 0
    while total < points:
        draw = rng.integers(0, len(t.length), size=int((points - total) / t.length.mean() * 1.05) + 16)
        chosen.append(draw)
        total += int(t.length[draw].sum())
    template = np.concatenate(chosen)
    cum = np.cumsum(t.length[template])
    k = int(np.searchsorted(cum, points)) + 1  # first k trips reach `points`
    template = template[:k]
    length = t.length[template].copy()
    length[-1] -= int(cum[k - 1]) - points
    # The last trip is cut short: its extent is that of the points kept.
    x0, y0, x1, y1 = bbox_micro(bbox)
    lat_m = METRES_PER_DEGREE_LAT / MICRO
    lon_m = lat_m * math.cos(math.radians((bbox.min_lat + bbox.max_lat) / 2))
    dlon = _offsets(rng, x0 - t.min_lon[template], x1 - t.max_lon[template], int(max_offset_m / lon_m))
    dlat = _offsets(rng, y0 - t.min_lat[template], y1 - t.max_lat[template], int(max_offset_m / lat_m))
    minutes = rng.integers(0, max(1, int(spread_hours * 60)), size=k)
    fleet = rng.integers(0, FLEET_COPIES, size=k)
    return Plan(template=template, length=length, dt=day_shift_s + minutes * 60, dlon=dlon, dlat=dlat, fleet=fleet)


def _decimal(v: np.ndarray) -> pa.Array:
    """Integer microdegrees -> '-8.618643' (always 6 decimals), vectorised."""
    a = np.abs(v)
    sign = pa.array(np.where(v < 0, "-", ""))
    whole = pc.cast(pa.array(a // MICRO), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(a % MICRO), pa.string()), width=6, padding="0")
    return pc.binary_join_element_wise(sign, whole, ".", frac, "")


def render_lines(t: Templates, plan: Plan, first: int, last: int) -> pa.Array:
    """CSV lines (each ending in a newline) of trips first..last-1 of the plan, as one arrow string array."""
    tpl, length = plan.template[first:last], plan.length[first:last]
    offsets = np.concatenate([[0], np.cumsum(length)])
    trip_of_point = np.repeat(np.arange(len(tpl)), length)
    within = np.arange(offsets[-1]) - offsets[trip_of_point]
    src = t.start[tpl][trip_of_point] + within
    lon = t.lon[src] + plan.dlon[first:last][trip_of_point]
    lat = t.lat[src] + plan.dlat[first:last][trip_of_point]
    pt = pc.binary_join_element_wise("[", _decimal(lon), ",", _decimal(lat), "]", "")
    poly = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pt), ",")

    ts = t.ts0[tpl] + plan.dt[first:last]
    trip_id = pc.binary_join_element_wise(
        pc.cast(pa.array(ts), pa.string()),
        pc.utf8_lpad(pc.cast(pa.array(np.arange(first, last)), pa.string()), width=9, padding="0"),
        "",
    )
    taxi = [str(int(a) + int(b) * FLEET_STRIDE) for a, b in zip(t.fields["TAXI_ID"][tpl], plan.fleet[first:last])]
    f = {k: pa.array(v[tpl].tolist(), pa.string()) for k, v in t.fields.items()}
    return pc.binary_join_element_wise(
        trip_id,
        ',"',
        f["CALL_TYPE"],
        '","',
        f["ORIGIN_CALL"],
        '","',
        f["ORIGIN_STAND"],
        '","',
        pa.array(taxi, pa.string()),
        '","',
        pc.cast(pa.array(ts), pa.string()),
        '","',
        f["DAY_TYPE"],
        '","',
        f["MISSING_DATA"],
        '","[',
        poly,
        ']"\n',
        "",
    )


def _write_strings(path: Path, header: str, lines: pa.Array) -> None:
    """Write a header and the concatenated bytes of a string array (no per-line Python work)."""
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    if lines.type != pa.large_string():
        lines = lines.cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    with open(path, "wb") as f:
        f.write((header + "\n").encode())
        f.write(memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]])


def generate(
    *,
    city: CityConfig,
    out: Path,
    points: int,
    seed: int = 0,
    date: str = DEFAULT_DATE,
    points_per_file: int = 2_000_000,
    spread_hours: float = 13.0,
    max_offset_m: float = 300.0,
    sample: Path | None = None,
) -> list[Path]:
    """Write the generated set into `out` (a delivery folder). Returns the part files written."""
    from datetime import date as Date
    from datetime import datetime

    if city.raw.format != "porto_csv":
        raise ValueError(f"city {city.name}: the generator makes Porto CSV; its raw format is {city.raw.format}")
    if not 1 <= points_per_file <= 20_000_000:
        raise ValueError("points_per_file must be 1..20,000,000 (one part is formatted in memory)")
    t0 = time.time()
    sample = Path(sample or city.raw.path)
    t = load_templates(sample, city.bbox)
    sample_day = datetime.fromtimestamp(int(t.ts0.min()), tz=UTC).date()
    day_shift_s = (Date.fromisoformat(date) - sample_day).days * 86_400
    plan = plan_trips(
        t,
        points=points,
        bbox=city.bbox,
        seed=seed,
        day_shift_s=day_shift_s,
        spread_hours=spread_hours,
        max_offset_m=max_offset_m,
    )
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*-generated.csv*"):
        old.unlink()
    cum = np.cumsum(plan.length)
    cuts = np.searchsorted(cum, np.arange(points_per_file, points, points_per_file), side="right")
    bounds = [0, *sorted(set(int(c) for c in cuts if 0 < c < len(plan.length))), len(plan.length)]
    files = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = out / f"part-{i:05d}-generated.csv"
        _write_strings(path, HEADER, render_lines(t, plan, a, b))
        files.append(path)
    (out / MARKER).write_text(
        _marker_text(city, sample, t, plan, points, seed, date, spread_hours, max_offset_m, files)
    )
    log.info(
        "generated %d points in %d trips, %d file(s) in %s (%.1f s)",
        points,
        len(plan.length),
        len(files),
        out,
        time.time() - t0,
    )
    return files


def _marker_text(city, sample, t, plan, points, seed, date, spread_hours, max_offset_m, files) -> str:
    b = city.bbox
    return (
        "GENERATED DATA, NOT REAL TRIPS: scale-test input made by jobs/generate_scale_data.py.\n\n"
        f"points: {points}\ntrips: {len(plan.length)}\nfiles: {', '.join(p.name for p in files)}\n"
        f"seed: {seed}\ndelivery date: {date}\n"
        f"source: {sample} ({len(t.length)} inside-bbox runs of the real trips of city '{city.name}', "
        f"licence {city.raw.licence})\n"
        f"bbox: lon {b.min_lon}..{b.max_lon}, lat {b.min_lat}..{b.max_lat} (every point is inside)\n\n"
        "How: real trips cut to their runs inside the bbox, drawn with replacement; each copy shifted in "
        f"time by whole days to the delivery date plus 0-{spread_hours:g} h in whole minutes, and in space "
        f"by one offset of at most {max_offset_m:g} m per axis (less where the trip would leave the bbox); "
        "new TRIP_ID, TAXI_ID = real id + 1,000,000 x fleet copy (0-19). The last trip is cut to hit the "
        "point count exactly. Point spacing, stays and GPS glitches are the real ones.\n"
        "Licence: derived from the source above; the same licence applies.\n"
    )


def generated_city_config(city: CityConfig, folder: Path, *, name: str | None = None) -> Path:
    """Write `<city>_generated.yaml` into `folder` (a city search-path folder): the city with another name,
    so its generated deliveries land in landing/<city>_generated/ and never mix with real ones."""
    name = name or f"{city.name}_generated"
    gen = city.model_copy(
        update={
            "name": name,
            "description": f"GENERATED scale-test data derived from {city.name} (jobs/generate_scale_data.py)",
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text("# GENERATED by jobs/generate_scale_data.py for scale tests.\n" + city_to_yaml(gen))
    load_city_file(path)  # fails here, not in the benchmark, if the copy does not validate
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, required=True, help="exact number of points to generate")
    parser.add_argument("--city", default="porto", help="city whose sample and bbox are used (default porto)")
    parser.add_argument("--date", default=DEFAULT_DATE, help=f"delivery date of the set (default {DEFAULT_DATE})")
    parser.add_argument(
        "--out", type=Path, help="delivery folder to write (default <home>/landing/<city>_generated/<date>/)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    parser.add_argument("--points-per-file", type=int, default=2_000_000, help="points per part file (default 2 M)")
    parser.add_argument("--max-offset-m", type=float, default=300.0, help="largest spatial shift per axis (m)")
    parser.add_argument("--spread-hours", type=float, default=13.0, help="time shifts span 0..this many hours")
    parser.add_argument(
        "--city-config",
        action="store_true",
        help="also write <home>/config/cities/<city>_generated.yaml so "
        "'transfertraj ingest --city <city>_generated --date <date>' finds the set",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings.load()
    city = load_city(args.city, settings)
    out = args.out or settings.landing / f"{city.name}_generated" / args.date
    files = generate(
        city=city,
        out=out,
        points=args.points,
        seed=args.seed,
        date=args.date,
        points_per_file=args.points_per_file,
        spread_hours=args.spread_hours,
        max_offset_m=args.max_offset_m,
    )
    if args.city_config:
        print(generated_city_config(city, settings.home / "config" / "cities"))
    print(f"{args.points} generated points in {len(files)} file(s) under {out} (see {MARKER})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
