"""MLflow tracking and registry: one run per training, pyfunc models, the challenger -> champion gate.

    from transfertraj import registry
    model = registry.load("models:/transfertraj-porto@champion")   # a ready pyfunc
    model.predict(points_df, params={"task": "tp"})
    registry.list_models(settings)                                   # names, versions, aliases
    transfertraj models register --checkpoint out/best.pt --name transfertraj-base   # through the gate
    transfertraj models promote transfertraj-porto 7 --reason "..."; transfertraj models rollback transfertraj-porto

Registered models, one per deployable target:
    transfertraj-base      the pretrained model (source cities); the start of every city's fine-tune
    transfertraj-<city>    the base champion fine-tuned few-shot on one onboarded city
Why names rather than one model with tags: an alias (`champion`, `challenger`) is unique per registered
model, and each city needs its own champion judged on its own validation data; a consumer then asks
for `models:/transfertraj-<city>@champion` and nothing else. City names are `[a-z][a-z0-9_]*`, so a
name is never ambiguous.

Gate (no registry stages, they are deprecated): every new version gets the alias `challenger`. The
champion (if any) and the challenger are scored here on one pinned validation set (the features table
at the Delta version the training read, split by transfertraj.gate.VALIDATION_SPLIT); the challenger
takes `champion` only when no task is worse than the champion's by more than that task's tolerance
(the rule and its tolerances: transfertraj.gate). A city model's first version has no champion to
beat: it must beat the zero-shot base model it was fine-tuned from, or the base model's weights are
registered as a version of the city model (tag `source=base-zero-shot`) and take `champion` instead.
The decision, the validation set (`gate.validation_version`, `gate.validation_split`) and both sets of
numbers go to the training run (metrics `gate/...`, tags `gate.*`) and to the model version's tags. Whoever moves `champion` (the gate, or a person with `models promote`
/ `rollback`) is recorded on the version with the champion it replaced, which is what rollback follows;
`challenger` never stays on the champion. Each run names its training data as MLflow dataset inputs
(`features@<version>`, `context_<table>@<version>`: Delta path and version).

Storage is explicit: the tracking/registry store is Settings.mlflow_tracking_uri (SQLite under the
data root by default) and artifacts go to <data root>/mlflow/artifacts/<experiment>, never the
current directory. Models are logged as pyfunc wrapping our own checkpoint (transfertraj.serving), with
pip requirements pinned from this environment (not inferred). A logged model carries everything it
reads: the checkpoint, `serving.json` (the city configs and the Delta versions of the context tables)
and, per city with OSM, `context_<city>.npz` (road lattice + POIs exported from those versions with
delta-rs), so it is served without Spark, Java or the lake. Optionally one fine-tuned checkpoint per
task beside the default (`register --task-checkpoint tp=PATH`, artifacts `checkpoint_<task>` as
`best-<task>.pt`): each task is served and gated with its own.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from transfertraj.core.settings import REPO_ROOT, Settings
from transfertraj.gate import GATE_METRICS, GATE_TASKS, GateDecision, ValidationSet, compare, tolerances

PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")  # models from code

log = logging.getLogger("transfertraj.registry")

BASE_MODEL = "transfertraj-base"
BASE_EXPERIMENT = "transfertraj-pretrain"  # MLflow experiment of the base model's runs
CITY_EXPERIMENT = "transfertraj-onboard"  # ... and of the city models' runs
CHAMPION, CHALLENGER = "champion", "challenger"
ZERO_SHOT_SOURCE = "base-zero-shot"  # `source` tag of a city version that is the base model's weights
# What a served model imports (pyproject's `serve` extra): no pyspark, no delta-spark, no Java.
SERVING_PACKAGES = (
    "mlflow",
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "pyproj",
    "scipy",
    "pydantic",
    "pyyaml",
    "threadpoolctl",
)


def city_model_name(city: str) -> str:
    return f"transfertraj-{city}"


# ----------------------------------------------------------------------------------------- setup


def configure(settings: Settings):
    """Point MLflow at the configured store (creating the SQLite folder) and return a client."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def artifact_root(settings: Settings) -> Path:
    return settings.home / "mlflow" / "artifacts"


def experiment_id(settings: Settings, name: str) -> str:
    """Get or create an experiment whose artifacts live under the data root (never the cwd)."""
    client = configure(settings)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root(settings) / name
    location.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=location.as_uri())


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def pip_requirements(wheel: Path | None = None) -> list[str]:
    """This environment's versions of what the pyfunc imports, pinned (never inferred), and transfertraj
    itself: `wheel` (the code that logged the model, shipped in the model's code/ folder; MLflow installs
    requirements from the model folder, so the relative path resolves there), else its installed version."""
    reqs = []
    for name in SERVING_PACKAGES:
        try:
            version = metadata.version(name).split("+")[0]  # drop local tags like +cu128: not on PyPI
        except metadata.PackageNotFoundError:
            continue
        reqs.append(f"{name}=={version}")
    if wheel is not None:
        reqs.append(f"code/{wheel.name}")
    else:
        reqs.append(f"transfertraj=={metadata.version('transfertraj')}")
    return reqs


