"""Training, fine-tuning and prediction: one loop, the task is only the mask.

    from transfertraj.model.train import pretrain, finetune
    from transfertraj.model.predict import predict, evaluate
    ckpt = pretrain(features_df, data_version=12, out_dir="var/ckpt/porto", epochs=30)
    tuned = finetune(ckpt, "tp", features_df, data_version=12, n_shot=5000, freeze_encoder=False)
    preds = predict(tuned, features_df, "tp", split="test")    # metres, lon/lat, minutes
    evaluate(tuned, features_df, "tp", split="test")           # {"rmse_m": .., "mae_m": .., "n": ..}

Data is split 8:1:1 by departure time; training stops early on the validation loss. An output folder
holds `last.pt` (everything needed to resume after a kill: weights, optimizer, epoch, RNG, the best
weights so far) and `best.pt` (the best weights, a copy taken at the best epoch). Both carry the model
arguments, the resolved training config and the data description (table version, POI taxonomy
version, POI/road dims, phi, coordinate convention), so `load_model(path)` rebuilds the model from the
file alone and `check_compatible` can refuse input that does not fit it.

Runs on CPU by default and on CUDA when present (bf16 autocast). Under torchrun (WORLD_SIZE > 1) it
trains with DistributedDataParallel (NCCL on CUDA, gloo on CPU); rank 0 writes the checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from transfertraj.core.constants import MAX_POINTS
from transfertraj.model.checkpoint import check_compatible, load_model, new_state, save_checkpoint, snapshot
from transfertraj.model.device import limit_threads, resolve_device
from transfertraj.model.heap import reused_heap
from transfertraj.model.masking import TASKS
from transfertraj.model.optimizer import adam
from transfertraj.model.road_offsets import computed_rows
from transfertraj.model.trajectory_data import (
    Collator,
    TrajectoryData,
    TrajectoryDataset,
    as_data,
    chronological_split,
    eligible,
    to_device,
)
from transfertraj.model.transfertraj import ModelArgs, TransferTraj, with_road_input

log = logging.getLogger("transfertraj.model")


@dataclass
class TrainConfig:
    task: str = "pretrain"  # the mask: pretrain | tp | tr4 | tr8 | tr16 | od
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    grad_clip: float = 1.0
    patience: int = 5  # epochs without a better validation loss before stopping
    seed: int = 0
    context_dropout: float = 0.1  # pretraining: share of trajectories whose POI/road are marked missing
    max_points: int = MAX_POINTS  # trajectories longer than this are left out (the paper keeps 5..120)
    n_shot: int | None = None  # few-shot: train on this many trajectories of the train split
    freeze_encoder: bool = False  # train the two heads only
    device: str = "auto"  # auto: CUDA when present, else CPU
    amp: bool = True  # bf16 autocast on CUDA
    progress: bool = True  # tqdm bar on rank 0
    # Budgets for large multi-city tables on a CPU (see `epoch_indices`): None = every trajectory, no limit.
    epoch_size: int | None = None  # trajectories per epoch, drawn afresh each epoch, equal shares per city
    val_size: int | None = None  # validation trajectories (a fixed draw, equal shares per city)
    time_budget_s: float | None = None  # stop after the epoch that reaches this much training time
    lr_schedule: str = "constant"  # constant | cosine (to lr/20 over `epochs`, from the global step)
    time_loss: str = "mse"  # mse | l1: the temporal loss (TransferTraj.forward says when l1 is the one to use)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be constant or cosine, not {self.lr_schedule!r}")
        if self.time_loss not in ("mse", "l1"):
            raise ValueError(f"time_loss must be mse or l1, not {self.time_loss!r}")


def split_overrides(overrides: dict) -> tuple[dict, dict]:
    """Keyword overrides -> (TrainConfig fields, ModelArgs fields); unknown names are an error."""
    t_names = {f.name for f in fields(TrainConfig)}
    m_names = {f.name for f in fields(ModelArgs)}
    unknown = set(overrides) - t_names - m_names
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    return ({k: v for k, v in overrides.items() if k in t_names}, {k: v for k, v in overrides.items() if k in m_names})


# ----------------------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this process started the process group and ends it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self, cfg: TrainConfig):
        if self.device.type == "cuda" and cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def start_runtime(cfg: TrainConfig) -> Runtime:
    """Single process, or one rank of a torchrun / torch.distributed job (WORLD_SIZE > 1 in the env)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    limit_threads()
    if world == 1 and not dist.is_initialized():
        return Runtime(device=resolve_device(cfg.device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Runtime(device=device, rank=dist.get_rank(), world=dist.get_world_size(), owns_group=owns)


# ----------------------------------------------------------------------------------------- the loop


def epoch_indices(data, indices: np.ndarray, size: int | None, seed) -> np.ndarray:
    """`size` trajectories of `indices`, equal shares per city, sorted; all of them when size is None.

    Why per city: 21 days of San Francisco hold ten times the trajectories of a year of Porto, so a
    uniform draw would train a "multi-city" model on one city. A city with fewer trajectories than its
    share gives all it has (its share is not refilled by the others: balance over volume). A fresh draw
    per epoch (seed = (seed, epoch)) sees more distinct trajectories than a fixed subsample.
    """
    indices = np.asarray(indices)
    if size is None or size >= len(indices):
        return indices
    rng = np.random.default_rng(seed)
    cities = data.city[indices]
    names = np.unique(cities)
    share = max(size // len(names), 1)
    picked = [rng.choice(own, min(share, len(own)), replace=False) for own in (indices[cities == c] for c in names)]
    return np.sort(np.concatenate(picked))


def cosine_lr(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at a global step: constant, or cosine from lr down to lr/20 over total_steps."""
    if cfg.lr_schedule == "constant" or total_steps <= 0:
        return cfg.lr
    t = min(step / total_steps, 1.0)
    return cfg.lr / 20 + (cfg.lr - cfg.lr / 20) * 0.5 * (1 + math.cos(math.pi * t))


def _epoch_batches(data, indices, cfg: TrainConfig, collator: Collator, rt: Runtime, epoch: int, shuffle: bool):
    """This rank's batches of one epoch; order and masks depend only on (seed, epoch, rank)."""
    order = np.random.default_rng([cfg.seed, epoch]).permutation(indices) if shuffle else np.asarray(indices)
    per_rank = len(order) // rt.world if rt.world > 1 else len(order)  # equal step counts on every rank
    shard = order[rt.rank :: rt.world][:per_rank]
    collator.set_epoch(epoch, rt.rank)
    return torch.utils.data.DataLoader(
        TrajectoryDataset(data, shard), batch_size=cfg.batch_size, shuffle=False, collate_fn=collator
    )


@torch.no_grad()
def validation_loss(model: TransferTraj, data, indices, cfg: TrainConfig, rt: Runtime) -> float:
    """Masked loss (spatial MSE + the temporal `time_loss`, no balancing term) under the task's mask, fixed masks, no noise."""
    was_training = model.training
    model.eval()
    collator = Collator(task=cfg.task, seed=cfg.seed + 1)
    loss_sum, n = 0.0, 0.0
    for batch, targets in _epoch_batches(data, indices, cfg, collator, rt, epoch=0, shuffle=False):
        with rt.autocast(cfg):
            out, _ = model(to_device(batch, rt.device), to_device(targets, rt.device), time_loss=cfg.time_loss)
        size = len(batch["row"])
        loss_sum += float(out["loss_spatial"] + out["loss_temporal"]) * size
        n += size
    model.train(was_training)
    loss_sum, n = rt.all_sum([loss_sum, n])
    return loss_sum / max(n, 1)


def fit(model: TransferTraj, data: TrajectoryData, cfg: TrainConfig, out_dir, *, record: dict | None = None) -> Path:
    """Train `model` in place on `data` under cfg.task's mask; returns the path of best.pt.

    Resumes from out_dir/last.pt when it exists (same task). record: extra checkpoint fields.
    """
    out_dir = Path(out_dir)
    rt = start_runtime(cfg)
    try:
        with reused_heap():  # a step's freed memory kept for the next, not faulted in again (model/heap.py)
            return _fit(model, data, cfg, out_dir, record or {}, rt)
    finally:
        rt.close()


def _fit(model, data, cfg, out_dir, record, rt: Runtime) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    train_idx, val_idx, test_idx = chronological_split(data)
    train_idx = eligible(data, train_idx, cfg.task, cfg.max_points)
    val_idx = eligible(data, val_idx, cfg.task, cfg.max_points)
    if model.args.road_input and road_mus(cfg.task):  # train and validate where the road offsets are known
        known = np.logical_and.reduce([computed_rows(data, mu) for mu in road_mus(cfg.task)])
        train_idx, val_idx = train_idx[known[train_idx]], val_idx[known[val_idx]]
        if rt.main:
            log.info("road input: %d train, %d validation trajectories with road offsets", len(train_idx), len(val_idx))
    if cfg.n_shot is not None:
        if cfg.n_shot > len(train_idx):
            log.warning("n_shot=%d but only %d training trajectories; using all", cfg.n_shot, len(train_idx))
        pick = np.random.default_rng(cfg.seed).choice(len(train_idx), min(cfg.n_shot, len(train_idx)), replace=False)
        train_idx = np.sort(train_idx[pick])
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"not enough trajectories for task {cfg.task}: {len(train_idx)} train, {len(val_idx)} val")
    val_idx = epoch_indices(data, val_idx, cfg.val_size, [cfg.seed, 10**6])

    model.to(rt.device)
    if cfg.freeze_encoder:
        for p in model.encoder_parameters():
            p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(trainable, lr=cfg.lr)  # torch's Adam; on CPU without importing torch._dynamo (model/optimizer.py)
    net = model
    if rt.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, find_unused_parameters=True
        )  # experts that get no token in a batch have no gradient

    start_epoch, best_val, best_epoch, bad_epochs, history = 0, math.inf, -1, 0, []
    best_state = snapshot(model)
    if last_path.exists():
        state = torch.load(last_path, map_location=rt.device, weights_only=True)
        if state["train_config"]["task"] != cfg.task:
            raise ValueError(f"{last_path} belongs to task {state['train_config']['task']}, not {cfg.task}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        best_state, best_val, best_epoch = state["best_model"], state["best_val"], state["best_epoch"]
        bad_epochs, history, start_epoch = state["bad_epochs"], state["history"], state["epoch"] + 1
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if rt.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), rt.device)
        if rt.main:
            log.info("resumed from %s at epoch %d", last_path, start_epoch)
        if bad_epochs >= cfg.patience:
            return best_path

    described = {**data.describe(), "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx)}
    base = new_state(model, described, asdict(cfg), **record)
    collator = Collator(
        task=cfg.task, seed=cfg.seed, context_dropout=cfg.context_dropout if cfg.task == "pretrain" else 0.0
    )
    per_epoch = len(epoch_indices(data, train_idx, cfg.epoch_size, [cfg.seed, 0]))
    steps_per_epoch = math.ceil(per_epoch / rt.world / cfg.batch_size)
    for epoch in range(start_epoch, cfg.epochs):
        spent = sum(h["seconds"] for h in history)
        if cfg.time_budget_s is not None and history and spent >= cfg.time_budget_s:  # one epoch at least
            if rt.main:
                log.info("time budget of %.0f s spent after %d epoch(s): stopping", cfg.time_budget_s, epoch)
            break
        net.train()
        t0, loss_sum, steps = time.perf_counter(), 0.0, 0
        batches = _epoch_batches(
            data, epoch_indices(data, train_idx, cfg.epoch_size, [cfg.seed, epoch]), cfg, collator, rt, epoch, True
        )
        bar = tqdm(
            batches,
            desc=f"{cfg.task} epoch {epoch + 1}/{cfg.epochs}",
            disable=not (rt.main and cfg.progress),
            leave=False,
        )
        for batch, targets in bar:
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(cfg, epoch * steps_per_epoch + steps, cfg.epochs * steps_per_epoch)
            with rt.autocast(cfg):
                _, loss = net(to_device(batch, rt.device), to_device(targets, rt.device), time_loss=cfg.time_loss)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            # Gradients freed at once, not after the next forward: kept, they would sit among its activations
            # in the heap and glibc could not reuse those holes (issue #18: ~0.1 GB of peak RSS at 64 x 120)
            optimizer.zero_grad(set_to_none=True)
            loss_sum, steps = loss_sum + loss.item(), steps + 1
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
        train_loss = rt.all_sum([loss_sum / max(steps, 1)])[0] / rt.world
        val = validation_loss(model, data, val_idx, cfg, rt)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val, "seconds": time.perf_counter() - t0})
        if val < best_val:
            best_val, best_epoch, bad_epochs = val, epoch, 0
            best_state = snapshot(model)
            if rt.main:
                save_checkpoint(
                    best_path,
                    {
                        **base,
                        "model": best_state,
                        "epoch": epoch,
                        "best_epoch": epoch,
                        "best_val": val,
                        "history": history,
                    },
                )
        else:
            bad_epochs += 1
        if rt.main:
            log.info(
                "%s epoch %d: train %.4f val %.4f (best %.4f at %d)",
                cfg.task,
                epoch,
                train_loss,
                val,
                best_val,
                best_epoch,
            )
            rng = {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(rt.device) if rt.device.type == "cuda" else None,
            }
            save_checkpoint(
                last_path,
                {
                    **base,
                    "model": snapshot(model),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "best_model": best_state,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "history": history,
                    "rng": rng,
                },
            )
        if bad_epochs >= cfg.patience:
            if rt.main:
                log.info("early stop after epoch %d: no better validation loss for %d epochs", epoch, cfg.patience)
            break
    if rt.world > 1:
        dist.barrier()  # no rank returns before rank 0 has written the checkpoints
    return best_path


