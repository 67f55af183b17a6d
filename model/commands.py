"""`pretrain`, `finetune` and `evaluate` subcommands, for the project CLI to add with `register(subparsers)`.

    transfertraj pretrain --out var/ckpt/porto --epochs 30 --city porto      # the lake's features table
    transfertraj finetune --from var/ckpt/porto/best.pt --task tp --city sanfrancisco \
        --out var/ckpt/sf_tp --n-shot 5000 --freeze-encoder
    transfertraj finetune ... --version 7     # exactly the features version a checkpoint records
    transfertraj evaluate --suite quick       # model.evaluation_report (docs/evaluation.md)

The features are the lake's `features` table (feature_store.reader) at its latest version or at
`--version`, optionally some cities only (`--city`, repeatable); `--features` takes another Delta
folder or a plain Parquet file/folder (recorded as `parquet:<path>`). The version read, each city's
phi and CRS (from its city config) are recorded in the checkpoint. Handlers have the CLI's signature
`func(args, settings) -> exit code`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from transfertraj.core.constants import MODEL_SIZES
from transfertraj.model.evaluation_protocol import ABLATIONS, REFERENCE_TOLERANCE, SUITES, TASKS, TRANSFERS, VARIANTS
from transfertraj.model.masking import TASKS as MASK_TASKS
from transfertraj.model.masking import scored_tasks

log = logging.getLogger("transfertraj.model")


def _add_features(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--features", help="features: a Delta folder or a Parquet file/folder; default the lake's features table"
    )
    p.add_argument("--version", type=int, help="the features table's Delta version to read (default: latest)")
    p.add_argument("--city", action="append", help="these cities only (repeatable)")


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_features(p)
    p.add_argument("--out", required=True, help="output folder for last.pt / best.pt")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0 ...")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument(
        "--epoch-size",
        type=int,
        help="trajectories per epoch, drawn afresh each epoch with equal shares per city (default: all)",
    )
    p.add_argument("--val-size", type=int, help="validation trajectories, a fixed draw per city (default: all)")
    p.add_argument(
        "--time-budget-min", type=float, help="stop after the epoch that reaches this many minutes of training"
    )
    p.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="cosine: lr down to lr/20 over --epochs",
    )
    p.add_argument(
        "--time-loss",
        choices=["mse", "l1"],
        default="mse",
        help="temporal loss: mse (the paper's) or l1 (absolute error: what OD-TTE's MAE rewards; travel times "
        "are right-skewed, so the squared error answers above the median)",
    )


def read_input(args, settings=None):
    """(TrajectoryData with its cities' phi and CRS, version read, where from) for --features/--version/--city."""
    from transfertraj.core.settings import Settings
    from transfertraj.feature_store.tables import table_path
    from transfertraj.model.trajectory_data import load_features, read_features, with_city_facts

    settings = settings or Settings.load()
    source = args.features or table_path(settings, "features")
    table, version = read_features(source, version=args.version, cities=args.city)
    if table.num_rows == 0:
        raise SystemExit(f"no features rows in {source} (version {version}, cities {args.city or 'all'})")
    log.info("read %d trajectories from %s (version %s)", table.num_rows, source, version)
    return with_city_facts(load_features(table, version), settings), version, source


def _train_kwargs(args) -> dict:
    return dict(
        out_dir=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        epoch_size=args.epoch_size,
        val_size=args.val_size,
        time_budget_s=None if args.time_budget_min is None else args.time_budget_min * 60,
        lr_schedule=args.lr_schedule,
        time_loss=args.time_loss,
    )


def cmd_pretrain(args, settings=None) -> int:
    from transfertraj.model.train import pretrain

    data, version, _ = read_input(args, settings)
    kwargs = _train_kwargs(args)
    ablation = {
        "position": args.position,
        "use_moe": not args.no_moe,
        "use_poi": not args.no_poi,
        "use_road": not args.no_road,
    }
    size = MODEL_SIZES[args.size]
    path = pretrain(
        data,
        version,
        kwargs.pop("out_dir"),
        task=args.task,
        context_dropout=args.context_dropout,
        **size,
        **ablation,
        **kwargs,
    )
    print(path)
    print(_loss_curves(path))
    return 0


def _loss_curves(best_path):
    """The PNG of the run's loss curves, from last.pt (it holds every epoch, best.pt stops at the best)."""
    from pathlib import Path

    from transfertraj.model.loss_curves import plot_checkpoint

    folder = Path(best_path).parent
    source = folder / "last.pt" if (folder / "last.pt").exists() else Path(best_path)
    return plot_checkpoint(source, folder / "loss_curves.png")


def cmd_finetune(args, settings=None) -> int:
    from transfertraj.model.predict import evaluate
    from transfertraj.model.train import finetune

    data, version, _ = read_input(args, settings)
    kwargs = _train_kwargs(args)
    graphs, cache = _road_graphs(args, data, settings) if args.road_input else ({}, None)
    path = finetune(
        getattr(args, "from"),
        args.task,
        data,
        data_version=version,
        n_shot=args.n_shot,
        freeze_encoder=args.freeze_encoder,
        road_input=args.road_input,
        road_graphs=graphs,
        road_rows=args.road_rows,
        road_cache=cache,
        **kwargs,
    )
    print(path)
    print(_loss_curves(path))
    for task in scored_tasks(args.task):
        metrics = evaluate(
            path, data, task, data_version=version, split="test", device=args.device, road_graphs=graphs or None
        )
        print(json.dumps({"task": task, "split": "test", **metrics}))
    return 0


def _road_graphs(args, data, settings=None) -> tuple[dict, object]:
    """({city: RoadGraph} of the lake's context_roads for the input's cities, the road-offset cache folder)."""
    from transfertraj.core.settings import Settings
    from transfertraj.model.road_paths import road_graph

    settings = settings or Settings.load()
    graphs = {c: road_graph(settings, c)[0] for c in sorted(set(data.city.tolist()))}
    return {c: g for c, g in graphs.items() if g is not None}, settings.cache / "road_offsets"


def register(subparsers) -> None:
    """Add `pretrain`, `finetune` and `evaluate` to an argparse subparsers object."""
    p = subparsers.add_parser("pretrain", help="pretrain TransferTraj on a features table (masked modelling)")
    _add_common(p)
    p.add_argument("--context-dropout", type=float, default=0.1, help="share of trajectories trained without POI/road")
    p.add_argument(
        "--task",
        default="pretrain",
        choices=["pretrain", "multitask"],
        help="the mask trained from scratch: pretrain (masked recovery, the paper's) or multitask (each trajectory "
        "draws TP, TR4/8/16, OD or the pretraining mask: one stage for a model that answers every task)",
    )
    p.add_argument("--size", choices=list(MODEL_SIZES), default="paper", help="model size (core/constants.py)")
    p.add_argument(
        "--position", choices=["trie", "absolute_sincos", "none"], default="trie", help="absolute_sincos = wo TRIE"
    )
    p.add_argument("--no-moe", action="store_true", help="plain FFN instead of SC-MoE (wo SC-MoE)")
    p.add_argument("--no-poi", action="store_true", help="drop the POI modality (wo POI)")
    p.add_argument("--no-road", action="store_true", help="drop the road modality (wo road)")
    p.set_defaults(func=cmd_pretrain)

    p = subparsers.add_parser("finetune", help="fine-tune a checkpoint on a task's mask, then score the test split")
    _add_common(p)
    p.add_argument("--from", required=True, help="checkpoint to start from (best.pt)")
    p.add_argument("--task", required=True, choices=[t for t in MASK_TASKS if t != "pretrain"])
    p.add_argument("--n-shot", type=int, default=None, help="few-shot: train on N trajectories of the train split")
    p.add_argument("--freeze-encoder", action="store_true", help="train the heads only")
    p.add_argument(
        "--road-input",
        action="store_true",
        help="add the TR road-offset input (road path minus straight line, from the lake's context_roads)",
    )
    p.add_argument(
        "--road-rows",
        type=int,
        default=None,
        help="with --road-input: train on this many trajectories with precomputed road offsets (default: all)",
    )
    p.set_defaults(func=cmd_finetune)
    register_evaluate(subparsers)


# ----------------------------------------------------------------------------------------- evaluate


def suite_from_args(args):
    """The --suite's SuiteConfig with the flags' overrides (seeds, epochs, transfers, model size ...)."""
    from transfertraj.model.evaluation_protocol import suite_config

    config = SUITES[args.suite]
    over = {}
    if args.seeds:
        over["seeds"] = tuple(args.seeds)
    for name in ("pretrain_epochs", "finetune_epochs", "few_shot_n", "source_city"):
        if getattr(args, name) is not None:
            over[name] = getattr(args, name)
    if args.transfers is not None:
        over["transfers"] = tuple(t for t in args.transfers if t != "none")
    if args.ablations is not None:
        over["ablations"] = tuple(a for a in args.ablations if a != "none")
    for name in ("variants", "tasks", "transfer_tasks"):
        if getattr(args, name):
            over[name] = tuple(getattr(args, name))
    model = dict(MODEL_SIZES["tiny"] if args.tiny else config.model)
    for item in args.model_arg or []:
        model.update(parse_model_arg(item))
    if args.tiny or args.model_arg:
        over["model"] = model
    return suite_config(args.suite, **over)


def parse_model_arg(item: str) -> dict:
    """ "aux_loss_weight=0.1" -> {"aux_loss_weight": 0.1}, typed by the ModelArgs field; a clear error otherwise."""
    from transfertraj.model.transfertraj import ModelArgs

    defaults = {
        k: v for k, v in ModelArgs().to_dict().items() if k not in ("poi_dim", "road_dim")
    }  # dims come from the data
    key, sep, raw = item.partition("=")
    if not sep or key not in defaults:
        raise SystemExit(f"--model-arg {item!r}: expected NAME=VALUE with NAME one of {', '.join(defaults)}")
    default = defaults[key]
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            value = raw.lower() in ("true", "1")
        elif isinstance(default, tuple):
            value = tuple(float(v) for v in raw.split(","))
        else:
            value = type(default)(raw)
    except ValueError:
        raise SystemExit(f"--model-arg {item!r}: {raw!r} is not a valid {type(default).__name__}") from None
    return {key: value}


def cmd_evaluate(args, settings) -> int:
    from transfertraj.model.evaluation_report import evaluate_suite

    config = suite_from_args(args)
    data, version, source = read_input(args, settings)
    out = Path(args.out) if args.out else settings.reports / "evaluation" / config.name
    log.info(
        "evaluation suite %s on %s (version %s, %d trajectories) -> %s", config.name, source, version, len(data), out
    )
    res = evaluate_suite(
        config,
        data,
        out,
        device=args.device,
        plots=not args.no_plots,
        mlflow_uri=None if args.no_mlflow else settings.mlflow_tracking_uri,
        artifact_root=settings.home / "mlflow" / "artifacts",
        settings=settings,
    )
    print((out / "results.md").read_text())
    for f in res["files"]:
        print(f)
    if res["mlflow_run_id"]:
        print(f"mlflow run {res['mlflow_run_id']} ({settings.mlflow_tracking_uri})")
    finite = bool(res["results"]["mean"].map(np.isfinite).all())
    if not finite:
        log.error("some metrics are not finite (see %s)", out / "results.csv")
    ref = res["reference"]
    matched = ref is None or args.no_reference_check or bool(ref["within"].all())
    if not matched:
        log.error(
            "baselines differ from the reference values by more than %.0f %%:\n%s",
            REFERENCE_TOLERANCE * 100,
            ref[~ref["within"]].to_string(),
        )
    return 0 if finite and matched else 1


def register_evaluate(subparsers) -> None:
    """Add `evaluate` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate",
        help="evaluation suite: baselines, variants, ablations, region transfer -> reports/evaluation/<suite>",
    )
    p.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default="quick",
        help="quick: CI size (minutes on 2 CPU cores); full: GPU / long runs",
    )
    _add_features(p)
    p.add_argument("--out", help="output folder; default <home>/reports/evaluation/<suite>")
    p.add_argument("--seeds", type=int, nargs="+", help="override the suite's seeds")
    p.add_argument("--pretrain-epochs", type=int)
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--few-shot-n", type=int, help="few-shot target trajectories (default 5000 or all available)")
    p.add_argument(
        "--source-city",
        help="the city of the in-domain setting and the transfers' source (default porto): e.g. sanfrancisco "
        "to run the in-domain protocol on San Francisco",
    )
    p.add_argument("--transfers", nargs="+", choices=list(TRANSFERS) + ["none"], help="override the suite's transfers")
    p.add_argument("--ablations", nargs="+", choices=list(ABLATIONS) + ["none"], help="override the suite's ablations")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        help="in-domain variants (full is the transfers' source)",
    )
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), help="in-domain tasks")
    p.add_argument("--transfer-tasks", nargs="+", choices=list(TASKS), help="tasks the transfers fine-tune and score")
    p.add_argument(
        "--tiny", action="store_true", help="the quick suite's tiny model (for CPU runs of the full protocol)"
    )
    p.add_argument(
        "--model-arg",
        action="append",
        metavar="NAME=VALUE",
        help="override one ModelArgs field for every model of the run (repeatable), e.g. aux_loss_weight=0.1",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument(
        "--no-reference-check",
        action="store_true",
        help="exit 0 even when the Porto baselines miss their reference values",
    )
    p.set_defaults(func=cmd_evaluate)