_WHEELS: dict[str, Path] = {}
# What pyproject's [tool.setuptools] package-dir maps into the wheel, and the files the build reads.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "transfertraj", "jobs", "model", "feature_store", "config")


def code_wheel(out_dir: Path) -> Path | None:
    """This checkout's transfertraj as a wheel (no dependencies), built once per process, so that a
    registered model installs its own code with `pip install -r requirements.txt` in a fresh
    environment (MLflow's virtualenv/uv env managers, or by hand). None when transfertraj is not
    a source checkout (installed from a wheel: its version pin is enough then)."""
    if not (REPO_ROOT / "pyproject.toml").exists():
        return None
    key = str(REPO_ROOT)
    if key not in _WHEELS or not _WHEELS[key].exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="transfertraj-wheel-") as tmp:  # the build never writes in the checkout
            src = Path(tmp)
            for name in WHEEL_SOURCES:
                if (REPO_ROOT / name).is_dir():
                    shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(REPO_ROOT / name, src / name)
            # --no-build-isolation: setuptools comes from this environment, nothing is downloaded.
            cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out_dir)]
            done = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"building the transfertraj wheel for the model failed:\n{done.stderr[-2000:]}")
        _WHEELS[key] = next(out_dir.glob("transfertraj-*.whl"))
    return _WHEELS[key]


# ----------------------------------------------------------------------------------------- scoring


def _reads_roads(network) -> bool:
    """Whether a network (or the checkpoint at a path) reads the TR road offset (ModelArgs.road_input)."""
    if isinstance(network, (str, Path)):
        from transfertraj.model.checkpoint import load_checkpoint

        return bool(load_checkpoint(network)["model_args"].get("road_input"))
    return bool(network.args.road_input)


def _cities_of(features) -> list[str]:
    """The cities of a features input (TrajectoryData, Arrow table or DataFrame with a `city` column)."""
    import numpy as np

    city = features.city if hasattr(features, "offsets") else features["city"]
    return sorted({str(c) for c in np.unique(np.asarray(city, dtype=object))})


def lake_road_graphs(settings: Settings | None, networks, features) -> dict | None:
    """{city: RoadGraph} of the lake's context_roads for the features' cities when one of the networks
    reads road offsets, else None: the gate scores TR as the model is served, along the roads."""
    if settings is None or not any(_reads_roads(n) for n in networks):
        return None
    from transfertraj.model.road_paths import road_graph

    graphs = {c: road_graph(settings, c)[0] for c in _cities_of(features)}
    return {c: g for c, g in graphs.items() if g is not None} or None


@dataclass(frozen=True)
class ByCity:
    """A gate task's network (or checkpoint) when some cities have their own (serving.task_network):
    `cities` answers those cities' trajectories, `default` the others'."""

    default: object
    cities: dict

    def networks(self) -> list:
        return [self.default, *self.cities.values()]


def routed_by_task(networks: dict, default) -> dict:
    """{gate task: network, or ByCity where a city has its own} of {per-task key: network or checkpoint}
    (serving.split_task_key keys) and the default: what answers each gate task, as the served model routes."""
    from transfertraj.serving import checkpoint_task, split_task_key, task_network

    out = {}
    for task in GATE_TASKS:
        key = checkpoint_task(task)
        own = {city: net for k, net in networks.items() for t, city in [split_task_key(k)] if city and t == key}
        plain = task_network(networks, default, task)
        out[task] = ByCity(plain, own) if own else plain
    return out


def _evaluate_by_city(routed: ByCity, features, task: str, *, data_version, **kwargs) -> dict:
    """evaluate() of a task whose cities are answered by different networks: each city's trajectories by
    its own, the metrics over all of them together (as one network's would be)."""
    import pandas as pd

    from transfertraj.model.predict import predict, scored_metrics
    from transfertraj.model.trajectory_data import as_data
    from transfertraj.model.transfer_data import city_data

    data = as_data(features, data_version)  # the split is per city: a city's rows keep their split
    frames = []
    for city in _cities_of(data):
        network = routed.cities.get(city, routed.default)
        try:
            frames.append(predict(network, city_data(data, city), task, data_version=data_version, **kwargs))
        except ValueError as err:  # this city has no trajectory of the split the task can use
            log.info("validation %s, %s: %s", task, city, err)
    if not frames:
        raise ValueError(f"no trajectory of the split qualifies for {task}")
    return scored_metrics(pd.concat(frames, ignore_index=True), task)


