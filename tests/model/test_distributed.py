"""DistributedDataParallel smoke test: 2 CPU processes with gloo, the same code path torchrun uses."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.model.generated import generated_features, tiny_args
from transfertraj.model.checkpoint import load_checkpoint
from transfertraj.model.train import TrainConfig, fit
from transfertraj.model.trajectory_data import load_features
from transfertraj.model.transfertraj import TransferTraj


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    data = load_features(generated_features(40), data_version=1)
    torch.manual_seed(0)
    model = TransferTraj(args=tiny_args())
    fit(model, data, TrainConfig(epochs=1, batch_size=8, progress=False, device="cpu"), out_dir)
    torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_ddp_two_process_gloo(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    torch.manual_seed(0)
    init = TransferTraj(args=tiny_args()).state_dict()
    for k in r0:
        torch.testing.assert_close(r1[k], r0[k], msg=k)  # gradients were averaged: ranks agree
    assert any(not torch.equal(r0[k], init[k]) for k in r0)  # and they trained
    state = load_checkpoint(tmp_path / "last.pt")  # written once, by rank 0
    assert state["epoch"] == 0 and state["data"]["n_train"] == 32