# ----------------------------------------------------------------------------------------- entry points


def pretrain(
    features_df,
    data_version,
    out_dir,
    *,
    model_args: ModelArgs | None = None,
    config: TrainConfig | None = None,
    task: str = "pretrain",
    **overrides,
) -> Path:
    """Train from scratch on the pretraining mask (or `task`'s: "multitask" trains every served task at
    once); returns the path of best.pt. Overrides name TrainConfig or ModelArgs fields (epochs=3,
    d_model=64, position="absolute_sincos", use_moe=False, ...)."""
    t_over, m_over = split_overrides(overrides)
    data = as_data(features_df, data_version)
    cfg = replace(config or TrainConfig(), **{**t_over, "task": task})
    args = replace(model_args or ModelArgs(), **m_over, poi_dim=data.poi_dim, road_dim=data.road_dim)
    torch.manual_seed(cfg.seed)
    model = TransferTraj(args=args)
    return fit(model, data, cfg, out_dir, record={"parent": None})


def road_mus(task: str) -> tuple[int, ...]:
    """The TR mus whose road offsets a task's masks read."""
    if task in ("multitask", "trmix"):
        return (4, 8, 16)
    return (int(task[2:]),) if task.startswith("tr") else ()


def _with_training_road_offsets(data, cfg: TrainConfig, graphs: dict, n_rows: int | None, cache) -> TrajectoryData:
    """`data` with road offsets on a draw of `n_rows` training trajectories and on the validation draw `_fit`
    makes (the same seed), the only rows `_fit` then trains and validates on."""
    from transfertraj.model.road_offsets import with_road_offsets

    train_idx, val_idx, _ = chronological_split(data)
    train_idx = epoch_indices(data, eligible(data, train_idx, cfg.task, cfg.max_points), n_rows, [cfg.seed, 7])
    val_idx = epoch_indices(data, eligible(data, val_idx, cfg.task, cfg.max_points), cfg.val_size, [cfg.seed, 10**6])
    for city in sorted(set(data.city.tolist()) - set(graphs)):
        log.warning("road input: %s has no road graph; its road offsets are 0", city)
    t0 = time.perf_counter()
    rows = np.concatenate([train_idx, val_idx])
    data = with_road_offsets(data, rows, mus=road_mus(cfg.task), graphs=graphs, cache_dir=cache)
    log.info("road offsets of %d trajectories ready in %.0f s", len(rows), time.perf_counter() - t0)
    return data