def validation_metrics(
    model_or_checkpoint, features, data_version, settings: Settings | None = None
) -> dict[str, float]:
    """The gate's metrics on the validation split (the same call scores champion and challenger).

    `model_or_checkpoint`: one network or checkpoint for every task, or {gate task: network or
    checkpoint} (served_networks, task_checkpoint_map): a model with per-task checkpoints is scored on
    each task with the one that answers it, as it is served. With `settings`, a network that reads road
    offsets gets them along the lake's roads (lake_road_graphs), as the served model does."""
    from transfertraj.model.predict import evaluate

    models = (
        model_or_checkpoint if isinstance(model_or_checkpoint, dict) else dict.fromkeys(GATE_TASKS, model_or_checkpoint)
    )
    every = [n for m in models.values() for n in (m.networks() if isinstance(m, ByCity) else [m])]
    graphs = lake_road_graphs(settings, every, features)
    out: dict[str, float] = {}
    for task in GATE_TASKS:
        model = models[task]
        kwargs = {"data_version": data_version, "split": "val", "device": "cpu", "road_graphs": graphs}
        try:
            if isinstance(model, ByCity):
                m = _evaluate_by_city(model, features, task, **kwargs)
            else:
                m = evaluate(model, features, task, **kwargs)
        except ValueError as err:  # no trajectory of the split qualifies for the task
            log.warning("validation %s: %s", task, err)
            m = {}
        key = "mae_min" if task == "od" else "mae_m"
        out[f"{task}_{key}"] = float(m.get(key, math.nan))
        out[f"{task}_rmse_{key.split('_')[1]}"] = float(m.get(key.replace("mae", "rmse"), math.nan))
    return out


# ----------------------------------------------------------------------------------------- logging


def export_city_context(settings: Settings, city: str, versions: dict, out_dir: Path) -> Path:
    """The city's context tables at `versions` (delta-rs, no JVM) -> context_<city>.npz in out_dir."""
    from transfertraj.feature_store.reader import read_table
    from transfertraj.features.context import GRID_COLUMNS, POI_COLUMNS, city_context, save_city_context

    missing = {"context_pois", "context_grid"} - set(versions)
    if missing:
        raise ValueError(
            f"{city} has OSM context but no version of {sorted(missing)} was given: the model could not "
            "build its features as the training features were built"
        )
    grid, _ = read_table(
        settings,
        "context_grid",
        city=city,
        version=int(versions["context_grid"]),
        columns=[*GRID_COLUMNS, "taxonomy_version"],
    )
    pois, _ = read_table(
        settings, "context_pois", city=city, version=int(versions["context_pois"]), columns=list(POI_COLUMNS)
    )
    return save_city_context(city_context(pois, grid), out_dir / f"context_{city}.npz")


def serving_artifacts(
    cities: list, settings: Settings, context_versions: dict[str, dict], out_dir: Path, *, road_graphs: bool = False
) -> dict:
    """artifact name -> local file: serving.json (what the pyfunc needs to build features like the
    pipeline: city configs, context versions) and one context NPZ per city with OSM. road_graphs (a model
    with road_input): also each OSM city's drive graph (model.road_paths.RoadGraph.save) of context_roads at
    the pinned version (the latest where none is pinned), from which serving computes the TR road offsets."""
    import yaml

    from transfertraj.core.city_config import city_to_yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts, spec_cities = {}, {}
    for c in cities:
        versions = context_versions.get(c.name, {})
        name = None
        if c.has_osm:
            name = f"context_{c.name}"
            artifacts[name] = str(export_city_context(settings, c.name, versions, out_dir))
        spec_cities[c.name] = {
            "config": yaml.safe_load(city_to_yaml(c)),
            "context_versions": versions,
            "context_artifact": name,
        }
        if road_graphs and c.has_osm:
            from transfertraj.model.road_paths import road_graph

            graph, read = road_graph(settings, c.name, versions.get("context_roads"))
            if graph is not None:
                artifacts[f"roads_{c.name}"] = str(graph.save(out_dir / f"roads_{c.name}.npz"))
                spec_cities[c.name].update(roads_artifact=f"roads_{c.name}", roads_version=read)
    spec_path = out_dir / "serving.json"
    spec_path.write_text(json.dumps({"default_city": cities[0].name, "cities": spec_cities}, indent=1, default=str))
    return {"serving": str(spec_path), **artifacts}


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    return ModelSignature(
        # trip ids are strings whatever they look like (real Porto TRIP_IDs are 19-digit numbers, which
        # pandas and JSON read as integers): any type is accepted here and made a string by check_points
        inputs=Schema(
            [ColSpec(AnyType(), "trip_id"), ColSpec("long", "ts"), ColSpec("double", "lon"), ColSpec("double", "lat")]
        ),
        params=ParamSchema(
            [ParamSpec("task", "string", "tp"), ParamSpec("mu", "long", 8), ParamSpec("city", "string", "")]
        ),
    )


