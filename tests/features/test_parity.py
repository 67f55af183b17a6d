"""No training/serving skew: the same real trips through the Spark job and through the served model's
feature path give the same features.

Real data only: trips of the bundled Porto taxi sample and of the San Francisco cabspotting day, with
each city's real OSM context (Porto: the bundled extract cut to a central box; San Francisco: the
bundled GIS extract, lattice at 10 m to keep the test short, since parity does not depend on it).
Spark side: the context tables built by jobs.context_tables, the features by jobs.featurize.featurize_date
on a silver partition of those trips. Serving side: the context exported from those Delta
tables as the registry does (delta-rs, NPZ), and transfertraj.serving.features_from_points.
POI counts and masks must be equal exactly, the rest within float tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.transfertraj.registry_fixtures import BOX
from transfertraj.core.city_config import load_city_file
from transfertraj.core.settings import BUNDLED_CITY_DIR, Settings

REPO = Path(__file__).resolve().parents[2]
N_TRIPS = 120
EXACT = ("ts", "lon", "lat", "weekday", "hour", "minute", "poi_missing", "road_missing")
CLOSE = ("mx", "my", "x", "y", "minutes_since_start", "road")
BY = ("city", "date")


def porto_trips() -> pd.DataFrame:
    """Request rows (trip_id, idx, ts, lon, lat) of real Porto trips that touch the central box."""
    raw = pd.read_csv(REPO / "data" / "porto" / "taxi_sample.csv", dtype={"TRIP_ID": str})
    w, s, e, n = BOX
    rows = []
    for r in raw.itertuples():
        pts = np.array(json.loads(r.POLYLINE), dtype=float).reshape(-1, 2)[:120]
        if len(pts) < 5 or not ((pts[:, 0] > w) & (pts[:, 0] < e) & (pts[:, 1] > s) & (pts[:, 1] < n)).any():
            continue
        ts = int(r.TIMESTAMP) + 15 * np.arange(len(pts))
        rows.append(pd.DataFrame({"trip_id": r.TRIP_ID, "ts": ts, "lon": pts[:, 0], "lat": pts[:, 1]}))
        if len(rows) == N_TRIPS:
            break
    return _indexed(pd.concat(rows, ignore_index=True))


def sf_trips() -> pd.DataFrame:
    """Request rows of real San Francisco fares (runs of occupied=1 of one cab), inside the OSM box."""
    df = pd.read_csv(REPO / "data" / "sanfrancisco" / "cabspotting_2008-05-20.csv.gz")
    df = df.sort_values(["cab_id", "timestamp"], kind="stable")
    run = (df["occupied"].ne(df["occupied"].shift()) | df["cab_id"].ne(df["cab_id"].shift())).cumsum()
    df = df.assign(trip_id=df["cab_id"] + "-" + run.astype(str))[df["occupied"] == 1]
    inside = df["lon"].between(-122.45, -122.38) & df["lat"].between(37.76, 37.80)
    keep = df[inside].groupby("trip_id").size().loc[lambda c: c.between(5, 120)].index[:N_TRIPS]
    df = df[df["trip_id"].isin(keep)].rename(columns={"timestamp": "ts"})
    return _indexed(df[["trip_id", "ts", "lon", "lat"]].reset_index(drop=True))


def _indexed(points: pd.DataFrame) -> pd.DataFrame:
    points = points.sort_values(["trip_id", "ts"], kind="stable").reset_index(drop=True)
    return points.assign(idx=points.groupby("trip_id").cumcount().astype("int32"), ts=points["ts"].astype("int64"))


def silver_frame(spark, points: pd.DataFrame, city: str):
    """The silver layout (one row per trajectory, arrays) of request points, as the job reads it."""
    trips = points.groupby("trip_id", sort=True).agg(ts=("ts", list), lon=("lon", list), lat=("lat", list))
    trips = trips.reset_index()
    trips["vehicle_key"] = "v"
    trips["start_ts"] = pd.to_datetime([t[0] for t in trips["ts"]], unit="s", utc=True)
    trips["n_points"] = trips["ts"].map(len).astype("int32")
    trips["city"], trips["date"] = city, "2000-01-01"
    schema = (
        "trip_id string, ts array<bigint>, lon array<double>, lat array<double>, vehicle_key string, "
        "start_ts timestamp, n_points int, city string, date string"
    )
    return spark.createDataFrame(trips, schema=schema)


@pytest.fixture(scope="module")
def parity_settings(tmp_path_factory):
    return Settings.load(home=tmp_path_factory.mktemp("parity_home"))


def porto_city(settings):
    from transfertraj.jobs.osm_context import cut_osm_extract

    porto = load_city_file(BUNDLED_CITY_DIR / "porto.yaml")
    extract = cut_osm_extract(REPO / "data" / "porto" / "porto_central.osm.bz2", settings.home / "porto.osm", BOX)
    return porto.model_copy(update={"osm": porto.osm.model_copy(update={"path": extract})}), {}


def sf_city(settings):
    return load_city_file(BUNDLED_CITY_DIR / "sanfrancisco.yaml"), {"lattice_m": 10.0}


def both_paths(spark, settings, city, build_kwargs, points, tmp_path):
    """(Spark job's features, serving path's features), pandas, one row per trip, sorted by trip_id."""
    from transfertraj.feature_store.delta_io import replace_partition
    from transfertraj.feature_store.reader import read_table
    from transfertraj.feature_store.tables import table_path
    from transfertraj.features.context import load_city_context
    from transfertraj.jobs.context_tables import build_context_tables
    from transfertraj.jobs.featurize import featurize_date
    from transfertraj.registry import export_city_context
    from transfertraj.serving import features_from_points

    versions = build_context_tables(spark, city, settings, **build_kwargs)
    silver, date = silver_frame(spark, points, city.name), "2000-01-01"
    replace_partition(silver, table_path(settings, "silver"), {"city": city.name, "date": date}, partition_by=BY)
    out = featurize_date(spark, city, date, settings)  # the job as the pipeline runs it
    job = read_table(settings, "features", city=city.name, version=out["features_version"])[0].to_pandas()
    ctx = load_city_context(export_city_context(settings, city.name, versions, tmp_path))
    served = features_from_points(points, city, ctx).to_pandas()
    return (df.sort_values("trip_id").reset_index(drop=True) for df in (job, served))


def assert_same_features(job: pd.DataFrame, served: pd.DataFrame):
    assert list(job["trip_id"]) == list(served["trip_id"])
    assert (job["n_points"].to_numpy() == served["n_points"].to_numpy()).all()
    assert (job["context_missing"] == served["context_missing"]).all()
    for col in (*EXACT, "poi", *CLOSE):
        a = np.concatenate([np.stack(list(v)) if np.ndim(v[0]) else np.asarray(v) for v in job[col]])
        b = np.concatenate([np.stack(list(v)) if np.ndim(v[0]) else np.asarray(v) for v in served[col]])
        assert a.shape == b.shape, col
        if col in CLOSE:
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=col)
        else:  # exact: POI counts (log1p of integers, NaN where missing) and every integer or flag
            np.testing.assert_array_equal(b, a, err_msg=col)


@pytest.mark.parametrize(
    ("make_city", "make_points"),
    [(porto_city, porto_trips), pytest.param(sf_city, sf_trips, marks=pytest.mark.slow)],  # SF: a 10 m lattice
)
def test_spark_job_and_serving_build_the_same_features(spark, parity_settings, tmp_path, make_city, make_points):
    city, build_kwargs = make_city(parity_settings)
    points = make_points()
    job, served = both_paths(spark, parity_settings, city, build_kwargs, points, tmp_path)
    assert len(job) == points["trip_id"].nunique() >= 50
    assert_same_features(job, served)
    poi = np.concatenate([np.stack(list(v)) for v in served["poi"]])
    # the comparison has teeth: real counts here, and NaN (missing) where the extract stops or a
    # category is not covered (San Francisco's shapefiles lose shop/tourism/leisure)
    assert np.nanmax(poi) > 1.0 and np.isnan(poi).any() and np.isfinite(poi).any()
