"""model.predict's batch scheduling (the answers' parity with one padded batch: tests/transfertraj/test_serve.py)."""

import threading

import numpy as np
import torch

from transfertraj.model.predict import batches_in_parallel


def test_batches_run_side_by_side_on_one_torch_thread_each_and_come_back_in_order():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    both_running = threading.Barrier(2)  # the first two batches wait for each other: only threads pass it
    seen = []

    def answered(positions):
        if positions[0] < 2:
            both_running.wait(timeout=30)
        seen.append(torch.get_num_threads())
        return positions * 10

    batches = [np.array([i]) for i in range(5)]
    try:
        out = batches_in_parallel(answered, batches, workers=2)
        assert [o.tolist() for o in out] == [[0], [10], [20], [30], [40]]
        assert seen == [1] * 5  # a core per batch, not two threads fighting over each operation
        assert torch.get_num_threads() == 2  # the caller's count is back
        assert [o.tolist() for o in batches_in_parallel(answered, batches[2:], workers=1)] == [[20], [30], [40]]
    finally:
        torch.set_num_threads(previous)