def delta_dataset(settings: Settings, table: str, version):
    """An MLflow dataset naming one lake table at one Delta version (`features@12`, the registry's own
    naming), so the run's Datasets panel shows which data trained the model without reading it again.
    The version is in the name as well as the source because MLflow's Delta source drops a version 0."""
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    from transfertraj.feature_store.tables import table_path

    numbered = str(version).lstrip("-").isdigit()  # tests train on generated data that has no Delta version
    source = DeltaDatasetSource(
        path=table_path(settings, table), delta_table_version=int(version) if numbered else None
    )
    return MetaDataset(source=source, name=f"{table}@{version}")


def log_lineage(settings: Settings, features_version, context_versions: dict[str, dict]) -> None:
    """Link the active run to its training data as MLflow inputs: the features table (context `training`)
    and each city's context tables (context `context`), the versions also kept as `data.*` tags."""
    import mlflow

    mlflow.log_input(delta_dataset(settings, "features", features_version), context="training")
    for city, versions in context_versions.items():
        for table, version in sorted(versions.items()):
            mlflow.log_input(delta_dataset(settings, table, version), context="context", tags={"city": city})


def _flat(prefix: str, d: dict) -> dict:
    return {f"{prefix}{k}": (json.dumps(v) if isinstance(v, (list, tuple, dict)) else v) for k, v in d.items()}


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    metrics: dict
    decision: GateDecision
    champion: str | None = None  # the version that holds `champion` after the gate (None: no champion)


def task_checkpoint_map(checkpoint: Path, task_checkpoints: dict | None) -> dict:
    """{gate task: the checkpoint that answers it (ByCity where a city has its own)}: routed_by_task."""
    return routed_by_task({k: Path(p) for k, p in (task_checkpoints or {}).items()}, Path(checkpoint))


def check_task_checkpoints(task_checkpoints: dict | None) -> dict[str, Path]:
    """Validate {task key: path} for a model's per-task checkpoints (serving.split_task_key keys: tp, tr, od,
    or tr@CITY for one city's): known tasks, existing files."""
    from transfertraj.serving import split_task_key

    out = {}
    for task, path in (task_checkpoints or {}).items():
        split_task_key(task)  # LookupError naming the keys it takes
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"no checkpoint at {path} (the {task} checkpoint: a best.pt of `transfertraj finetune --task`)"
            )
        out[task] = Path(path)
    return out


def _log_pyfunc(
    settings: Settings,
    model_name: str,
    checkpoint: Path,
    cities: list,
    context_versions: dict,
    task_checkpoints: dict[str, Path] | None = None,
) -> str:
    """Log the checkpoint as the pyfunc (with what it serves from, and the per-task checkpoints as
    `checkpoint_<task>`) in the active run, registered under `model_name`; returns the version, taken
    from log_model's result (never "the highest number")."""
    import mlflow

    # Staged in a scratch folder: the checkpoint is logged as best.pt whatever its file is called (checkpoint_of
    # finds it by that name; the committed weights are transfertraj-base.pt), and nothing is written beside
    # the given file (a checkpoint in the repository stays untouched).
    with tempfile.TemporaryDirectory(prefix="transfertraj-register-") as tmp:
        staged = Path(tmp) / "best.pt"
        shutil.copyfile(checkpoint, staged)
        per_task = {}
        for task, path in (task_checkpoints or {}).items():  # best-<task>.pt: checkpoint_of finds best.pt only
            per_task[f"checkpoint_{task}"] = str(Path(tmp) / f"best-{task}.pt")
            shutil.copyfile(path, per_task[f"checkpoint_{task}"])
        from transfertraj.model.checkpoint import load_checkpoint

        # the drive graph rides along when any network that answers reads the road offset (TR's, usually)
        road_input = any(
            bool(load_checkpoint(p)["model_args"].get("road_input"))
            for p in [checkpoint, *(task_checkpoints or {}).values()]
        )
        artifacts = serving_artifacts(cities, settings, context_versions, Path(tmp) / "serving", road_graphs=road_input)
        wheel = code_wheel(Path(tmp) / "serving" / "wheel")
        with warnings.catch_warnings():
            # We pass an explicit signature; the served answers are tested in tests/transfertraj/test_serve.py.
            warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_MODEL_FILE),  # models from code: nothing pickled
                artifacts={"checkpoint": str(staged), **per_task, **artifacts},
                pip_requirements=pip_requirements(wheel),
                code_paths=[str(wheel)] if wheel else None,  # -> <model>/code/<wheel>
                signature=signature(),
                registered_model_name=model_name,
            )
    return str(info.registered_model_version)


