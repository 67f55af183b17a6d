"""bench/context.py's GENERATED silver lake: silver's Delta table as the ingestion writes it (no Spark)."""

import pyarrow as pa
import pyarrow.parquet as pq

from bench import context as bench
from transfertraj.feature_store.arrow_parts import source_parts
from transfertraj.jobs.schemas import SILVER_SCHEMA


def _silver_rows(trips: int) -> pa.Table:
    ts = pa.array([[1, 2, 3]] * trips, pa.list_(pa.int64()))
    xy = pa.array([[1.0, 2.0, 3.0]] * trips, pa.list_(pa.float64()))
    instant = pa.array([0] * trips, pa.timestamp("us", tz="UTC"))
    columns = {"trip_id": pa.array([f"gen-{i}" for i in range(trips)]), "start_ts": instant, "end_ts": instant}
    columns |= {"n_points": pa.array([3] * trips, pa.int32()), "duration_s": pa.array([2] * trips)}
    columns |= {"length_m": pa.array([1.0] * trips), "ts": ts, "lon": xy, "lat": xy}
    columns |= {"vehicle_key": pa.array(["v"] * trips), "source_file": pa.array(["generated"] * trips)}
    columns |= {"city": pa.array(["porto"] * trips), "date": pa.array([bench.DATE] * trips)}
    return pa.table({f.name: columns[f.name] for f in SILVER_SCHEMA})


def test_the_silver_lake_holds_every_trip_in_silver_files_with_links_to_the_context(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "TRIPS_PER_ROW_GROUP", 3)
    pq.write_table(_silver_rows(21), tmp_path / "silver.parquet")
    context_home = tmp_path / "home"
    (context_home / "lake" / "context_grid").mkdir(parents=True)
    home = bench.silver_lake(tmp_path / "silver.parquet", tmp_path / "lake_home", context_home)
    version, units = source_parts(str(home / "lake" / "silver"), {"city": "porto", "date": bench.DATE})
    assert version == 0 and len({file for file, _, _ in units}) == bench.SILVER_FILES
    assert sum(rows for _, _, rows in units) == 21 and max(rows for _, _, rows in units) == 3
    assert (home / "lake" / "context_grid").resolve() == (context_home / "lake" / "context_grid").resolve()
    assert (home / "cache" / "context").is_dir()  # the NPZ cache is the context home's
    assert bench.silver_lake(tmp_path / "silver.parquet", home, context_home) == home  # made once
    assert source_parts(str(home / "lake" / "silver"), {"city": "porto", "date": bench.DATE})[0] == 0
