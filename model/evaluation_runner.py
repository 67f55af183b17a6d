"""Runs an evaluation suite: trains, fine-tunes and scores models, fits baselines, and measures every
method against its setting's strongest baseline with paired bootstrap CIs. Writes only checkpoints
(through model.checkpoint, under <out>/work) and results.partial.csv; the report writes the rest.

    from transfertraj.model.evaluation_runner import run_suite, results_table, ratio_table, target_checks
    suite = run_suite(config, data, out_dir, device="auto")    # config: evaluation_protocol.SuiteConfig
    results = results_table(suite)                              # setting, method, task, metric, mean, std
    suite.cleanup()                                             # after plots: the checkpoints under work/

Errors are kept per trajectory (`metrics.trip_sums`: the bootstrap resamples trajectories, not points)
and every figure comes from `model/metrics.py`. Each (model, seed) trains once per run (`Trainer`
caches), so a setting's variants share their pretrained model as the protocol says.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from transfertraj.core.geo import haversine_m
from transfertraj.model.baselines import (
    OdRegressor,
    od_minutes,
    tp_constant_velocity,
    tp_last_known,
    tr_linear_interpolation,
)
from transfertraj.model.bootstrap import paired_ratio_ci, verdict
from transfertraj.model.coordinates import MetricToLonLat
from transfertraj.model.evaluation_protocol import (
    ABLATIONS,
    BASELINE_FAMILY,
    IN_DOMAIN_TARGETS,
    ROAD_PATH_BASELINE,
    TRANSFERS,
    ZERO_SHOT_TARGET,
    SuiteConfig,
    in_domain_setting,
    task_rows,
)
from transfertraj.model.metrics import sums_metrics, trip_sums
from transfertraj.model.road_paths import tr_road_path_interpolation
from transfertraj.model.trajectory_data import TrajectoryData, chronological_split

log = logging.getLogger("transfertraj.evaluation")

# ----------------------------------------------------------------------------------------- errors


def _converter(data: TrajectoryData, city: str) -> MetricToLonLat:
    cache = data.__dict__.setdefault("_eval_converters", {})  # not a field: stays out of checkpoints and copies
    if city not in cache:  # the same fit as transfertraj.model.predict.predict: every point of the city in `data`
        sel = np.repeat(data.city == city, data.n_points)
        cache[city] = MetricToLonLat.fit(data.mxy[sel], data.lonlat[sel])
    return cache[city]


def _distance_error(data: TrajectoryData, rows, points, pred_mxy) -> np.ndarray:
    """Haversine metres between predicted metric positions (through the city's inverse map) and the truth."""
    rows, points = np.asarray(rows, np.int64), np.asarray(points, np.int64)
    flat = data.offsets[rows] + points
    pred_ll = np.zeros((len(rows), 2))
    for c in np.unique(data.city[rows]):
        sel = data.city[rows] == c
        pred_ll[sel] = _converter(data, c)(np.asarray(pred_mxy)[sel])
    true_ll = data.lonlat[flat]
    return haversine_m(pred_ll[:, 0], pred_ll[:, 1], true_ll[:, 0], true_ll[:, 1])


LINEAR_TR = (("lin-interp (time)", "time"), ("lin-interp (index)", "index"))  # TR baselines: (method, by)


def tp_baseline_frames(data: TrajectoryData, rows) -> dict[str, pd.DataFrame]:
    """{method: per-trip frame} of the TP baselines (last known point, constant velocity) on `rows`."""
    last = data.n_points[rows] - 1
    return {
        name: trip_sums(data.trip_id[rows], _distance_error(data, rows, last, fn(data, rows)))
        for name, fn in (("LKP", tp_last_known), ("CV", tp_constant_velocity))
    }


def tr_baseline_frames(data: TrajectoryData, rows, mu: int, *, road_graphs=None) -> dict[str, pd.DataFrame]:
    """{method: per-trip frame} of the TR(mu) baselines on `rows`: linear interpolation by time and by
    index, and with `road_graphs` ({city: model.road_paths.RoadGraph}) the road-path interpolation, whose
    frame carries the share of hidden points placed on a road path in `attrs["on_road_share"]`."""
    preds = {name: tr_linear_interpolation(data, rows, mu=mu, by=by) for name, by in LINEAR_TR}
    if road_graphs:
        preds[ROAD_PATH_BASELINE] = tr_road_path_interpolation(data, rows, mu=mu, graphs=road_graphs)
    out = {}
    for name, p in preds.items():
        err = _distance_error(data, p["row"], p["point"], p[["pred_mx", "pred_my"]].to_numpy())
        out[name] = trip_sums(data.trip_id[p["row"].to_numpy(np.int64)], err)
        if "on_road" in p:
            out[name].attrs["on_road_share"] = float(p["on_road"].mean()) if len(p) else float("nan")
    return out


def baseline_frames(
    data: TrajectoryData, split: str, config: SuiteConfig, tasks
) -> dict[tuple[str, str], pd.DataFrame]:
    """{(method, task): per-trip frame} for every baseline of the tasks, fitted on the train split."""
    out = {}
    if "tp" in tasks:
        for name, frame in tp_baseline_frames(data, task_rows(data, split, "tp", config)).items():
            out[(name, "tp")] = frame
    for task in (t for t in tasks if t.startswith("tr")):
        for name, frame in tr_baseline_frames(data, task_rows(data, split, task, config), int(task[2:])).items():
            out[(name, task)] = frame
    if "od" in tasks:
        train = task_rows(data, "train", "od", config)
        rows = task_rows(data, split, "od", config)
        truth = od_minutes(data, rows)
        for name, kind in (("OD-LR distance", "distance"), ("OD-LR", "linear"), ("OD-GB", "gbrt")):
            pred = OdRegressor(kind).fit(data, train).predict(data, rows)
            out[(name, "od")] = trip_sums(data.trip_id[rows], pred - truth, true_minutes=truth)
    return out


def model_frame(
    checkpoint, data: TrajectoryData, task: str, config: SuiteConfig, device: str, split: str = "test"
) -> pd.DataFrame:
    """Per-trip frame of a checkpoint on a split ("all": every row; TP only on trajectories with >=
    tp_min_points)."""
    from transfertraj.model.predict import predict

    preds = predict(
        checkpoint, data, task, split=None if split == "all" else split, device=device, max_points=config.max_points
    )
    s = preds[preds["scored"]]
    keep = set(data.trip_id[task_rows(data, split, task, config)].tolist())
    s = s[s["trip_id"].isin(keep)]
    if task == "od":
        return trip_sums(s["trip_id"], s["pred_minutes"] - s["true_minutes"], true_minutes=s["true_minutes"])
    return trip_sums(s["trip_id"], s["error_m"])


# ----------------------------------------------------------------------------------------- training


class Trainer:
    """Pretrains / fine-tunes with the suite's settings; each (key, seed) trains once per suite run."""

    def __init__(self, config: SuiteConfig, work: Path, device: str):
        self.config, self.work, self.device = config, work, device
        self.cache: dict = {}

    def _common(self, seed: int, epochs: int) -> dict:
        c = self.config
        return dict(
            epochs=epochs,
            batch_size=c.batch_size,
            lr=c.lr,
            patience=c.patience,
            seed=seed,
            device=self.device,
            progress=False,
            max_points=c.max_points,
        )

    def pretrained(self, key: str, data: TrajectoryData, seed: int, model_over: dict | None = None) -> Path:
        from transfertraj.model.train import pretrain

        k = ("pt", key, seed)
        if k not in self.cache:
            t0 = time.perf_counter()
            out = self.work / f"seed{seed}" / key / "pretrain"
            self.cache[k] = pretrain(
                data,
                data.data_version,
                out,
                **{**self.config.model, **(model_over or {})},
                **self._common(seed, self.config.pretrain_epochs),
            )
            log.info("pretrained %s seed %d in %.0f s", key, seed, time.perf_counter() - t0)
        return self.cache[k]

    def scratch(self, key: str, data: TrajectoryData, seed: int, model_over: dict | None = None) -> dict:
        """A randomly initialised model as a checkpoint dict (the start of "wo pt")."""
        import torch

        from transfertraj.model.checkpoint import new_state
        from transfertraj.model.transfertraj import ModelArgs, TransferTraj

        k = ("scratch", key, seed)
        if k not in self.cache:
            torch.manual_seed(seed)
            args = ModelArgs(
                **{**self.config.model, **(model_over or {})}, poi_dim=data.poi_dim, road_dim=data.road_dim
            )
            model = TransferTraj(args=args)
            self.cache[k] = new_state(model, data.describe(), {"task": "none"}, model=model.state_dict())
        return self.cache[k]

    def finetuned(
        self, key: str, start, task: str, data: TrajectoryData, seed: int, *, n_shot: int | None = None
    ) -> Path:
        from transfertraj.model.train import finetune

        k = ("ft", key, task, seed, n_shot)
        if k not in self.cache:
            t0 = time.perf_counter()
            out = self.work / f"seed{seed}" / key / f"finetune_{task}"
            self.cache[k] = finetune(
                start,
                task,
                data,
                data_version=data.data_version,
                out_dir=out,
                n_shot=n_shot,
                **self._common(seed, self.config.finetune_epochs),
            )
            log.info("fine-tuned %s %s seed %d in %.0f s", key, task, seed, time.perf_counter() - t0)
        return self.cache[k]


# ----------------------------------------------------------------------------------------- the suite


@dataclass
class Record:
    setting: str
    method: str
    task: str
    seed: int | None  # None: deterministic (baselines)
    frame: pd.DataFrame
    n_shot: int | None = None


class Suite:
    def __init__(self, config: SuiteConfig, data: TrajectoryData, out_dir: Path, *, device: str = "auto"):
        self.config, self.data, self.out = config, data, Path(out_dir)
        self.trainer = Trainer(config, self.out / "work", device)
        self.device = device
        self.records: list[Record] = []
        self.reference: dict[tuple[str, str], str] = {}  # (setting, task) -> strongest baseline on val
        self.notes: list[str] = []
        self.plot_inputs: dict = {"routing": [], "cases": None}
        self.started = time.perf_counter()

    def cleanup(self) -> None:
        """Remove the run's checkpoints and partial results (once plots and tables are written)."""
        shutil.rmtree(self.out / "work", ignore_errors=True)
        (self.out / "results.partial.csv").unlink(missing_ok=True)

    def checkpoint_results(self) -> None:
        """Write what is measured so far (results.partial.csv): a long run that dies keeps its figures."""
        if self.records:
            results_table(self).to_csv(self.out / "results.partial.csv", index=False)

    # -- pieces

    def add_baselines(self, setting: str, data: TrajectoryData, tasks) -> None:
        for (method, task), frame in baseline_frames(data, "test", self.config, tasks).items():
            self.records.append(Record(setting, method, task, None, frame))
        val = baseline_frames(data, "val", self.config, tasks)
        for task in tasks:
            family = BASELINE_FAMILY[task[:2]]
            metric = "sae" if task == "od" else "sse"  # OD is judged on MAE, TP/TR on RMSE
            scores = {
                m: val[(m, task)][metric].sum() / max(val[(m, task)]["n"].sum(), 1) for m in family if (m, task) in val
            }
            if scores:
                self.reference[(setting, task)] = min(scores, key=scores.get)

    def add_model(
        self, setting: str, method: str, task: str, seed: int, checkpoint, data: TrajectoryData, n_shot=None
    ) -> None:
        frame = model_frame(checkpoint, data, task, self.config, self.device)
        self.records.append(Record(setting, method, task, seed, frame, n_shot))

    def _few_shot_n(self, data: TrajectoryData) -> int:
        return int(min(self.config.few_shot_n, len(chronological_split(data)[0])))

    # -- experiments

    def in_domain(self, data: TrajectoryData) -> None:
        c = self.config
        setting = in_domain_setting(c)
        self.add_baselines(setting, data, c.tasks)
        for seed in c.seeds:
            if "wo-ft" in c.variants or "full" in c.variants or c.ablations:
                pt = self.trainer.pretrained("source", data, seed)
            for task in c.tasks:
                if "wo-ft" in c.variants:
                    self.add_model(setting, "wo-ft", task, seed, pt, data)
                if "full" in c.variants:
                    ft = self.trainer.finetuned("source", pt, task, data, seed)
                    self.add_model(setting, "full", task, seed, ft, data)
                    if seed == c.seeds[0] and task in ("tp", "tr8"):
                        self.plot_inputs.setdefault("case_ckpts", {})[task] = ft
                if "wo-pt" in c.variants:
                    scratch = self.trainer.scratch("source-scratch", data, seed)
                    ft = self.trainer.finetuned("source-scratch", scratch, task, data, seed)
                    self.add_model(setting, "wo-pt", task, seed, ft, data)
            for name in c.ablations:
                apt = self.trainer.pretrained(f"source-{name}", data, seed, ABLATIONS[name])
                for task in c.tasks:
                    ft = self.trainer.finetuned(f"source-{name}", apt, task, data, seed)
                    self.add_model(setting, name, task, seed, ft, data)
        self.plot_inputs["cases"] = (setting, data)

    def transfer(
        self, setting: str, source: TrajectoryData, target: TrajectoryData, *, key: str, target_key: str, wo_trie: bool
    ) -> None:
        """Zero-shot (source model on target test), few-shot (N target trajectories), in-domain target."""
        c = self.config
        tasks = [t for t in c.transfer_tasks if len(task_rows(target, "test", t, c))]
        self.add_baselines(setting, target, tasks)
        n = self._few_shot_n(target)
        self.notes.append(f"{setting}: source {len(source)} trajectories, target {len(target)} (few-shot N = {n})")
        models = [("", {})] + ([("wo-TRIE", ABLATIONS["wo-TRIE"])] if wo_trie else [])
        for seed in c.seeds:
            for label, over in models:
                skey = key + (f"-{label}" if label else "")
                pt = self.trainer.pretrained(skey, source, seed, over)
                for task in tasks:
                    src_ft = self.trainer.finetuned(skey, pt, task, source, seed)
                    suffix = f" {label}" if label else ""
                    self.add_model(setting, "zero-shot" + suffix, task, seed, src_ft, target)
                    few = self.trainer.finetuned(f"{skey}-to-{setting}", src_ft, task, target, seed, n_shot=n)
                    self.add_model(setting, "few-shot" + suffix, task, seed, few, target, n_shot=n)
                if not label and seed == c.seeds[0]:
                    self.plot_inputs["routing"].append((setting, pt, source, target))
            tpt = self.trainer.pretrained(
                target_key, target, seed
            )  # the same key trains once (west is east-west's source)
            for task in tasks:
                ft = self.trainer.finetuned(target_key, tpt, task, target, seed)
                self.add_model(setting, "in-domain", task, seed, ft, target)

    def run(self) -> None:
        from transfertraj.model.transfer_data import city_data, covered_categories, restrict_poi, split_meridian

        c = self.config
        cities = set(self.data.city.tolist())
        porto = city_data(self.data, c.source_city)
        self.in_domain(porto)
        self.checkpoint_results()
        for name in c.transfers:
            self.checkpoint_results()
            if name in ("west-east", "east-west"):
                west, east, meridian = split_meridian(porto)
                self.notes.append(
                    f"{name}: meridian {meridian:.4f} (median origin longitude), west {len(west)} / east {len(east)} trips"
                )
                src, tgt = (west, east) if name == "west-east" else (east, west)
                self.transfer(name, src, tgt, key=name.split("-")[0], target_key=name.split("-")[1], wo_trie=True)
            elif name.startswith(f"{c.source_city}-"):
                city = name.split("-")[1]
                if city not in cities:
                    self.notes.append(f"{name}: skipped, no {city} trajectories in the features table")
                    continue
                target = city_data(self.data, city)
                source = porto
                if name.endswith("-shared"):
                    shared = covered_categories(porto) & covered_categories(target)
                    self.notes.append(
                        f"{name}: POI restricted to {int(shared[:-1].sum())} of {porto.poi_dim - 1} categories both sources cover"
                    )
                    source, target = restrict_poi(porto, shared), restrict_poi(target, shared)
                self.transfer(
                    name,
                    source,
                    target,
                    key="source" if source is porto else f"source-{name}",
                    target_key=f"target-{name}",
                    wo_trie=False,
                )
            else:
                raise ValueError(f"unknown transfer {name!r}; known: {', '.join(TRANSFERS)}")
        if self.plot_inputs["routing"] == [] and c.variants and len(cities) > 1:
            other = sorted(cities - {c.source_city})[0]  # quick suite: source city against another city
            pt = self.trainer.pretrained("source", porto, c.seeds[0])
            self.plot_inputs["routing"].append((f"{c.source_city} vs {other}", pt, porto, city_data(self.data, other)))


# ----------------------------------------------------------------------------------------- tables


def _merge_seeds(records: list[Record]) -> pd.DataFrame:
    """Per-trip sums averaged over seeds (the bootstrap unit stays the trajectory)."""
    return pd.concat([r.frame for r in records]).groupby("trip_id", sort=True).mean().reset_index()


def results_table(suite: Suite) -> pd.DataFrame:
    """One row per setting, method, task, metric: mean and std over seeds."""
    groups: dict = {}
    for r in suite.records:
        groups.setdefault((r.setting, r.method, r.task), []).append(r)
    rows = []
    for (setting, method, task), recs in groups.items():
        per_seed = [sums_metrics(task, r.frame) for r in recs]
        for metric in per_seed[0]:
            vals = np.array([m[metric] for m in per_seed], dtype=float)
            rows.append(
                {
                    "setting": setting,
                    "method": method,
                    "task": task,
                    "metric": metric,
                    "mean": float(vals.mean()),
                    "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "n_seeds": len(recs) if recs[0].seed is not None else 0,
                    "n_shot": recs[0].n_shot,
                }
            )
    return pd.DataFrame(rows)


def ratio_table(suite: Suite) -> pd.DataFrame:
    """Each model method against its setting's strongest baseline (chosen on val), paired bootstrap CI."""
    c = suite.config
    by_key: dict = {}
    for r in suite.records:
        by_key.setdefault((r.setting, r.method, r.task), []).append(r)
    rows = []
    for (setting, method, task), recs in by_key.items():
        if recs[0].seed is None:
            continue
        ref = suite.reference.get((setting, task))
        if ref is None:
            continue
        rows += ratio_rows(
            setting, method, task, _merge_seeds(recs), ref, _merge_seeds(by_key[(setting, ref, task)]), c.n_boot
        )
    return pd.DataFrame(rows)


def ratio_rows(
    setting, method, task, a: pd.DataFrame, against: str, b: pd.DataFrame, n_boot: int, target=None, *, seed: int = 0
) -> list[dict]:
    """Method a against b on the trajectories both scored: RMSE, MAE (and MAPE for OD) ratios, paired
    bootstrap 95 % CIs (resampling trajectories) and a verdict."""
    m = a.merge(b, on="trip_id", suffixes=("_a", "_b"))
    metrics = [("rmse", "sse"), ("mae", "sae")] + ([("mape", "ape")] if task == "od" else [])
    out = []
    for name, col in metrics:
        kind = "rmse" if name == "rmse" else "mae"
        r, lo, hi = paired_ratio_ci(m[f"{col}_a"], m[f"{col}_b"], m["n_a"], kind=kind, n_boot=n_boot, seed=seed)
        out.append(
            {
                "setting": setting,
                "method": method,
                "task": task,
                "metric": name,
                "against": against,
                "ratio": r,
                "ci_low": lo,
                "ci_high": hi,
                "n_trajectories": len(m),
                "verdict": verdict(lo, hi, target),
            }
        )
    return out


def target_checks(suite: Suite) -> pd.DataFrame:
    """The issue's targets, each as a ratio with a paired bootstrap CI (met / missed / undecided)."""
    c = suite.config
    by_key: dict = {}
    for r in suite.records:
        by_key.setdefault((r.setting, r.method, r.task), []).append(r)

    def get(setting, method, task):
        recs = by_key.get((setting, method, task))
        return _merge_seeds(recs) if recs else None

    checks = []
    home = in_domain_setting(c)
    for task, metric, target in IN_DOMAIN_TARGETS:
        ref = suite.reference.get((home, task))
        a, b = get(home, "full", task), get(home, ref, task) if ref else None
        if a is not None and b is not None:
            row = [x for x in ratio_rows(home, "full", task, a, ref, b, c.n_boot, target) if x["metric"] == metric]
            checks += [{**x, "target": f"<= {target:g}"} for x in row]
    for task in c.transfer_tasks:
        metric = "mae" if task == "od" else "rmse"
        a, b = get("west-east", "zero-shot", task), get("west-east", "in-domain", task)
        if a is not None and b is not None:
            row = [
                x
                for x in ratio_rows("west-east", "zero-shot", task, a, "in-domain", b, c.n_boot, ZERO_SHOT_TARGET)
                if x["metric"] == metric
            ]
            checks += [{**x, "target": f"<= {ZERO_SHOT_TARGET:g}"} for x in row]
        a, b = get("west-east", "zero-shot wo-TRIE", task), get("west-east", "zero-shot", task)
        if a is not None and b is not None:
            row = [
                x
                for x in ratio_rows("west-east", "zero-shot wo-TRIE", task, a, "zero-shot", b, c.n_boot)
                if x["metric"] == metric
            ]
            checks += [{**x, "target": "> 1 (wo-TRIE transfers worse)"} for x in row]
    return pd.DataFrame(checks)


# ----------------------------------------------------------------------------------------- entry point


def run_suite(config: SuiteConfig, data: TrajectoryData, out_dir, *, device: str = "auto") -> Suite:
    """Measure every setting of `config` on `data` (every city of the features table). The checkpoints
    stay under <out_dir>/work for the plots; `suite.cleanup()` removes them."""
    out = Path(out_dir)
    if (out / "work").exists():
        shutil.rmtree(out / "work")  # checkpoints of an earlier run would be resumed, not retrained
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(config, data, out, device=device)
    suite.run()
    return suite