def _lineage(data_versions: dict, context_versions: dict[str, dict]) -> dict[str, str]:
    lineage = {f"data.{k}": str(v) for k, v in data_versions.items()}
    for city, versions in context_versions.items():
        lineage.update({f"data.{city}.{t}_version": str(v) for t, v in versions.items()})
    return lineage


def log_and_register(
    *,
    settings: Settings,
    experiment: str,
    model_name: str,
    checkpoint: Path,
    cities: list,
    data_versions: dict,
    context_versions: dict[str, dict],
    features,
    features_version,
    run_name: str,
    extra_metrics: dict | None = None,
    extra_tags: dict | None = None,
    zero_shot_base: str | None = None,
    task_checkpoints: dict[str, Path] | None = None,
) -> Registered:
    """One MLflow run for a finished training: params, metrics by epoch, validation metrics, lineage,
    the loss plot, the pyfunc model registered under `model_name`; then the gate, on `features` (read at
    `features_version`) as the pinned validation set.

    zero_shot_base: for a city model, the base model version it was fine-tuned from
    (`models:/transfertraj-base/3`). While the city model has no champion, the new version must beat that
    model on the city's validation set; if it does not, the base weights become the city's champion
    (register_zero_shot) and the new version keeps the alias `challenger` only.

    task_checkpoints: {task: best.pt} of serving.TASK_CHECKPOINTS, logged beside `checkpoint`; each
    answers (and is gated on) its task, the default checkpoint the others."""
    import mlflow

    from transfertraj.model.checkpoint import load_checkpoint
    from transfertraj.model.loss_curves import plot_checkpoint

    client = configure(settings)
    exp_id = experiment_id(settings, experiment)
    checkpoint = Path(checkpoint)
    with_history = checkpoint.parent / "last.pt" if (checkpoint.parent / "last.pt").exists() else checkpoint
    state = load_checkpoint(with_history)
    validation = ValidationSet(features, features_version, tuple(c.name for c in cities))
    task_checkpoints = check_task_checkpoints(task_checkpoints)
    metrics = validation_metrics(
        task_checkpoint_map(checkpoint, task_checkpoints), features, features_version, settings=settings
    )
    lineage = _lineage(data_versions, context_versions)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        mlflow.log_params({**_flat("train.", state["train_config"]), **_flat("model.", state["model_args"])})
        for h in state["history"]:
            mlflow.log_metrics(
                {"train/loss": h["train_loss"], "val/loss": h["val_loss"], "train/epoch_seconds": h["seconds"]},
                step=int(h["epoch"]),
            )
        mlflow.log_metrics({f"val/{k}": v for k, v in metrics.items() if not math.isnan(v)})
        if extra_metrics:
            mlflow.log_metrics({k: v for k, v in extra_metrics.items() if not math.isnan(v)})
        mlflow.set_tags(
            {
                "mlflow.source.git.commit": git_commit() or "unknown",
                "cities": ",".join(c.name for c in cities),
                "data.features_version": str(features_version),
                "data.taxonomy_version": str(state["data"].get("taxonomy_version")),
                **lineage,
                **(extra_tags or {}),
                **(
                    {"task_checkpoints": json.dumps({t: str(p.resolve()) for t, p in task_checkpoints.items()})}
                    if task_checkpoints
                    else {}
                ),
            }
        )
        log_lineage(settings, features_version, context_versions)
        with tempfile.TemporaryDirectory(prefix="transfertraj-plot-") as tmp:  # never beside the checkpoint
            mlflow.log_artifact(
                str(plot_checkpoint(with_history, Path(tmp) / "loss_curves.png")), artifact_path="plots"
            )
        version = _log_pyfunc(settings, model_name, checkpoint, cities, context_versions, task_checkpoints)
        version_tags = {
            "features_version": str(features_version),
            **{k.removeprefix("data."): v for k, v in lineage.items()},
        }
        for k, v in version_tags.items():
            client.set_model_version_tag(model_name, version, k, v)
        client.set_model_version_tag(model_name, version, "run_id", run.info.run_id)
        decision = promote_if_better(settings, model_name, version, validation, metrics, baseline=zero_shot_base)
        mlflow.log_metrics({f"gate/challenger_{k}": v for k, v in decision.challenger.items() if not math.isnan(v)})
        if decision.champion:
            mlflow.log_metrics({f"gate/champion_{k}": v for k, v in decision.champion.items() if not math.isnan(v)})
        mlflow.set_tags({**_decision_tags(decision, validation), "registered_model": f"{model_name}/{version}"})
    champion = version if decision.promoted else _champion_version(client, model_name)
    if zero_shot_base and not decision.promoted and champion is None:
        champion = register_zero_shot(
            settings,
            model_name=model_name,
            base_uri=zero_shot_base,
            cities=cities,
            data_versions=data_versions,
            context_versions=context_versions,
            validation=validation,
            base_metrics=decision.champion,
            decision=decision,
            rejected=version,
        )
    for line in decision.lines():
        log.info("%s v%s %s", model_name, version, line)
    return Registered(model_name, version, run.info.run_id, metrics, decision, champion)


