"""model/optimizer.py: torch.optim.Adam's numbers and state dict, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from transfertraj.model import optimizer
from transfertraj.model.optimizer import CpuAdam, adam

needs_update = pytest.mark.skipif(optimizer._update is None, reason="this torch has no _single_tensor_adam")


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))


def _steps(model, opt, n, *, lrs=None, first=0):
    for i in range(first, first + n):
        g = torch.Generator().manual_seed(100 + i)
        x = torch.randn(16, 5, generator=g)
        if lrs:
            for group in opt.param_groups:
                group["lr"] = lrs[i]
        model(x).pow(2).mean().backward()
        if i % 3 == 2:  # a parameter without a gradient this step: skipped, as torch skips it
            model[2].bias.grad = None
        opt.step()
        opt.zero_grad(set_to_none=True)


@needs_update
def test_the_same_numbers_and_state_as_torch_adam():
    ours, theirs = _model(), _model()
    opt_ours, opt_theirs = adam(ours.parameters(), lr=3e-3), torch.optim.Adam(theirs.parameters(), lr=3e-3)
    assert isinstance(opt_ours, CpuAdam)
    lrs = [3e-3 * (1 - i / 10) for i in range(8)]  # the training sets lr per step (cosine_lr)
    _steps(ours, opt_ours, 8, lrs=lrs)
    _steps(theirs, opt_theirs, 8, lrs=lrs)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)  # bit for bit
    sd_ours, sd_theirs = opt_ours.state_dict(), opt_theirs.state_dict()
    assert sd_ours["param_groups"] == sd_theirs["param_groups"]  # every key torch writes, and no other
    assert sd_ours["state"].keys() == sd_theirs["state"].keys()
    for i, s in sd_theirs["state"].items():
        assert s.keys() == sd_ours["state"][i].keys()
        for k, v in s.items():
            assert v.dtype == sd_ours["state"][i][k].dtype and torch.equal(v, sd_ours["state"][i][k]), (i, k)


@needs_update
def test_a_checkpoint_of_either_resumes_in_the_other():
    # torch's state into ours, and ours into torch's, then both continue: the same numbers as one Adam throughout
    ref, a, b = _model(), _model(), _model()
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2)
    _steps(ref, opt_ref, 7)
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2)
    _steps(a, opt_a, 4)
    b.load_state_dict(a.state_dict())
    opt_b = adam(b.parameters(), lr=0.5)  # lr from the checkpoint wins, as in torch
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.param_groups[0]["lr"] == 1e-2
    _steps(b, opt_b, 2, first=4)
    a.load_state_dict(b.state_dict())
    opt_a2 = torch.optim.Adam(a.parameters(), lr=0.5)
    opt_a2.load_state_dict(opt_b.state_dict())
    _steps(a, opt_a2, 1, first=6)
    for x, y in zip(ref.parameters(), a.parameters()):
        assert torch.equal(x, y)


@needs_update
def test_a_state_with_settings_it_does_not_implement_is_refused():
    model = _model()
    other = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.1)
    _steps(model, other, 1)
    with pytest.raises(ValueError, match="weight_decay"):
        adam(model.parameters()).load_state_dict(other.state_dict())


def test_training_step_does_not_import_dynamo():
    probe = (
        "import sys, torch\n"
        "from transfertraj.model.optimizer import adam\n"
        "m = torch.nn.Linear(3, 2)\n"
        "opt = adam(m.parameters(), lr=1e-3)\n"
        "m(torch.ones(4, 3)).sum().backward(); opt.step(); opt.zero_grad(set_to_none=True); opt.state_dict()\n"
        "print(type(opt).__name__, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    if optimizer._update is None:
        assert out[0] == "Adam"  # torch's own, which imports it
    else:
        assert out == ["CpuAdam", "False"]


def test_parameters_off_the_cpu_get_torch_adam(monkeypatch):
    monkeypatch.setattr(optimizer, "_update", None)  # as on a torch without the function
    assert isinstance(adam(_model().parameters()), torch.optim.Adam)
