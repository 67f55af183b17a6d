"""Ingesting a Parquet delivery: typed columns read through the same row checks as text, accounted for."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import point_log_city
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.tables import table_path
from transfertraj.jobs.ingest import ingest_date
from transfertraj.jobs.land_sample import land_sample

DATE = "2013-07-01"
START = 1372669200  # 10:00 in Lisbon


@pytest.mark.slow
def test_a_parquet_delivery_with_typed_columns_ingests(spark, settings, tmp_path):
    """GENERATED: one vehicle driving east through Porto, ~100 m per 15 s fix, timestamps as a Parquet
    timestamp column; plus a row with a null position and one whose vehicle id holds a line break."""
    n = 20
    table = pa.table(
        {
            "vehicle": ["taxi 7"] * n + ["taxi 8", "taxi\n9"],
            "at": pa.array([START + 15 * i for i in range(n)] + [START, START], pa.timestamp("s", tz="UTC")),
            "lon": [-8.62 + 0.0012 * i for i in range(n)] + [None, -8.61],
            "lat": [41.15] * n + [None, 41.15],
            "speed": [30.0] * (n + 2),  # an extra column, not mapped
        }
    )
    source = tmp_path / "fleet.parquet"
    pq.write_table(table, source)
    raw = {
        "format": "point_log",
        "path": str(source),
        "columns": {"vehicle_id": "vehicle", "timestamp": "at", "lon": "lon", "lat": "lat"},
        "timestamp_timezone": "Asia/Shanghai",  # an instant carries its own zone: this must not apply
        "licence": "test data",
    }
    city = point_log_city("parquetcity", raw=raw)
    assert list(land_sample(city, settings)) == [DATE]
    r = ingest_date(spark, city, DATE, settings)
    assert r.lines_read == n + 3  # 22 rows, one holding a line break
    assert r.rows_read == n + 2 and r.rows_accepted == n + 1
    assert r.rows_rejected_by_reason == {"invalid_coordinate": 1}
    assert r.trajectories_out == 1 and r.points_kept == n
    silver, _ = read_table(spark, table_path(settings, "silver"), where={"city": "parquetcity", "date": DATE})
    row = silver.select("ts", "lon").first()
    assert row.ts == [START + 15 * i for i in range(n)]  # the instants, not shifted by timestamp_timezone
    assert abs(row.lon[1] - (-8.62 + 0.0012)) < 1e-12  # doubles read back exactly
    rejects, _ = read_table(spark, table_path(settings, "rejects"), where={"city": "parquetcity", "date": DATE})
    assert rejects.where(F.col("reason") == "invalid_coordinate").count() == 1
