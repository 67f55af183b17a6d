"""Landing raw files as deliveries: one folder per local date, rows unchanged, the same bytes on a rerun."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from transfertraj.core.city_config import load_city
from transfertraj.core.settings import REPO_ROOT, Settings
from transfertraj.jobs.land_sample import dataset_files, land_datasets, land_sample

PORTO_SAMPLE = REPO_ROOT / "data" / "porto" / "taxi_sample.csv"


def _rows(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return f.read().splitlines()


def test_a_porto_file_spanning_days_lands_as_one_delivery_per_local_day(tmp_path):
    """Three real rows of the bundled sample, their TIMESTAMPs moved (GENERATED dates) to two local days;
    23:30 UTC on 2013-07-01 is 00:30 on 07-02 in Lisbon (WEST, UTC+1)."""
    lines = PORTO_SAMPLE.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], list(csv.reader(lines[1:4]))
    ts = header.replace('"', "").split(",").index("TIMESTAMP")
    for row, stamp in zip(rows, (1372636800, 1372721400, 1372723200)):  # 07-01 00:00, 23:30, 07-02 00:00 UTC
        row[ts] = str(stamp)
    src = tmp_path / "year.csv.gz"
    with gzip.open(src, "wt", encoding="utf-8", newline="") as f:
        f.write(header + "\n")
        csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(rows)
    settings = Settings.load(home=tmp_path / "home")
    landed = land_sample(load_city("porto", settings), settings, source=src)
    assert list(landed) == ["2013-07-01", "2013-07-02"]
    assert [len(_rows(p)) for p in landed.values()] == [2, 3]  # header + rows
    first = landed["2013-07-01"].read_bytes()
    land_sample(load_city("porto", settings), settings, source=src)
    assert landed["2013-07-01"].read_bytes() == first  # a rerun writes the same bytes


def test_the_bundled_sample_stays_one_delivery(tmp_path):
    settings = Settings.load(home=tmp_path)
    landed = land_sample(load_city("porto", settings), settings)
    assert list(landed) == ["2013-07-01"]
    assert _rows(landed["2013-07-01"]) == PORTO_SAMPLE.read_text(encoding="utf-8").splitlines()


def test_datasets_need_a_root_and_say_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERTRAJ_DATASETS", str(tmp_path / "nowhere"))
    settings = Settings.load(home=tmp_path)
    with pytest.raises(FileNotFoundError, match="TRANSFERTRAJ_DATASETS"):
        dataset_files(load_city("sanfrancisco", settings), settings)
    with pytest.raises(ValueError, match="names no datasets"):
        dataset_files(load_city("beijing", settings), settings)


def _datasets_root() -> Path:
    root = Settings.load().datasets
    if root is None:
        pytest.skip("no datasets root: set TRANSFERTRAJ_DATASETS (or keep ../shared/data beside the checkout)")
    return root


@pytest.mark.slow  # one more whole ingestion of a delivery variant
def test_a_real_san_francisco_day_lands_whole(tmp_path):
    root = _datasets_root()
    settings = Settings.load(home=tmp_path)
    city = load_city("sanfrancisco", settings)
    city = city.model_copy(
        update={"raw": city.raw.model_copy(update={"datasets": ["sanfrancisco/cabspotting_days/*05-18.csv.gz"]})}
    )
    landed = land_datasets(city, settings)
    assert list(landed) == ["2008-05-18"]
    (path,) = landed["2008-05-18"]
    assert _rows(path) == _rows(root / "sanfrancisco" / "cabspotting_days" / "cabspotting_2008-05-18.csv.gz")


def test_the_real_porto_year_lands_as_its_days(tmp_path):
    root = _datasets_root()
    settings = Settings.load(home=tmp_path)
    landed = land_datasets(load_city("porto", settings), settings)
    assert min(landed) == "2013-07-01" and max(landed) == "2014-05-31" and "undated" not in landed
    rows = sum(len(_rows(p)) - 1 for paths in landed.values() for p in paths)
    assert rows == len(_rows(root / "porto" / "porto_year_sample.csv.gz")) - 1 == 15_520


def _fleet_city(**raw):
    from tests.jobs.ingest_fixtures import point_log_city

    base = {"format": "point_log", "path": "x.csv", "licence": "t", "timestamp_format": "auto"}
    return point_log_city(timezone="Asia/Shanghai", raw={**base, **raw})


@pytest.mark.parametrize("scale", [1, 10**3, 10**6, 10**9])
def test_epoch_numbers_in_any_unit_land_on_their_local_day(tmp_path, scale):
    """GENERATED rows: 15:59:59 and 16:00:00 UTC on 2016-10-01 are either side of midnight in Shanghai."""
    city = _fleet_city(columns={"vehicle_id": "v", "timestamp": "t", "lon": "x", "lat": "y"})
    src = tmp_path / "fleet.csv"
    src.write_text("v,t,x,y\n" + "".join(f"d,{s * scale},104.0,30.6\n" for s in (1475337599, 1475337600)))
    landed = land_sample(city, Settings.load(home=tmp_path / "home"), source=src)
    assert list(landed) == ["2016-10-01", "2016-10-02"]  # never `undated`


def test_a_headerless_file_lands_headerless(tmp_path):
    city = _fleet_city(header=False, columns={"vehicle_id": 0, "timestamp": 2, "lon": 3, "lat": 4})
    src = tmp_path / "gaia.tsv.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.write("d\to\t1475337599\t104.0\t30.6\nd\to\t1475337600\t104.0\t30.6\n")
    landed = land_sample(city, Settings.load(home=tmp_path / "home"), source=src)
    assert {d: _rows(p) for d, p in landed.items()} == {
        "2016-10-01": ["d\to\t1475337599\t104.0\t30.6"],
        "2016-10-02": ["d\to\t1475337600\t104.0\t30.6"],
    }


def test_a_parquet_file_lands_as_parquet_by_local_day(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    city = _fleet_city(columns={"vehicle_id": "v", "timestamp": "t", "lon": "x", "lat": "y"})
    src = tmp_path / "fleet.parquet"
    instants = pa.array([1475337599, 1475337600, None], pa.timestamp("s", tz="UTC"))
    pq.write_table(pa.table({"v": ["d", "d", "d"], "t": instants, "x": [104.0] * 3, "y": [30.6] * 3}), src)
    landed = land_sample(city, Settings.load(home=tmp_path / "home"), source=src)
    assert {d: pq.read_table(p).num_rows for d, p in landed.items()} == {
        "2016-10-01": 1,
        "2016-10-02": 1,
        "undated": 1,
    }
    assert landed["2016-10-02"].name == "fleet.parquet"