def _decision_tags(decision: GateDecision, validation: ValidationSet) -> dict[str, str]:
    """The gate's decision as MLflow tags (the same on the run and the model version)."""
    return {
        "gate.decision": "promoted" if decision.promoted else "rejected",
        "gate.reason": decision.reason,
        "gate.against": decision.against,
        "gate.tolerance": json.dumps(decision.tolerance, sort_keys=True),
        "gate.ratios": json.dumps({k: round(v, 4) for k, v in decision.ratios.items()}, sort_keys=True),
        **validation.tags(),
    }


def register_zero_shot(
    settings: Settings,
    *,
    model_name: str,
    base_uri: str,
    cities: list,
    data_versions: dict,
    context_versions: dict[str, dict],
    validation: ValidationSet,
    base_metrics: dict,
    decision: GateDecision,
    rejected: str,
) -> str:
    """The base model's weights as a version of the city model, aliased `champion`: what the city is
    served while no fine-tune beats zero-shot. A run of its own (tag source=base-zero-shot, the zero-shot
    metrics as `val/...`), the city's serving artifacts, the gate's numbers; returns the version."""
    import tempfile

    import mlflow

    client = configure(settings)
    base_name, base_version = resolve_version(client, base_uri)
    reason = f"zero-shot {base_name} v{base_version} kept: fine-tuned v{rejected} is {decision.reason.split(':', 1)[0]}"
    with tempfile.TemporaryDirectory(prefix="transfertraj-zero-shot-") as tmp:
        checkpoint = Path(tmp) / "best.pt"
        checkpoint.write_bytes(checkpoint_of(f"models:/{base_name}/{base_version}", settings).read_bytes())
        per_task = task_checkpoints_of(f"models:/{base_name}/{base_version}", settings)  # served as the base is
        lineage = _lineage(data_versions, context_versions)
        tags = {
            "source": ZERO_SHOT_SOURCE,
            "base_model": f"{base_name}/{base_version}",
            "features_version": str(validation.version),
            **{k.removeprefix("data."): v for k, v in lineage.items()},
        }
        exp_id = experiment_id(settings, CITY_EXPERIMENT)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{model_name} zero-shot {base_name} v{base_version}"):
            mlflow.log_metrics({f"val/{k}": v for k, v in base_metrics.items() if not math.isnan(v)})
            mlflow.set_tags({"cities": ",".join(c.name for c in cities), **tags, **validation.tags()})
            log_lineage(settings, validation.version, context_versions)
            version = _log_pyfunc(settings, model_name, checkpoint, cities, context_versions, per_task)
            mlflow.set_tags({"registered_model": f"{model_name}/{version}"})
    for k, v in {**tags, **validation.tags(), "gate.decision": "promoted", "gate.reason": reason}.items():
        client.set_model_version_tag(model_name, version, k, v)
    client.set_model_version_tag(
        model_name, version, "gate.numbers", json.dumps({"zero_shot": base_metrics, "fine_tuned": decision.challenger})
    )
    move_champion(client, model_name, version, by="gate", reason=reason)
    client.set_model_version_tag(model_name, rejected, "gate.champion_instead", version)
    log.info("%s v%s: %s", model_name, version, reason)
    return version


def resolve_version(client, model_uri: str) -> tuple[str, str]:
    """`models:/name/3` or `models:/name@alias` -> (name, version number)."""
    ref = model_uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    return name, version


def champion_model(client, name: str):
    """The champion's model version, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _champion_version(client, name: str) -> str | None:
    champ = champion_model(client, name)
    return None if champ is None else str(champ.version)


def promote_if_better(
    settings,
    name: str,
    version: str,
    validation: ValidationSet,
    challenger_metrics: dict | None = None,
    tolerance: dict | float | None = None,
    baseline: str | None = None,
) -> GateDecision:
    """Alias `challenger` to the new version; score the champion (or, while there is none, `baseline`,
    a model URI) on the same pinned validation set; move `champion` to the new version if no task is worse
    beyond its tolerance. The validation set and the decision are recorded on the version's tags."""
    client = configure(settings)
    tol = tolerances() if tolerance is None else tolerance
    client.set_registered_model_alias(name, CHALLENGER, version)
    champ = champion_model(client, name)

    def score(uri: str) -> dict:
        return validation_metrics(
            served_networks(uri, settings), validation.data, validation.version, settings=settings
        )

    challenger = challenger_metrics if challenger_metrics is not None else score(f"models:/{name}/{version}")
    reference, against = None, "champion"
    if champ is not None and str(champ.version) != str(version):
        reference, against = score(f"models:/{name}/{champ.version}"), f"champion v{champ.version}"
    elif champ is None and baseline:
        reference, against = score(baseline), f"zero-shot {baseline.removeprefix('models:/')}"
    decision = compare(challenger, reference, tol, against=against)
    if decision.promoted:
        move_champion(client, name, version, by="gate", reason=decision.reason)
    for key, value in _decision_tags(decision, validation).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_model_version_tag(
        name,
        version,
        "gate.numbers",
        json.dumps({"challenger": challenger, "reference": reference, "against": against}),
    )
    return decision


