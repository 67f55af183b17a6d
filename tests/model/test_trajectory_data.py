"""Reading the features table: DataFrame/Arrow/Parquet/Delta input, version recording, split, context flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.model.generated import generated_features
from transfertraj.model.trajectory_data import (
    TaxonomyMismatch,
    chronological_split,
    eligible,
    load_features,
    read_features,
)


def test_load_from_pandas_and_arrow_agree_and_record_version(features_df):
    a = load_features(features_df, data_version=42)
    b = load_features(pa.Table.from_pandas(features_df, preserve_index=False), data_version=42)
    assert len(a) == len(features_df) == len(b)
    assert a.data_version == 42 and a.describe()["data_version"] == 42
    assert a.taxonomy_version == "generated-taxonomy-1"
    assert (a.poi_dim, a.road_dim) == (5, 4)
    np.testing.assert_array_equal(a.n_points, features_df["n_points"].to_numpy())
    np.testing.assert_allclose(a.xy, b.xy)
    row = 7
    sl = slice(a.offsets[row], a.offsets[row + 1])
    np.testing.assert_allclose(a.xy[sl, 0], features_df["x"][row])
    np.testing.assert_allclose(a.poi[sl], np.stack(features_df["poi"][row]))
    np.testing.assert_allclose(a.time[sl, 3], features_df["minutes_since_start"][row])


def test_chronological_split_is_8_1_1_by_departure():
    df = generated_features(50, seed=3).sample(frac=1.0, random_state=0)  # shuffled rows
    data = load_features(df, data_version=1)
    train, val, test = chronological_split(data)
    assert (len(train), len(val), len(test)) == (40, 5, 5)
    assert data.start_ts[train].max() < data.start_ts[val].min()
    assert data.start_ts[val].max() < data.start_ts[test].min()


def test_chronological_split_is_per_city():
    """Two cities of different years: each keeps 8:1:1 of its own trips, its latest ones for val and test."""
    old = generated_features(50, seed=3)
    new = generated_features(30, seed=4)
    old["city"], new["city"] = "sanfrancisco", "porto"
    old["trip_id"] = "sf-" + old["trip_id"].astype(str)
    old["start_ts"] = old["start_ts"] - pd.Timedelta(days=5 * 365)  # five years earlier
    data = load_features(pd.concat([old, new], ignore_index=True), data_version=1)
    train, val, test = chronological_split(data)
    for city, sizes in (("sanfrancisco", (40, 5, 5)), ("porto", (24, 3, 3))):
        own = [idx[data.city[idx] == city] for idx in (train, val, test)]
        assert tuple(len(i) for i in own) == sizes
        assert data.start_ts[own[0]].max() < data.start_ts[own[1]].min() <= data.start_ts[own[2]].min()


def test_eligible_respects_task_minimum_and_max_points():
    data = load_features(generated_features(30, min_points=3, max_points=12), data_version=1)
    idx = np.arange(len(data))
    assert (data.n_points[eligible(data, idx, "tp")] >= 6).all()
    assert len(eligible(data, idx, "tp")) < len(idx)
    assert (data.n_points[eligible(data, idx, "pretrain", max_points=8)] <= 8).all()


def test_context_missing_rows_and_per_point_missing_flags():
    import pandas as pd

    with_ctx = generated_features(4)
    without = generated_features(3, seed=9, city="no_osm_city", context_missing=True)
    n0 = with_ctx.loc[0, "n_points"]
    flags = [np.zeros(5, bool) for _ in range(n0)]
    flags[2] = np.array([False, False, True, False, False])
    with_ctx.at[0, "poi_missing"] = flags
    poi = [v.copy() for v in with_ctx.loc[1, "poi"]]
    poi[3][:] = np.nan  # a point outside the OSM extract: NaN, flagged or not
    with_ctx.at[1, "poi"] = poi
    road = [v.copy() for v in with_ctx.loc[1, "road"]]
    road[3][:] = np.nan
    with_ctx.at[1, "road"] = road
    rm = np.zeros(with_ctx.loc[2, "n_points"], bool)
    rm[0] = True
    with_ctx.at[2, "road_missing"] = rm

    data = load_features(pd.concat([with_ctx, without], ignore_index=True), data_version=1)
    o = data.offsets
    assert data.context_missing.tolist() == [False] * 4 + [True] * 3
    assert data.poi_missing[o[0] + 2].tolist() == [False, False, True, False, False]
    assert not data.poi_missing[o[0] + 1].any()
    assert data.poi_missing[o[1] + 3].all() and data.road_missing[o[1] + 3]
    assert np.isfinite(data.poi).all() and np.isfinite(data.road).all()
    assert data.road_missing[o[2]] and not data.road_missing[o[2] + 1]
    assert (data.poi[o[4] :] == 0).all() and data.poi_missing[o[4] :].all() and data.road_missing[o[4] :].all()
    only_missing = load_features(without, data_version=1, poi_dim=5, road_dim=4)
    assert (only_missing.poi_dim, only_missing.road_dim) == (5, 4)


def test_per_trajectory_poi_missing_flags_are_read_too():
    df = generated_features(3)
    df["poi_missing"] = [np.array([True, False, False, False, False])] * 3  # array<boolean> (P), older form
    df = df.drop(columns=["road_missing"])
    data = load_features(df, data_version=1)
    assert data.poi_missing[:, 0].all() and not data.poi_missing[:, 1:].any()
    assert not data.road_missing.any()


def test_mixed_taxonomy_versions_are_refused():
    import pandas as pd

    df = pd.concat([generated_features(3), generated_features(3, taxonomy_version="other-taxonomy")])
    with pytest.raises(TaxonomyMismatch, match="several POI taxonomy versions"):
        load_features(df, data_version=1)


def test_read_parquet_and_delta(tmp_path, features_df):
    pq.write_table(pa.Table.from_pandas(features_df, preserve_index=False), tmp_path / "f.parquet")
    table, version = read_features(tmp_path / "f.parquet")
    assert table.num_rows == len(features_df) and version.startswith("parquet:")
    with pytest.raises(ValueError, match="not a Delta table"):
        read_features(tmp_path / "f.parquet", version=0)

    # A Delta folder (delta-rs): version 0 holds two cities, version 1 replaces one city's rows.
    from deltalake import write_deltalake

    delta = tmp_path / "features"
    both = features_df.assign(city=["a" if i < 25 else "b" for i in range(len(features_df))])
    write_deltalake(delta, pa.Table.from_pandas(both, preserve_index=False), partition_by=["city", "date"])
    newer = features_df.iloc[:10].assign(city="a", trip_id=lambda d: "new-" + d["trip_id"])
    write_deltalake(
        delta,
        pa.Table.from_pandas(newer, preserve_index=False),
        mode="overwrite",
        partition_by=["city", "date"],
        predicate="city = 'a'",
    )
    table, version = read_features(delta)
    assert version == 1 and table.num_rows == 10 + len(features_df) - 25
    table, version = read_features(delta, cities=["a"])
    assert version == 1 and sorted(table.column("trip_id").to_pylist()) == sorted(newer["trip_id"])
    table, version = read_features(delta, version=0, cities=["a"])
    assert version == 0 and sorted(table.column("trip_id").to_pylist()) == sorted(features_df["trip_id"][:25])
    assert set(table.column("city").to_pylist()) == {"a"}
    assert len(load_features(table, version)) == 25
