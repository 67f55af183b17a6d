"""The checkpoint file: its format, an atomic save, a load that upgrades old files, and the check that
input data fits the model.

    from transfertraj.model.checkpoint import load_model, check_compatible
    model, state = load_model("var/ckpt/porto/best.pt")    # (TransferTraj in eval mode, checkpoint dict)
    check_compatible(state, data)                           # TaxonomyMismatch when the input cannot fit

A checkpoint is one `torch.save` dict: format tag, model arguments, weights, the resolved training
config and the description of the data it was trained on (`TrajectoryData.describe()`). It is read with
`weights_only=True`, and loading it needs this module and the network only, never the training loop:
registry and serving import it, not `transfertraj.model.train`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from transfertraj.model.trajectory_data import TaxonomyMismatch, TrajectoryData
from transfertraj.model.transfertraj import ModelArgs, TransferTraj

CHECKPOINT_FORMAT = "transfertraj-checkpoint/1"


def snapshot(module: torch.nn.Module) -> dict:
    """A real copy of the weights (not references that later steps would overwrite)."""
    return copy.deepcopy(module.state_dict())


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic write: a kill during the write leaves the previous file intact."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path_or_state, map_location="cpu") -> dict:
    if isinstance(path_or_state, dict):
        return path_or_state
    state = torch.load(Path(path_or_state), map_location=map_location, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path_or_state} is not a TransferTraj checkpoint")
    state["model_args"].setdefault("spatial_residual", False)  # written before the residual head existed
    return state


def load_model(path_or_state, map_location="cpu") -> tuple[TransferTraj, dict]:
    """Rebuild the model from a checkpoint alone: (model in eval mode, checkpoint dict)."""
    state = load_checkpoint(path_or_state, map_location)
    model = TransferTraj(args=ModelArgs(**state["model_args"]))
    model.load_state_dict(state["model"])
    return model.eval(), state


def check_compatible(state: dict, data: TrajectoryData) -> None:
    """Refuse input built with another POI taxonomy version or other POI/road dimensions."""
    want = state["data"]
    if data.taxonomy_version != want["taxonomy_version"]:
        raise TaxonomyMismatch(
            f"input was built with POI taxonomy version {data.taxonomy_version!r}, the model with "
            f"{want['taxonomy_version']!r}; rebuild the features with taxonomy {want['taxonomy_version']!r} "
            "or train a model on this taxonomy"
        )
    args = state["model_args"]
    if (data.poi_dim, data.road_dim) != (args["poi_dim"], args["road_dim"]):
        raise TaxonomyMismatch(
            f"input has POI/road dims {data.poi_dim}/{data.road_dim}, the model {args['poi_dim']}/{args['road_dim']}"
        )