def move_champion(client, name: str, version: str, *, by: str, reason: str, rollback: bool = False) -> str | None:
    """Point `champion` at `version`; return the version it leaves (None when there was none).

    Who, why and when go to the new champion's version tags (`champion.by`, `champion.reason`,
    `champion.at`); a promotion also records `champion.previous`, the chain `rollback` walks back along
    (a rollback keeps the target's own `champion.previous`, so a second rollback goes one further back).
    `challenger` leaves the new champion: a challenger is a version still waiting for the gate."""
    from datetime import UTC, datetime

    current = champion_model(client, name)
    previous = None if current is None else str(current.version)
    version = str(version)
    client.set_registered_model_alias(name, CHAMPION, version)
    tags = {
        "champion.by": by,
        "champion.reason": reason,
        "champion.at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if not rollback and previous is not None and previous != version:
        tags["champion.previous"] = previous
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if previous is not None and previous != version:
        client.set_model_version_tag(name, previous, "champion.replaced_by", f"{version} ({by}: {reason})")
    drop_challenger_from_champion(client, name)
    return previous


def drop_challenger_from_champion(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        challenger = client.get_model_version_by_alias(name, CHALLENGER)
    except MlflowException:
        return
    champ = champion_model(client, name)
    if champ is not None and str(champ.version) == str(challenger.version):
        client.delete_registered_model_alias(name, CHALLENGER)


def _model_version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise LookupError(
            f"{name} has no version {version}: see the registered versions with `transfertraj models list`"
        ) from None


def promote(settings: Settings, name: str, version: str, *, by: str, reason: str) -> str | None:
    """Move `champion` to `version` by hand (no gate: a person decided); returns the version it leaves."""
    client = configure(settings)
    _model_version(client, name, version)
    return move_champion(client, name, str(version), by=by, reason=reason)


def rollback(settings: Settings, name: str, *, by: str, reason: str) -> tuple[str, str]:
    """Move `champion` back to the version it replaced (the champion's `champion.previous` tag);
    returns (version left, version restored)."""
    client = configure(settings)
    current = champion_model(client, name)
    if current is None:
        raise LookupError(f"{name} has no champion to roll back: see `transfertraj models list`")
    previous = current.tags.get("champion.previous")
    if not previous:
        raise LookupError(
            f"{name} champion v{current.version} records no previous champion: promote a version by number "
            f"with `transfertraj models promote {name} VERSION`"
        )
    _model_version(client, name, previous)
    move_champion(client, name, previous, by=by, reason=reason, rollback=True)
    return str(current.version), previous


def training_data(settings: Settings, cities: list[str], version: int | None):
    """(TrajectoryData, Delta version read, {city: context versions}) of these cities' features rows at
    `version` (latest when None), read exactly as the training DAGs read them (delta-rs, no Spark)."""
    from transfertraj.tasks.training_data import read_city_data

    try:
        return read_city_data(settings, cities, version)
    except ValueError as err:  # a city without rows: say what to do from the command line
        raise LookupError(f"{err}: run `transfertraj featurize` for them, or pass --features-version") from None


def register_checkpoint(
    settings: Settings,
    checkpoint: Path,
    name: str,
    cities: list[str],
    features_version: int | None = None,
    task_checkpoints: dict[str, Path] | None = None,
) -> Registered:
    """Register a checkpoint trained outside the DAGs (`transfertraj pretrain`, torchrun's best.pt) exactly
    as the DAGs do: the same run, artifacts and tags (log_and_register), the same gate, scored on the
    cities' features at `features_version` (latest when None). task_checkpoints: {tp|tr|od: best.pt of
    `transfertraj finetune --task ...`}, served (and gated) for their task instead of `checkpoint`."""
    from transfertraj.core.city_config import load_city

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {checkpoint}: pass the best.pt that `transfertraj pretrain --out DIR` "
            "(or torchrun) wrote under DIR"
        )
    task_checkpoints = check_task_checkpoints(task_checkpoints)  # refused before any data is read
    data, version, ctx = training_data(settings, cities, features_version)
    base = None if name == BASE_MODEL else champion_model(configure(settings), BASE_MODEL)
    return log_and_register(
        settings=settings,
        experiment=BASE_EXPERIMENT if name == BASE_MODEL else CITY_EXPERIMENT,
        model_name=name,
        checkpoint=checkpoint,
        cities=[load_city(c, settings) for c in cities],
        data_versions={"features_version": version},
        context_versions=ctx,
        features=data,
        features_version=version,
        run_name=f"register {checkpoint}",
        extra_tags={"registered_from": str(checkpoint.resolve())},
        # a city model's first version faces the base champion zero-shot, as in onboard_city
        zero_shot_base=None if base is None else f"models:/{BASE_MODEL}/{base.version}",
        task_checkpoints=task_checkpoints,
    )


# ----------------------------------------------------------------------------------------- retrieval


def load(model_uri: str, settings: Settings | None = None):
    """A ready model: `load("models:/transfertraj-porto@champion").predict(points_df, params={"task": "tp"})`."""
    import mlflow.pyfunc

    configure(settings or Settings.load())
    return mlflow.pyfunc.load_model(model_uri)


def load_torch(model_uri: str, settings: Settings | None = None):
    """The TransferTraj network inside a registered pyfunc (for scoring on features tables)."""
    return load(model_uri, settings).unwrap_python_model().torch_model


def served_networks(model_uri: str, settings: Settings | None = None) -> dict:
    """{gate task: the network that answers it} of a registered pyfunc: what the gate scores."""
    served = load(model_uri, settings).unwrap_python_model()
    return routed_by_task(served.task_models, served.torch_model)


def task_checkpoints_of(model_uri: str, settings: Settings | None = None) -> dict[str, Path]:
    """{task key: checkpoint file} of the per-task (and per-city) checkpoints a registered model carries
    (often none), logged as best-<key>.pt."""
    import mlflow.artifacts

    from transfertraj.serving import split_task_key

    configure(settings or Settings.load())
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("best-*.pt")):
        key = path.stem.removeprefix("best-")
        split_task_key(key)
        found.setdefault(key, path)
    return found


