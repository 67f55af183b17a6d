"""Serving a GCJ-02 city: request points are moved to WGS-84 exactly as ingestion moves deliveries,
and predicted points go back in GCJ-02. Points GENERATED from real GeoLife fixes by the forward transform."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transfertraj.core.city_config import load_city
from transfertraj.core.settings import REPO_ROOT
from transfertraj.features.datum import wgs84_to_gcj02
from transfertraj.serving import answer, expand_for_task, features_from_points


def _real_points(n: int = 12) -> pd.DataFrame:
    df = pd.read_csv(REPO_ROOT / "data" / "beijing" / "geolife_sample.txt.gz", nrows=n * 5)
    ts = pd.to_datetime(df["datetime"]).dt.tz_localize("UTC").astype("int64") // 10**9
    return (
        pd.DataFrame({"trip_id": "t1", "ts": ts, "lon": df["lng"], "lat": df["lat"]}).iloc[::5].reset_index(drop=True)
    )


def test_gcj02_requests_get_the_features_of_their_wgs84_points():
    wgs_city = load_city("beijing")
    gcj_city = wgs_city.model_copy(update={"datum": "gcj02"})
    wgs = _real_points()
    gcj = wgs.copy()
    gcj["lon"], gcj["lat"] = wgs84_to_gcj02(wgs["lon"], wgs["lat"])
    want = features_from_points(expand_for_task(wgs, "tp", interval_s=15), wgs_city, None)
    got = features_from_points(expand_for_task(gcj, "tp", interval_s=15), gcj_city, None)
    unconverted = features_from_points(expand_for_task(gcj, "tp", interval_s=15), wgs_city, None)
    for name in ("lon", "lat"):
        w, g = np.array(want.column(name)[0].as_py()), np.array(got.column(name)[0].as_py())
        np.testing.assert_allclose(g, w, atol=1e-7)  # ~1 cm
        assert np.abs(np.array(unconverted.column(name)[0].as_py()) - w).max() > 1e-3  # the shift is real
    mx_w, mx_g = np.array(want.column("mx")[0].as_py()), np.array(got.column("mx")[0].as_py())
    np.testing.assert_allclose(mx_g, mx_w, atol=0.01)


def test_answers_are_given_back_in_the_city_datum():
    preds = pd.DataFrame(
        {
            "trip_id": ["t1"],
            "point": [3],
            "pred_lon": [116.377817],
            "pred_lat": [39.911954],
            "pred_minutes": [1.0],
            "masked_spatial": [True],
            "masked_temporal": [False],
        }
    )
    expanded = pd.DataFrame({"trip_id": ["t1"], "idx": [3], "ts": [0], "observed": [False]})
    wgs = answer(preds, expanded, "tp")
    gcj = answer(preds, expanded, "tp", "gcj02")
    assert (wgs["pred_lon"][0], wgs["pred_lat"][0]) == (116.377817, 39.911954)
    # the eviltransform suite's Beijing pair (tests/features/test_datum.py)
    assert abs(gcj["pred_lon"][0] - 116.38404722455657) < 1e-9 and abs(gcj["pred_lat"][0] - 39.91334545536069) < 1e-9