def finetune(
    checkpoint,
    task: str,
    features_df,
    *,
    data_version=None,
    out_dir=None,
    n_shot: int | None = None,
    freeze_encoder: bool = False,
    config: TrainConfig | None = None,
    road_input: bool = False,
    road_graphs: dict | None = None,
    road_rows: int | None = None,
    road_cache=None,
    **overrides,
) -> Path:
    """Fine-tune a checkpoint on a task's mask (optionally N trajectories only, optionally heads only).

    out_dir defaults to <checkpoint folder>/finetune_<task>[_<n>shot][_frozen]. Returns best.pt's path.
    road_input: add the road-offset input (model/road_offsets.py) to a checkpoint without it; a model with
    it trains on TR masks with the offsets of `road_graphs` ({city: RoadGraph}), computed for `road_rows`
    training trajectories (equal shares per city; all when None) and the validation draw, cached in
    `road_cache` (a folder) when given.
    """
    t_over, m_over = split_overrides(overrides)
    if m_over:
        raise TypeError(f"model arguments come from the checkpoint; cannot override {sorted(m_over)}")
    model, state = load_model(checkpoint)
    data = as_data(features_df, data_version, poi_dim=model.args.poi_dim, road_dim=model.args.road_dim)
    check_compatible(state, data)
    cfg = replace(
        config or TrainConfig(), **{**t_over, "task": task, "n_shot": n_shot, "freeze_encoder": freeze_encoder}
    )
    if road_input:
        model = with_road_input(model)
    if model.args.road_input and road_mus(task):
        data = _with_training_road_offsets(data, cfg, road_graphs or {}, road_rows, road_cache)
    if out_dir is None:
        name = f"finetune_{task}" + (f"_{n_shot}shot" if n_shot else "") + ("_frozen" if freeze_encoder else "")
        out_dir = Path(checkpoint).parent / name
    torch.manual_seed(cfg.seed)
    parent = {
        "path": str(checkpoint) if not isinstance(checkpoint, dict) else None,
        "data": state["data"],
        "task": state["train_config"]["task"],
    }
    return fit(model.train(), data, cfg, out_dir, record={"parent": parent})