def checkpoint_of(model_uri: str, settings: Settings | None = None) -> Path:
    """The checkpoint file of a registered model (downloaded to a local path)."""
    import mlflow.artifacts

    configure(settings or Settings.load())
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    found = sorted(folder.rglob("best.pt"))
    if not found:
        raise FileNotFoundError(f"{model_uri} holds no checkpoint")
    return found[0]


def list_models(settings: Settings) -> list[dict]:
    """Every registered TransferTraj model version: name, version, aliases, gate decision, metrics."""
    client = configure(settings)
    rows = []
    for rm in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            aliases.setdefault(str(v), []).append(alias)
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            run_metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            rows.append(
                {
                    "name": rm.name,
                    "version": int(mv.version),
                    "aliases": sorted(aliases.get(str(mv.version), [])),
                    "gate": mv.tags.get("gate.decision", ""),
                    "features_version": mv.tags.get("features_version", ""),
                    **{k: run_metrics.get(f"val/{k}", math.nan) for k in GATE_METRICS},
                }
            )
    return sorted(rows, key=lambda r: (r["name"], r["version"]))


def registry_lines(settings: Settings) -> list[str]:
    rows = list_models(settings)
    if not rows:
        return ["(no registered models)"]
    head = f"{'model':30s} {'ver':>3s}  {'aliases':20s} {'gate':9s} {'data v':>6s} " + " ".join(
        f"{k:>11s}" for k in GATE_METRICS
    )
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r['name']:30s} {r['version']:>3d}  {','.join(r['aliases']) or '-':20s} {r['gate'] or '-':9s} "
            f"{r['features_version'] or '-':>6s} " + " ".join(f"{r[k]:11.2f}" for k in GATE_METRICS)
        )
    return out


def protected_versions(settings: Settings) -> dict[str, int]:
    """Delta table -> the oldest version a champion or challenger records (files VACUUM must keep)."""
    from mlflow.exceptions import MlflowException

    client = configure(settings)
    oldest: dict[str, int] = {}
    for rm in client.search_registered_models():
        for alias in (CHAMPION, CHALLENGER):
            try:
                mv = client.get_model_version_by_alias(rm.name, alias)
            except MlflowException:
                continue
            for key, value in mv.tags.items():
                table = (
                    "features"
                    if key == "features_version"
                    else (
                        key.split(".", 1)[1].removesuffix("_version")
                        if key.count(".") == 1 and key.endswith("_version")
                        else None
                    )
                )
                if table and value.lstrip("-").isdigit():
                    oldest[table] = min(oldest.get(table, int(value)), int(value))
    return oldest
