"""Onboarding a city delivered in GCJ-02, end to end: land, ingest, silver back in WGS-84.

The delivery is GENERATED FROM REAL TRIPS BY THE FORWARD TRANSFORM: real GeoLife fixes of user 001 on
one local day (data/beijing/geolife_sample.txt.gz, WGS-84) moved into GCJ-02 with the published
forward formula (transfertraj/features/datum.py), written as a DiDi-style export would be: no header,
columns by position, nanosecond epochs, tab-separated and gzipped. Ingestion must undo the datum shift:
every silver fix is its original WGS-84 fix within 0.5 m.
"""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from tests.jobs.ingest_fixtures import write_city
from transfertraj.core.city_config import load_city, load_city_file, parse_city
from transfertraj.core.settings import REPO_ROOT
from transfertraj.feature_store.delta_io import read_table
from transfertraj.feature_store.tables import table_path
from transfertraj.features.datum import wgs84_to_gcj02
from transfertraj.jobs.ingest import ingest_date
from transfertraj.jobs.land_sample import land_sample

GEOLIFE = REPO_ROOT / "data" / "beijing" / "geolife_sample.txt.gz"
DAY = "2008-11-20"  # a local (Beijing) day of user 001 with vehicle trips: 699 fixes


def _metres(lon1, lat1, lon2, lat2):
    k = 6_371_008.8 * np.pi / 180
    return np.hypot((lon1 - lon2) * k * np.cos(np.radians(lat2)), (lat1 - lat2) * k)


def _real_day() -> pd.DataFrame:
    df = pd.read_csv(GEOLIFE, dtype={"uid": str})
    t = pd.to_datetime(df["datetime"]).dt.tz_localize("UTC")  # GeoLife records GMT
    df["ts"] = t.astype("int64") // 10**9
    df = df[(df["uid"] == "001") & (t.dt.tz_convert("Asia/Shanghai").dt.date.astype(str) == DAY)]
    return df.drop_duplicates("ts").reset_index(drop=True)


@pytest.mark.slow
def test_a_gcj02_headerless_nanosecond_delivery_ingests_to_the_original_wgs84(spark, settings, tmp_path):
    real = _real_day()
    g_lon, g_lat = wgs84_to_gcj02(real["lng"].to_numpy(), real["lat"].to_numpy())
    assert _metres(g_lon, g_lat, real["lng"].to_numpy(), real["lat"].to_numpy()).min() > 100  # really shifted
    source = tmp_path / "gaia_gcj02.tsv.gz"
    with gzip.open(source, "wt", encoding="utf-8", newline="") as f:
        for uid, ts, lon, lat in zip(real["uid"], real["ts"], g_lon, g_lat, strict=True):
            f.write(f"{uid}\t{ts * 10**9}\t{float(lon)!r}\t{float(lat)!r}\n")  # driver, epoch ns, lon, lat: no header

    data = load_city("beijing", settings).model_dump(mode="json", exclude_none=True)
    data.update(name="gcjcity", datum="gcj02", description="GENERATED from real trips by the forward transform")
    data["raw"] = {
        "format": "point_log",
        "path": str(source),
        "header": False,
        "columns": {"vehicle_id": 0, "timestamp": 1, "lon": 2, "lat": 3},
        "timestamp_format": "auto",
        "licence": "GeoLife 1.3 fixes moved to GCJ-02 (generated from real trips by the forward transform)",
    }
    city = load_city_file(write_city(tmp_path / "cities", parse_city(data)))  # as an onboarded city file

    landed = land_sample(city, settings)
    assert list(landed) == [DAY]  # nanosecond epochs are dated by their real local day, none undated
    report = ingest_date(spark, city, DAY, settings)
    assert report.rows_read == report.rows_accepted == len(real)
    assert report.datum == "gcj02" and report.points_converted == report.points_read == len(real)
    assert report.trajectories_out > 0

    silver, _ = read_table(spark, table_path(settings, "silver"), where={"city": "gcjcity", "date": DAY})
    fixes = silver.select(F.explode(F.arrays_zip("ts", "lon", "lat")).alias("p")).select("p.*").toPandas()
    assert len(fixes) == report.points_kept > 20
    original = fixes.merge(real[["ts", "lng", "lat"]], on="ts", suffixes=("", "_wgs"))
    assert len(original) == len(fixes)  # every silver fix is a real fix, found by its second
    gap = _metres(original["lon"], original["lat"], original["lng"], original["lat_wgs"])
    assert gap.max() < 0.5, gap.max()

    runs, _ = read_table(spark, table_path(settings, "runs"), where={"city": "gcjcity"})
    message = runs.where(F.col("status") == "published").first()["message"]
    assert f"datum gcj02: {len(real)} point(s) converted to WGS-84" in message
