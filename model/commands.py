"""`pretrain` and `finetune` subcommands, for the project CLI to add with `register(subparsers)`.

    transfertraj pretrain --features lake/features --out var/ckpt/porto --epochs 30
    transfertraj finetune --from var/ckpt/porto/best.pt --task tp --features lake/features \
        --out var/ckpt/porto_tp --n-shot 5000 --freeze-encoder

--features takes a Parquet file/folder or a Delta folder (read at its latest version, which is
recorded in the checkpoint). Handlers have the CLI's signature `func(args, settings) -> exit code`.
"""

from __future__ import annotations

import argparse
import json
import logging

from transfertraj.model.masking import TASKS

log = logging.getLogger("transfertraj.model")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", required=True, help="features table: Parquet file/folder or Delta folder")
    p.add_argument("--out", required=True, help="output folder for last.pt / best.pt")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0 ...")
    p.add_argument("--city", action="append", help="train on these cities only (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def _read(args):
    from transfertraj.model.trajectory_data import read_features

    table, version = read_features(args.features)
    if args.city:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = table.filter(pc.is_in(table.column("city"), value_set=pa.array(args.city)))
    log.info("read %d trajectories from %s (version %s)", table.num_rows, args.features, version)
    return table, version


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
    )


def cmd_pretrain(args, settings=None) -> int:
    from transfertraj.model.train import pretrain

    table, version = _read(args)
    kwargs = _train_kwargs(args)
    ablation = {
        "position": args.position,
        "use_moe": not args.no_moe,
        "use_poi": not args.no_poi,
        "use_road": not args.no_road,
    }
    path = pretrain(table, version, kwargs.pop("out_dir"), context_dropout=args.context_dropout, **ablation, **kwargs)
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

    table, version = _read(args)
    kwargs = _train_kwargs(args)
    path = finetune(
        getattr(args, "from"),
        args.task,
        table,
        data_version=version,
        n_shot=args.n_shot,
        freeze_encoder=args.freeze_encoder,
        **kwargs,
    )
    print(path)
    print(_loss_curves(path))
    metrics = evaluate(path, table, args.task, data_version=version, split="test", device=args.device)
    print(json.dumps({"task": args.task, "split": "test", **metrics}))
    return 0


def register(subparsers) -> None:
    """Add `pretrain` and `finetune` to an argparse subparsers object."""
    p = subparsers.add_parser("pretrain", help="pretrain TransferTraj on a features table (masked modelling)")
    _add_common(p)
    p.add_argument("--context-dropout", type=float, default=0.1, help="share of trajectories trained without POI/road")
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
    p.add_argument("--task", required=True, choices=[t for t in TASKS if t != "pretrain"])
    p.add_argument("--n-shot", type=int, default=None, help="few-shot: train on N trajectories of the train split")
    p.add_argument("--freeze-encoder", action="store_true", help="train the heads only")
    p.set_defaults(func=cmd_finetune)
