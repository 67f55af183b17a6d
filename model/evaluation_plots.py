"""The evaluation suite's plots (matplotlib, PNG) and the expert-routing table behind one of them.

    from transfertraj.model.evaluation_plots import draw_all
    routing, pngs = draw_all(suite, results, out_dir, settings=settings)   # suite: evaluation_runner.Suite

- eval_cases_<task>.png: predicted vs true trajectories of a few test cases over the city's roads
  (road geometry from the lake's `context_roads` table; plain axes when it is absent).
- eval_tr_vs_mu.png: TR RMSE against mu for every method of the source city.
- eval_routing_<pair>.png: the share of each expert among the top-k choices of tokens in a POI / road
  density bucket, source city against target city (the same context should route to the same experts).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("transfertraj.evaluation")

BUCKETS = ("low", "mid", "high")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


# ----------------------------------------------------------------------------------------- roads


def road_lines(settings, city: str) -> list[np.ndarray]:
    """Road polylines (metric CRS) of a city from the lake's context_roads table; [] when absent."""
    if settings is None:
        return []
    from transfertraj.feature_store.reader import TableNotFound, read_table

    try:
        import shapely

        table, _ = read_table(settings, "context_roads", city=city, columns=["geometry_wkb"])
        geoms = shapely.from_wkb(table.column("geometry_wkb").to_pylist())
        coords, index = shapely.get_coordinates(geoms, return_index=True)
        cuts = np.flatnonzero(np.diff(index)) + 1
        return np.split(coords, cuts)
    except TableNotFound:
        return []
    except Exception as err:  # a plot must not fail the suite: draw on plain axes instead
        log.warning("no road geometry for %s: %s", city, err)
        return []


