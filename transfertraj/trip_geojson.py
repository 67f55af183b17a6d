"""A prediction as GeoJSON (RFC 7946): the points a model saw, what it answered, and the truth when known.

    fc = feature_collection(request, answers, "tp", truth=truth, model="models:/transfertraj-porto@champion")
    write_geojson(fc, "out.geojson")     # opens in QGIS, geojson.io, kepler.gl, a Leaflet / MapLibre layer

One Feature per point and per path, each with `trip_id` and `kind`:

| kind           | geometry   | what                                                              | other properties        |
|----------------|------------|-------------------------------------------------------------------|-------------------------|
| observed       | Point      | a point the model was given                                        | ts, point               |
| hidden         | Point      | a point the model was not given but must predict (truth known)     | ts, point               |
| predicted      | Point      | the model's answer for a hidden point                              | ts, point, error_m      |
| observed_path  | LineString | the observed points in time order                                  | ts, ts_end              |
| hidden_path    | LineString | the true route through the hidden points (truth known)             | ts, ts_end              |
| predicted_path | LineString | observed and predicted points in trajectory order                  | ts, ts_end, error_m     |

`ts` is Unix seconds (UTC), `error_m` the haversine distance to the truth (a path: the mean over its
predicted points). For odtte the observed points are origin and destination; the answer is a time, so
the destination point carries `travel_time_min` (and `true_travel_time_min`, `error_min` when known)
and no predicted point is drawn. The collection carries the foreign members `task`, `model` and
`summary` (mean error, per trip) so a reader needs nothing else.

Plain `json`, not geopandas or the `geojson` package: the structure is a few nested dicts, serving
installs neither library (`pip install transfertraj[serve]`), and the output must not depend on a
GeoDataFrame's CRS handling (RFC 7946 is WGS-84 lon/lat by definition, which the rows already are).
Coordinates are rounded to 6 decimals (~0.1 m), as RFC 7946 section 11.2 suggests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from transfertraj.holdout import error_column, trip_errors

KINDS = ("observed", "hidden", "predicted", "observed_path", "hidden_path", "predicted_path")
DECIMALS = 6


def _xy(lon, lat) -> list[float]:
    return [round(float(lon), DECIMALS), round(float(lat), DECIMALS)]


def _num(v):
    """JSON-safe number: NaN (no truth) becomes null."""
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else round(f, 3)


def _point(trip_id: str, kind: str, lon, lat, **props) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": _xy(lon, lat)},
        "properties": {"trip_id": trip_id, "kind": kind, **props},
    }


def _line(trip_id: str, kind: str, rows: pd.DataFrame, lon: str = "lon", lat: str = "lat", **props) -> dict | None:
    if len(rows) < 2:
        return None
    return {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [_xy(x, y) for x, y in zip(rows[lon], rows[lat])]},
        "properties": {
            "trip_id": trip_id,
            "kind": kind,
            "ts": int(rows["ts"].iloc[0]),
            "ts_end": int(rows["ts"].iloc[-1]),
            **props,
        },
    }


def _points_of(rows: pd.DataFrame, stride: int = 1) -> pd.DataFrame:
    """Rows sorted by trip and time, with `point`: the index the serving code gives them in the trajectory
    it expands (a plain TR request's i-th point is index i * mu; holdout rows carry theirs already)."""
    df = rows.copy()
    df["trip_id"] = df["trip_id"].astype(str)
    df = df.sort_values(["trip_id", "ts"], kind="stable")
    if "point" not in df.columns:
        df["point"] = df.groupby("trip_id", sort=False).cumcount() * stride
    return df


def _trip_features(trip_id, seen, hidden, answers, task) -> list[dict]:
    feats: list[dict] = []
    if task == "odtte":
        seen = seen.iloc[[0, -1]]  # the model reads the origin and the destination rows only
    for r in seen.itertuples():
        feats.append(_point(trip_id, "observed", r.lon, r.lat, ts=int(r.ts), point=int(r.point)))
    if hidden is not None and task != "odtte":
        for r in hidden.itertuples():
            feats.append(_point(trip_id, "hidden", r.lon, r.lat, ts=int(r.ts), point=int(r.point)))
    if task == "odtte":
        if len(answers):
            a = answers.iloc[0]
            extra = {k: _num(a[k]) for k in ("true_travel_time_min", "error_min") if k in answers.columns}
            feats[-1]["properties"].update(travel_time_min=_num(a["travel_time_min"]), **extra)
        feats.append(_line(trip_id, "observed_path", seen))
        if hidden is not None:
            feats.append(_line(trip_id, "hidden_path", hidden))
        return [f for f in feats if f]
    for r in answers.itertuples():
        err = _num(getattr(r, "error_m", None))
        feats.append(
            _point(trip_id, "predicted", r.pred_lon, r.pred_lat, ts=int(r.ts), point=int(r.point), error_m=err)
        )
    feats.append(_line(trip_id, "observed_path", seen))
    if hidden is not None and task == "tp":
        # the true future continues from the last observed point
        feats.append(_line(trip_id, "hidden_path", pd.concat([seen.iloc[[-1]], hidden])))
    elif hidden is not None:
        feats.append(_line(trip_id, "hidden_path", pd.concat([seen, hidden]).sort_values("point")))
    pred = answers.rename(columns={"pred_lon": "lon", "pred_lat": "lat"})[["point", "ts", "lon", "lat"]]
    path = pd.concat([seen[["point", "ts", "lon", "lat"]], pred]).sort_values("point", kind="stable")
    if task == "tp":
        path = path[path["point"] >= seen["point"].iloc[-1]]  # from the last observed point on
    mean = _num(answers["error_m"].mean()) if "error_m" in answers.columns else None
    feats.append(_line(trip_id, "predicted_path", path, error_m=mean))
    return [f for f in feats if f]


def feature_collection(
    request: pd.DataFrame,
    answers: pd.DataFrame,
    task: str,
    *,
    truth: pd.DataFrame | None = None,
    mu: int = 8,
    model: str | None = None,
) -> dict:
    """The FeatureCollection of one predict call.

    request: the rows the model was given (trip_id, ts, lon, lat[, point]); answers: what it returned
    (transfertraj.serving.answer, scored by transfertraj.holdout.score when the truth is known);
    truth: the held-out rows (transfertraj.holdout.split), None when the input held no truth."""
    seen_all = _points_of(request, mu if task == "tr" else 1)
    hidden_all = _points_of(truth) if truth is not None else None
    ans = answers.copy()
    ans["trip_id"] = ans["trip_id"].astype(str)
    features: list[dict] = []
    for trip_id, seen in seen_all.groupby("trip_id", sort=False):
        hidden = hidden_all[hidden_all["trip_id"] == trip_id] if hidden_all is not None else None
        features += _trip_features(trip_id, seen, hidden, ans[ans["trip_id"] == trip_id], task)
    summary: dict = {"trips": int(seen_all["trip_id"].nunique()), "answers": len(ans)}
    col = error_column(task)
    if col in ans.columns:
        per_trip, mean = trip_errors(ans, task)
        summary[f"mean_{col}"] = _num(mean)
        summary["per_trip"] = [
            {"trip_id": r.trip_id, "n": int(r.n), col: _num(getattr(r, col))} for r in per_trip.itertuples()
        ]
    coords = [f["geometry"]["coordinates"] for f in features if f["geometry"]["type"] == "Point"]
    fc = {"type": "FeatureCollection", "task": task, "model": model, "summary": summary}
    if coords:
        lons, lats = [c[0] for c in coords], [c[1] for c in coords]
        fc["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
    fc["features"] = features
    return fc


def write_geojson(fc: dict, path: str | Path) -> Path:
    """Write the collection (compact: one line per feature keeps diffs and `grep` usable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {k: v for k, v in fc.items() if k != "features"}
    lines = ",\n".join(json.dumps(f, separators=(",", ":")) for f in fc["features"])
    text = json.dumps(head, separators=(",", ":"))[:-1] + ',"features":[\n' + lines + "\n]}\n"
    path.write_text(text)
    return path
