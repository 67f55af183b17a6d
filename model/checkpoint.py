"""The checkpoint file: its format, an atomic save, a load that upgrades old files, and the check that
input data fits the model.

    from transfertraj.model.checkpoint import load_model, check_compatible
    model, state = load_model("var/ckpt/porto/best.pt")    # (TransferTraj in eval mode, checkpoint dict)
    check_compatible(state, data)                           # TaxonomyMismatch when the input cannot fit

A checkpoint is one `torch.save` dict (`new_state` builds it): format tag, model arguments, weights,
the resolved training config and the description of the data it was trained on
(`TrajectoryData.describe()`: table version, POI taxonomy, dims, phi, coordinate convention). It is read with
`weights_only=True`, and loading it needs this module and the network only, never the training loop:
registry and serving import it, not `transfertraj.model.train`.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch

from transfertraj.model.trajectory_data import TaxonomyMismatch, TrajectoryData
from transfertraj.model.transfertraj import ModelArgs, TransferTraj

log = logging.getLogger("transfertraj.model")

CHECKPOINT_FORMAT = "transfertraj-checkpoint/1"
_warned: set[str] = set()  # each "cannot check" warning once per process, not once per request


class ContextMismatch(TaxonomyMismatch):
    """Input whose context was built with another radius phi, or positions in another convention."""


def new_state(model: TransferTraj, data: dict, train_config: dict, /, **fields) -> dict:
    """A checkpoint dict (weights go in `fields["model"]`): the one place that writes the format tag, so
    training and the evaluation's untrained starts produce files `load_checkpoint` reads alike."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_args": model.args.to_dict(),
        "train_config": train_config,
        "data": data,
        **fields,
    }


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
    state["model_args"].setdefault("curve_input", False)  # written before the curve offset input existed
    return state


def load_model(path_or_state, map_location="cpu") -> tuple[TransferTraj, dict]:
    """Rebuild the model from a checkpoint alone: (model in eval mode, checkpoint dict)."""
    state = load_checkpoint(path_or_state, map_location)
    model = TransferTraj(args=ModelArgs(**state["model_args"]))
    model.load_state_dict(state["model"])
    return model.eval(), state


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def check_compatible(state: dict, data: TrajectoryData) -> None:
    """Refuse input built with another POI taxonomy version, other POI/road dimensions, another radius
    phi, or another coordinate convention. A checkpoint written before phi was recorded (or input whose
    cities have no config) cannot be checked for phi: that is a warning, not a refusal. Input without
    any context (no OSM) has no phi to compare."""
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
    have = data.describe()
    if "coordinates" not in want:
        _warn_once("checkpoint records no coordinate convention (written before it was recorded): assuming today's")
    elif want["coordinates"] != have["coordinates"]:
        raise ContextMismatch(
            f"the model reads positions as {want['coordinates']!r}, this input is {have['coordinates']!r}; "
            "re-train the model with this version of transfertraj (transfertraj pretrain / finetune)"
        )
    model_phi, input_phi = want.get("phi_m"), have["phi_m"]
    if data.context_missing.all():
        return  # no POI/road context at all (a city without OSM): phi does not apply
    if "phi_m" not in want:
        _warn_once("checkpoint records no context radius phi (written before phi was recorded): not checked")
    elif (model_phi is None) != (input_phi is None):
        _warn_once(
            f"cannot check the context radius phi: the model records {model_phi}, the input {input_phi} "
            "(a city without a config file)"
        )
    elif model_phi != input_phi:
        raise ContextMismatch(
            f"the model's POI/road densities were built with phi = {model_phi} m, this input's with phi = "
            f"{input_phi} m: the same density would mean another neighbourhood. Set phi_m: {model_phi} in the "
            "city config and rebuild its context and features (transfertraj context / featurize --city ...), "
            "or pretrain a model on features built with this phi"
        )