def plot_cases(
    checkpoint, data, task: str, out: Path, *, roads: list[np.ndarray], n_cases: int, config, device: str
) -> Path:
    """Predicted vs true positions of `n_cases` test trajectories (the longest ones), one panel each."""
    from transfertraj.model.evaluation_protocol import task_rows
    from transfertraj.model.predict import predict

    plt = _plt()
    from matplotlib.collections import LineCollection

    rows = task_rows(data, "test", task, config)
    rows = rows[np.argsort(-data.n_points[rows], kind="stable")][:n_cases]
    preds = predict(checkpoint, data, task, split="test", device=device, max_points=config.max_points)
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 4), squeeze=False)
    for ax, row in zip(axes[0], rows):
        a, b = data.offsets[row], data.offsets[row + 1]
        truth = data.mxy[a:b]
        p = preds[(preds["trip_id"] == data.trip_id[row]) & preds["masked_spatial"]]
        pred = truth[0] + p[["pred_x_m", "pred_y_m"]].to_numpy()
        hidden = np.zeros(b - a, bool)
        hidden[p["point"].to_numpy()] = True
        pad = 300.0
        lo, hi = truth.min(0) - pad, truth.max(0) + pad
        near = [line for line in roads if ((line >= lo) & (line <= hi)).all(axis=1).any()]
        if near:
            ax.add_collection(LineCollection(near, colors="0.8", linewidths=0.6, zorder=0))
        ax.plot(truth[:, 0], truth[:, 1], "-", color="tab:blue", lw=1, label="true path")
        ax.plot(truth[~hidden, 0], truth[~hidden, 1], "o", color="tab:blue", ms=3, label="observed")
        ax.plot(truth[hidden, 0], truth[hidden, 1], "o", mfc="none", color="tab:blue", ms=4, label="hidden (true)")
        ax.plot(pred[:, 0], pred[:, 1], "x", color="tab:red", ms=5, label="predicted")
        err = p.loc[p["scored"], "error_m"]
        ax.set_title(f"{task} {data.trip_id[row][-10:]}: {len(truth)} pts, mean err {err.mean():.0f} m", fontsize=8)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6, loc="best")
    fig.suptitle(
        f"{task}: predicted vs true over {'OSM roads' if roads else 'plain axes (no road geometry)'} (metres, city CRS)",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / f"eval_cases_{task}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_tr_vs_mu(results: pd.DataFrame, setting: str, out: Path) -> Path | None:
    plt = _plt()
    r = results[
        (results["setting"] == setting) & results["task"].str.startswith("tr") & (results["metric"] == "rmse_m")
    ]
    if r.empty:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method, g in r.groupby("method", sort=False):
        g = g.assign(mu=g["task"].str[2:].astype(int)).sort_values("mu")
        ax.errorbar(g["mu"], g["mean"], yerr=g["std"], marker="o", capsize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks([4, 8, 16], ["4", "8", "16"])
    ax.set_xlabel("mu (keep every mu-th point)")
    ax.set_ylabel("TR RMSE (m)")
    ax.set_title(f"TR error vs mu, {setting}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "eval_tr_vs_mu.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------- routing


def _density(data) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per point: POI count around it (from the total column), road metres around it (the per-class
    length columns), and whether each is missing."""
    poi = np.expm1(data.poi[:, -1]) if data.poi_dim else np.zeros(len(data.xy))
    poi_missing = data.poi_missing[:, -1] if data.poi_dim else np.ones(len(data.xy), bool)
    n_len = min(8, data.road_dim)
    road = np.expm1(data.road[:, :n_len]).sum(axis=1) if n_len else np.zeros(len(data.xy))
    return poi, poi_missing, road, data.road_missing.copy()


def token_routing(checkpoint, data, rows, *, batch_size: int = 128) -> pd.DataFrame:
    """Top-k expert choices of every point of `rows`, with nothing masked: one row per (point, layer, choice)."""
    import torch

    from transfertraj.model.checkpoint import load_model
    from transfertraj.model.masking import PointMask
    from transfertraj.model.trajectory_data import Collator, TrajectoryDataset

    model, _ = load_model(checkpoint)
    collator = Collator(task="tr4")
    collator.mask_fn = lambda n, rng: PointMask(np.arange(n), np.zeros(n, bool), np.zeros(n, bool))  # a full view
    poi, poi_miss, road, road_miss = _density(data)
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            ds = TrajectoryDataset(data, rows[start : start + batch_size])
            batch, _ = collator([ds[i] for i in range(len(ds))])
            out, _ = model(batch)
            b, pos = np.nonzero(batch["valid"].numpy())  # row-major, the order of the routing tokens
            flat = data.offsets[batch["row"].numpy()[b]] + batch["point_index"].numpy()[b, pos]
            ctx_missing = batch["context_missing"].numpy()[b]
            for layer, route in enumerate(out["routing"]):
                if route is None:
                    continue
                idx = route["indices"].numpy()  # (N, k)
                k = idx.shape[1]
                parts.append(
                    pd.DataFrame(
                        {
                            "layer": layer,
                            "expert": idx.reshape(-1),
                            "poi": np.repeat(poi[flat], k),
                            "poi_missing": np.repeat(poi_miss[flat] | ctx_missing, k),
                            "road": np.repeat(road[flat], k),
                            "road_missing": np.repeat(road_miss[flat] | ctx_missing, k),
                        }
                    )
                )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _bucket(values: np.ndarray, missing: np.ndarray, edges: np.ndarray) -> np.ndarray:
    b = np.asarray(BUCKETS, dtype=object)[np.searchsorted(edges, values, side="right")]
    return np.where(missing, "missing", b)


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0: same distribution, 1: disjoint)."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def routing_by_density(source: pd.DataFrame, target: pd.DataFrame, n_experts: int) -> tuple[pd.DataFrame, dict]:
    """Expert shares per (layer, context kind, density bucket) for source and target; terciles of the
    source's values define the buckets of both. Returns (JS table, {key: (share_source, share_target)})."""
    rows, shares = [], {}
    for kind in ("poi", "road"):
        ok = ~source[f"{kind}_missing"].to_numpy()
        edges = np.quantile(source.loc[ok, kind], [1 / 3, 2 / 3]) if ok.any() else np.array([np.inf, np.inf])
        sb = _bucket(source[kind].to_numpy(), source[f"{kind}_missing"].to_numpy(), edges)
        tb = _bucket(target[kind].to_numpy(), target[f"{kind}_missing"].to_numpy(), edges)
        for layer in sorted(source["layer"].unique()):
            for bucket in BUCKETS + ("missing",):
                s = source["expert"][(sb == bucket) & (source["layer"] == layer).to_numpy()]
                t = target["expert"][(tb == bucket) & (target["layer"] == layer).to_numpy()]
                if len(s) == 0 and len(t) == 0:
                    continue
                ps = np.bincount(s, minlength=n_experts).astype(float)
                pt = np.bincount(t, minlength=n_experts).astype(float)
                js = _js(ps, pt) if len(s) and len(t) else float("nan")
                shares[(layer, kind, bucket)] = (ps / max(ps.sum(), 1), pt / max(pt.sum(), 1))
                rows.append(
                    {
                        "layer": layer,
                        "kind": kind,
                        "bucket": bucket,
                        "n_source": int(len(s)),
                        "n_target": int(len(t)),
                        "js": js,
                    }
                )
    return pd.DataFrame(rows), shares


def plot_routing(shares: dict, pair: str, labels: tuple[str, str], out: Path, n_experts: int) -> Path:
    plt = _plt()
    keys = sorted(shares, key=lambda k: (k[0], k[1], (BUCKETS + ("missing",)).index(k[2])))
    panels = sorted({(k[0], k[1]) for k in keys})
    cols = BUCKETS + ("missing",)
    fig, axes = plt.subplots(
        len(panels), len(cols), figsize=(3 * len(cols), 2.2 * len(panels)), squeeze=False, sharey=True
    )
    x = np.arange(n_experts)
    for i, (layer, kind) in enumerate(panels):
        for j, bucket in enumerate(cols):
            ax = axes[i][j]
            if (layer, kind, bucket) in shares:
                s, t = shares[(layer, kind, bucket)]
                ax.bar(x - 0.2, s, 0.4, label=labels[0])
                ax.bar(x + 0.2, t, 0.4, label=labels[1])
                js = (
                    f"JS {_js(s, t):.2f}"
                    if s.sum() and t.sum()
                    else f"no {labels[0] if not s.sum() else labels[1]} tokens"
                )
                ax.set_title(f"layer {layer} {kind} {bucket} ({js})", fontsize=7)
            else:
                ax.set_title(f"layer {layer} {kind} {bucket}: no tokens", fontsize=7)
            ax.set_xticks(x)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    axes[0][0].set_ylabel("share of top-k picks", fontsize=7)
    fig.suptitle(f"Expert activation by context density bucket: {pair}", fontsize=9)
    fig.tight_layout()
    path = out / f"eval_routing_{_slug(pair)}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------- all


def draw_all(suite, results: pd.DataFrame, out: Path, *, settings=None) -> tuple[pd.DataFrame | None, list[Path]]:
    """Every plot the suite's runs allow (an evaluation_runner.Suite and its results table); returns
    (routing JS table or None, PNG paths). settings: the lake the road geometry is read from (None: none)."""
    from transfertraj.model.checkpoint import load_checkpoint
    from transfertraj.model.evaluation_protocol import task_rows

    out = Path(out)
    pngs = []
    c = suite.config
    setting, data = suite.plot_inputs["cases"] or (None, None)
    roads = road_lines(settings, c.source_city) if data is not None else []
    for task, ckpt in suite.plot_inputs.get("case_ckpts", {}).items():
        pngs.append(plot_cases(ckpt, data, task, out, roads=roads, n_cases=c.plot_cases, config=c, device=suite.device))
    if setting and (p := plot_tr_vs_mu(results, setting, out)):
        pngs.append(p)
    tables = []
    for pair, ckpt, source, target in suite.plot_inputs["routing"]:
        n_experts = load_checkpoint(ckpt)["model_args"]["n_experts"]
        src = token_routing(ckpt, source, task_rows(source, "test", "tr4", c))
        tgt = token_routing(ckpt, target, task_rows(target, "test", "tr4", c))
        if src.empty or tgt.empty:
            continue
        table, shares = routing_by_density(src, tgt, n_experts)
        labels = (
            tuple(pair.replace(" vs ", "-").split("-")[:2]) if "-" in pair or " vs " in pair else ("source", "target")
        )
        pngs.append(plot_routing(shares, pair, labels, out, n_experts))
        tables.append(table.assign(pair=pair))
    routing = pd.concat(tables, ignore_index=True) if tables else None
    return routing, pngs
