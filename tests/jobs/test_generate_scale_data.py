"""The scale-data generator: exact counts, every point inside the bbox, deterministic, ingestible."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from transfertraj.core.city_config import load_city
from transfertraj.jobs.generate_scale_data import HEADER, MARKER, generate, generated_city_config, main
from transfertraj.jobs.landed_files import PORTO_COLUMNS


@pytest.fixture(scope="module")
def porto():
    return load_city("porto")


def _rows(folder):
    for path in sorted(folder.glob("part-*-generated.csv")):
        with open(path, newline="") as f:
            yield from csv.DictReader(f)


def test_exact_count_bbox_header_and_label(tmp_path, porto):
    files = generate(city=porto, out=tmp_path, points=12_345, seed=3, points_per_file=5_000)
    assert len(files) >= 2 and all("generated" in f.name for f in files)
    for f in files:
        assert f.open().readline().rstrip("\n") == HEADER == ",".join(PORTO_COLUMNS)
    rows = list(_rows(tmp_path))
    pts = np.concatenate([np.asarray(json.loads(r["POLYLINE"]), dtype=float).reshape(-1, 2) for r in rows])
    assert len(pts) == 12_345
    b = porto.bbox
    assert (pts[:, 0] >= b.min_lon).all() and (pts[:, 0] <= b.max_lon).all()
    assert (pts[:, 1] >= b.min_lat).all() and (pts[:, 1] <= b.max_lat).all()
    assert len({r["TRIP_ID"] for r in rows}) == len(rows)
    assert all(r["TIMESTAMP"].isdigit() and r["TAXI_ID"].isdigit() for r in rows)
    assert "GENERATED" in (tmp_path / MARKER).read_text()


def test_deterministic_and_seed_changes_output(tmp_path, porto):
    a = generate(city=porto, out=tmp_path / "a", points=3_000, seed=1)
    b = generate(city=porto, out=tmp_path / "b", points=3_000, seed=1)
    c = generate(city=porto, out=tmp_path / "c", points=3_000, seed=2)
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]
    assert [f.read_bytes() for f in a] != [f.read_bytes() for f in c]


def _micro(polyline: str) -> np.ndarray:
    return np.rint(np.asarray(json.loads(polyline), dtype=float).reshape(-1, 2) * 1e6).astype(np.int64)


def test_trips_are_rigid_shifts_of_real_ones(tmp_path, porto):
    """Each generated trip is a piece of a real trip moved as a whole, by at most ~max_offset_m."""
    generate(city=porto, out=tmp_path, points=2_000, seed=5, max_offset_m=300)
    with open(porto.raw.path, newline="") as f:
        real = [q for q in (_micro(r["POLYLINE"]) for r in csv.DictReader(f)) if len(q) > 1]
    limit = 300 / 111_320 / 0.75 * 1e6  # 300 m of longitude at Porto's latitude, in microdegrees (generous)
    for r in _rows(tmp_path):
        p = _micro(r["POLYLINE"])
        if len(p) < 2:  # a one-point trip has no shape to compare
            continue
        steps = np.diff(p, axis=0)
        found = False
        for q in real:
            if len(q) < len(p):
                continue
            windows = np.lib.stride_tricks.sliding_window_view(np.diff(q, axis=0), (len(steps), 2))[:, 0]
            for start in np.flatnonzero((windows == steps).all(axis=(1, 2))):
                if (np.abs(p[0] - q[start]) <= limit).all():
                    found = True
                    break
            if found:
                break
        assert found, f"trip {r['TRIP_ID']} is not a shifted piece of a real trip"


def test_cli_help_and_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--points" in capsys.readouterr().out
    assert main(["--points", "500", "--out", str(tmp_path)]) == 0
    assert sum(len(json.loads(r["POLYLINE"])) for r in _rows(tmp_path)) == 500


@pytest.mark.slow
def test_real_ingestion_accounts_for_every_row_and_point(tmp_path, spark, settings, porto):
    from transfertraj.jobs.ingest import ingest_date

    city_file = generated_city_config(porto, tmp_path / "cities")
    s = replace(settings, city_dirs=(city_file.parent,))
    city = load_city("porto_generated", s)
    generate(city=porto, out=s.landing / city.name / "2013-07-02", points=3_000, seed=11, date="2013-07-02")
    report = ingest_date(spark, city, "2013-07-02", s)
    assert report.rows_read == report.rows_accepted + report.rows_rejected
    assert report.rows_rejected == 0
    assert report.points_read == 3_000 == report.points_kept + report.points_dropped
    assert report.points_dropped_by_reason.get("outside_bbox", 0) == 0
    assert report.status == "published" and report.trajectories_out > 0
