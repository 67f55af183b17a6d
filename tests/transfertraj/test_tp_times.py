"""TP requests that name the times they ask about: real San Francisco fares, whose fixes are irregular.

The model's TP mask hides positions, not times (model/masking.py), so the times of the five hidden
points are part of the question. A request names them as rows with a ts and no lon/lat; without them
the serving path keeps asking at the city's nominal interval after the last point.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transfertraj.core.constants import TP_FUTURE
from transfertraj.holdout import split
from transfertraj.serving import ServingInputError, asked_rows, check_points, expand_for_task

REPO = Path(__file__).resolve().parents[2]
SF_INTERVAL_S = 60  # config/cities/sanfrancisco.yaml sampling_interval_s


@functools.cache
def _fares() -> pd.DataFrame:
    """Real San Francisco fares (runs of occupied=1 of one cab) of the bundled cabspotting day, 10-60
    fixes, where the fixes are NOT evenly spaced (the spread of the gaps above 10 s)."""
    df = pd.read_csv(REPO / "data" / "sanfrancisco" / "cabspotting_2008-05-20.csv.gz")
    df = df.sort_values(["cab_id", "timestamp"], kind="stable")
    run = (df["occupied"].ne(df["occupied"].shift()) | df["cab_id"].ne(df["cab_id"].shift())).cumsum()
    df = df.assign(trip_id=df["cab_id"] + "-" + run.astype(str))[df["occupied"] == 1]
    df = df.rename(columns={"timestamp": "ts"})[["trip_id", "ts", "lon", "lat"]]
    gap = df["ts"].diff().where(df["trip_id"].eq(df["trip_id"].shift()))
    stats = gap.groupby(df["trip_id"]).agg(["count", "std"])
    keep = stats[stats["count"].between(9, 59) & (stats["std"] > 10)].index[:6]
    return df[df["trip_id"].isin(keep)].reset_index(drop=True)


def sf_fares(n: int = 6) -> pd.DataFrame:
    fares = _fares()
    return fares[fares["trip_id"].isin(fares["trip_id"].unique()[:n])].reset_index(drop=True)


def test_asked_times_are_the_hidden_points_times_on_real_irregular_fares():
    request, truth = split(sf_fares(), "tp")
    last_gaps = truth.groupby("trip_id")["ts"].apply(lambda t: set(np.diff(t.to_numpy())))
    assert any(g != {SF_INTERVAL_S} for g in last_gaps)  # the real held-out fixes are not 60 s apart
    asked = pd.concat([request, asked_rows(truth)], ignore_index=True).sample(frac=1, random_state=0)  # any order
    exp = expand_for_task(check_points(asked), "tp", interval_s=SF_INTERVAL_S)
    hidden = exp[~exp["observed"]]
    want = truth.sort_values(["trip_id", "ts"])
    assert hidden["trip_id"].tolist() == want["trip_id"].tolist()
    assert hidden["ts"].tolist() == want["ts"].tolist()  # the times asked, not 60 s steps
    assert hidden["idx"].tolist() == want["point"].tolist()  # at the held-out points' places (holdout.score)
    assert (exp[exp["observed"]]["ts"].to_numpy() == request.sort_values(["trip_id", "ts"])["ts"].to_numpy()).all()

    nominal = expand_for_task(check_points(request), "tp", interval_s=SF_INTERVAL_S)  # none named: as before
    steps = nominal[~nominal["observed"]].groupby("trip_id")["ts"].apply(lambda t: set(np.diff(t.to_numpy())))
    assert all(s == {SF_INTERVAL_S} for s in steps)
    assert (nominal[["trip_id", "idx", "observed"]].to_numpy() == exp[["trip_id", "idx", "observed"]].to_numpy()).all()


def test_a_request_may_name_times_for_some_trips_only():
    request, truth = split(sf_fares(2), "tp")
    first = truth["trip_id"].iloc[0]
    exp = expand_for_task(
        check_points(pd.concat([request, asked_rows(truth[truth["trip_id"] == first])])), "tp", interval_s=60
    )
    hidden = exp[~exp["observed"]]
    assert hidden[hidden["trip_id"] == first]["ts"].tolist() == truth[truth["trip_id"] == first]["ts"].tolist()
    other = hidden[hidden["trip_id"] != first]["ts"].to_numpy()
    last = request[request["trip_id"] != first]["ts"].max()
    assert other.tolist() == [last + 60 * k for k in range(1, TP_FUTURE + 1)]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda req, ask: pd.concat([req, ask.iloc[:3]]), "asks about 3 time"),
        (lambda req, ask: pd.concat([req, ask.assign(ts=ask["ts"] - 10**5)]), "after its last observed point"),
        (lambda req, ask: pd.concat([req, ask.assign(ts=ask["ts"].iloc[0])]), "distinct"),
        (lambda req, ask: pd.concat([req, ask.assign(trip_id="nobody")]), "has no observed point"),
        (lambda req, ask: pd.concat([req, ask.assign(lat=37.7)]), "only one of lon/lat"),
    ],
)
def test_asked_times_that_cannot_be_answered_are_refused(edit, message):
    request, truth = split(sf_fares(1), "tp")
    with pytest.raises(ServingInputError, match=message):
        expand_for_task(check_points(edit(request, asked_rows(truth))), "tp", interval_s=60)


@pytest.mark.parametrize("task", ["tr", "odtte"])
def test_only_tp_takes_asked_times(task):
    request, truth = split(sf_fares(1), "tp")
    with pytest.raises(ServingInputError, match="only tp takes asked times"):
        expand_for_task(check_points(pd.concat([request, asked_rows(truth)])), task, interval_s=60)


# ------------------------------------------------------------ through the registered pyfunc and the CLI

SF_MODEL = "models:/transfertraj-sanfrancisco/1"


@pytest.fixture(scope="module")
def sf_model(tmp_path_factory):
    """A tiny model (GENERATED training features) registered for San Francisco, served without its OSM
    context (a city config with osm kind none: context missing everywhere, as context dropout trains for)."""
    from tests.transfertraj.registry_fixtures import features, settings_for, train
    from transfertraj import registry
    from transfertraj.core.city_config import OsmSource, load_city_file
    from transfertraj.core.settings import BUNDLED_CITY_DIR

    home = tmp_path_factory.mktemp("sf_home")
    settings, feats = settings_for(home), features(40)
    sf = load_city_file(BUNDLED_CITY_DIR / "sanfrancisco.yaml")
    sf = sf.model_copy(update={"osm": OsmSource(kind="none")})
    registry.log_and_register(
        settings=settings,
        experiment="tests",
        model_name="transfertraj-sanfrancisco",
        checkpoint=train(home / "ckpt", feats),
        cities=[sf],
        data_versions={"features_version": "generated"},
        context_versions={},
        features=feats,
        features_version="generated",
        run_name="test",
    )
    return settings


def test_the_served_model_answers_at_the_asked_times(sf_model):
    """In process and as `mlflow models serve` parses JSON (null lon/lat) against the signature."""
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    from transfertraj import registry

    model = registry.load(SF_MODEL, sf_model)
    request, truth = split(sf_fares(), "tp")
    rows = pd.concat([request, asked_rows(truth)], ignore_index=True)
    asked = model.predict(rows, params={"task": "tp"})
    want = truth.sort_values(["trip_id", "ts"])
    assert asked["ts"].tolist() == want["ts"].tolist() and asked["point"].tolist() == want["point"].tolist()
    nominal = model.predict(request, params={"task": "tp"})
    assert (nominal.groupby("trip_id")["ts"].diff().dropna() == SF_INTERVAL_S).all()
    moved = np.hypot(asked["pred_lon"] - nominal["pred_lon"], asked["pred_lat"] - nominal["pred_lat"])
    assert (moved > 1e-6).mean() > 0.5  # other times, other answers: the times reach the network

    body = json.dumps({"dataframe_split": rows.to_dict(orient="split", index=False), "params": {"task": "tp"}})
    assert "null" in body or "NaN" in body
    parsed = infer_and_parse_data(json.loads(body), model.metadata.get_input_schema())  # the server's parser
    assert parsed["lon"].isna().sum() == len(truth)
    served = model.predict(parsed, params={"task": "tp"})  # the signature is enforced here
    pd.testing.assert_frame_equal(served, asked, check_dtype=False)


def test_cli_predict_asks_the_times_in_the_csv_and_the_held_out_ones(sf_model, tmp_path, monkeypatch):
    from transfertraj.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fares = sf_fares()
    request, truth = split(fares, "tp")
    pd.concat([request, asked_rows(truth)]).drop(columns="point").to_csv(tmp_path / "asked.csv", index=False)
    assert ",," in (tmp_path / "asked.csv").read_text()  # empty lon, lat: the rows that ask
    fares.to_csv(tmp_path / "complete.csv", index=False)
    base = ["--home", str(sf_model.home), "predict", "--model", SF_MODEL, "--task", "tp"]
    assert main([*base, "--input", str(tmp_path / "asked.csv"), "--output", str(tmp_path / "a.csv")]) == 0
    assert main([*base, "--input", str(tmp_path / "complete.csv"), "--output", str(tmp_path / "h.csv"),
                 "--holdout", "--geojson"]) == 0  # fmt: skip
    want = truth.sort_values(["trip_id", "ts"])["ts"].tolist()
    by_csv, held = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "h.csv")
    assert by_csv["ts"].tolist() == want and held["ts"].tolist() == want  # asked when driven, not 60 s steps
    np.testing.assert_allclose(held[["pred_lon", "pred_lat"]], by_csv[["pred_lon", "pred_lat"]], rtol=0, atol=1e-9)
    assert np.isfinite(held["error_m"]).all()
    geo = json.loads((tmp_path / "h.geojson").read_text())
    coords = [c for f in geo["features"] for c in np.ravel(f["geometry"]["coordinates"])]
    assert np.isfinite(coords).all()  # the asking rows are not drawn as points

    bad = pd.concat([request, asked_rows(truth).iloc[:2]]).drop(columns="point")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert main([*base, "--input", str(tmp_path / "bad.csv"), "--output", str(tmp_path / "b.csv")]) == 1
