import torch

from transfertraj.model.device import limit_threads


def test_threads_are_capped_at_the_cores_and_never_raised(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        monkeypatch.setenv("TRANSFERTRAJ_THREADS", "2")
        assert limit_threads() == 2 == torch.get_num_threads()
        torch.set_num_threads(1)
        assert limit_threads() == 1  # a lower count someone chose stays
    finally:
        torch.set_num_threads(before)
