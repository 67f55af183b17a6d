"""The GeoJSON of a prediction: valid RFC 7946 structure, every kind of feature with its properties, the
errors of the scored answers, null (not NaN) where nothing is known. Answers are made up here (no model):
what is tested is the mapping, on GENERATED trips; the end-to-end run through a registered model and the
CLI is in test_trip_page.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.transfertraj.test_holdout import trips
from transfertraj.holdout import score, split
from transfertraj.trip_geojson import KINDS, feature_collection, write_geojson


def answers_for(truth: pd.DataFrame, shift_lat: float = 0.0005) -> pd.DataFrame:
    """What a model might answer: the held-out points moved ~55 m north."""
    return pd.DataFrame(
        {
            "trip_id": truth["trip_id"],
            "point": truth["point"],
            "ts": truth["ts"],
            "pred_lon": truth["lon"],
            "pred_lat": truth["lat"] + shift_lat,
            "pred_minutes_since_start": 0.0,
        }
    )


def kinds(fc: dict, trip: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in fc["features"]:
        if trip is None or f["properties"]["trip_id"] == trip:
            out[f["properties"]["kind"]] = out.get(f["properties"]["kind"], 0) + 1
    return out


def check_rfc7946(fc: dict) -> None:
    assert fc["type"] == "FeatureCollection"
    json.dumps(fc, allow_nan=False)  # NaN is not JSON: a reader would choke
    for f in fc["features"]:
        assert f["type"] == "Feature" and f["properties"]["kind"] in KINDS
        g = f["geometry"]
        coords = [g["coordinates"]] if g["type"] == "Point" else g["coordinates"]
        assert g["type"] in ("Point", "LineString") and (g["type"] == "Point" or len(coords) >= 2)
        for lon, lat in coords:  # lon first, WGS-84
            assert -180 <= lon <= 180 and -90 <= lat <= 90
    lon0, lat0, lon1, lat1 = fc["bbox"]
    assert lon0 <= lon1 and lat0 <= lat1


def test_tp_with_truth_has_every_kind_and_the_error():
    request, truth = split(trips(), "tp")
    scored = score(answers_for(truth), truth, "tp")
    fc = feature_collection(request, scored, "tp", truth=truth, model="models:/m@champion")
    check_rfc7946(fc)
    assert kinds(fc, "t0") == {
        "observed": 6,
        "hidden": 5,
        "predicted": 5,
        "observed_path": 1,
        "hidden_path": 1,
        "predicted_path": 1,
    }
    pred = [f for f in fc["features"] if f["properties"]["kind"] == "predicted"]
    assert [p["properties"]["error_m"] for p in pred] == [pytest.approx(55.6, abs=0.1)] * 10
    assert all(isinstance(p["properties"]["ts"], int) for p in pred)
    assert fc["summary"]["mean_error_m"] == pytest.approx(55.6, abs=0.1)
    assert [t["trip_id"] for t in fc["summary"]["per_trip"]] == ["t0", "t1"]
    # the predicted path starts at the last observed point and runs through the 5 answers
    path = next(
        f for f in fc["features"] if f["properties"]["kind"] == "predicted_path" and f["properties"]["trip_id"] == "t0"
    )
    last_seen = request[request["trip_id"] == "t0"].iloc[-1]
    assert path["geometry"]["coordinates"][0] == [round(last_seen["lon"], 6), round(last_seen["lat"], 6)]
    assert len(path["geometry"]["coordinates"]) == 6


def test_without_truth_there_is_no_hidden_point_and_no_error():
    request, truth = split(trips(), "tp")
    fc = feature_collection(request, answers_for(truth), "tp")
    check_rfc7946(fc)
    assert "hidden" not in kinds(fc) and "hidden_path" not in kinds(fc)
    pred = [f for f in fc["features"] if f["properties"]["kind"] == "predicted"]
    assert len(pred) == 10 and all(p["properties"]["error_m"] is None for p in pred)
    assert "mean_error_m" not in fc["summary"]


def test_a_plain_tr_request_interleaves_its_points_with_the_answers():
    """Without --holdout the request rows have no index; the i-th is index i * mu, as serving expands it."""
    request, truth = split(trips((9, 9)), "tr", mu=4)
    fc = feature_collection(request.drop(columns="point"), answers_for(truth, 0.0), "tr", mu=4)
    path = next(
        f for f in fc["features"] if f["properties"]["kind"] == "predicted_path" and f["properties"]["trip_id"] == "t0"
    )
    lats = [c[1] for c in path["geometry"]["coordinates"]]
    assert len(lats) == 9 and lats == sorted(lats)  # the drive goes north: in trajectory order, lat rises


def test_odtte_puts_the_times_on_the_destination(tmp_path):
    request, truth = split(trips(), "odtte")
    scored = score(pd.DataFrame({"trip_id": ["t0", "t1"], "travel_time_min": [3.0, np.nan]}), truth, "odtte")
    fc = feature_collection(request, scored, "odtte", truth=truth)
    check_rfc7946(fc)
    assert kinds(fc, "t0") == {"observed": 2, "observed_path": 1, "hidden_path": 1}
    dest = [f["properties"] for f in fc["features"] if f["properties"]["kind"] == "observed"][1]
    assert dest == {**dest, "travel_time_min": 3.0, "true_travel_time_min": 2.5, "error_min": 0.5}
    t1_dest = [f["properties"] for f in fc["features"] if f["properties"]["kind"] == "observed"][3]
    assert t1_dest["travel_time_min"] is None and t1_dest["error_min"] is None  # NaN -> null
    path = write_geojson(fc, tmp_path / "out.geojson")
    assert json.loads(path.read_text()) == json.loads(json.dumps(fc))
