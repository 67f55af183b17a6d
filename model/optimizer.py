"""The training's Adam: torch.optim.Adam's own update on CPU, without torch.optim's Optimizer class.

    from transfertraj.model.optimizer import adam
    opt = adam(params, lr=1e-3)    # param_groups (lr set per step), step(), zero_grad(set_to_none=True),
                                   # state_dict() / load_state_dict() in torch.optim.Adam's format

Why: every method of torch.optim.Optimizer, its constructor included, runs through torch._disable_dynamo,
which imports torch._dynamo on its first call: 149 MB of resident memory that a CPU training process never
uses, at 64 x 120 a tenth of the peak that issue #18 caps at 1.5 GB. This class holds the same state and
calls the same function that torch.optim.Adam calls on CPU with its defaults (no weight decay, no amsgrad,
not foreach: torch.optim.adam._single_tensor_adam), so the numbers are torch's, bit for bit
(tests/model/test_optimizer.py compares every parameter and state tensor over several steps, and the state
dicts both ways: a checkpoint of either loads into the other).

That function is private to torch: where it is missing (another torch) or a parameter is not on the CPU (the
CUDA path is foreach, and the host memory matters less there), `adam` returns torch.optim.Adam itself.
"""

from __future__ import annotations

import importlib

import torch

try:  # the module (torch.optim.adam as an attribute may be its function of the same name)
    _update = getattr(importlib.import_module("torch.optim.adam"), "_single_tensor_adam", None)
except ImportError:
    _update = None

# torch.optim.Adam's param_group entries at its defaults, as its state_dict writes them (the test checks
# that torch's own state dict has exactly these keys)
DEFAULTS = {
    "betas": (0.9, 0.999),
    "eps": 1e-08,
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": False,
}


def adam(params, lr: float = 1e-3):
    """Adam at torch's defaults but lr: this module's class on CPU, torch.optim.Adam elsewhere."""
    params = list(params)
    if _update is None or any(p.device.type != "cpu" for p in params):
        return torch.optim.Adam(params, lr=lr)
    return CpuAdam(params, lr=lr)


class CpuAdam:
    """torch.optim.Adam(params, lr) for CPU parameters, one parameter group (module docstring)."""

    def __init__(self, params, lr: float):
        self.param_groups = [{"params": list(params), "lr": lr, **DEFAULTS}]
        self.state: dict[torch.Tensor, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients")
            state = self.state.get(p)
            if state is None:  # as torch.optim.Adam._init_group: a CPU step counter, zero moments
                state = self.state[p] = {
                    "step": torch.tensor(0.0, dtype=_scalar_dtype()),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        _update(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            None,
            None,
            amsgrad=False,
            has_complex=any(torch.is_complex(p) for p in params),
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=0.0,
            eps=group["eps"],
            maximize=False,
            capturable=False,
            differentiable=False,
            decoupled_weight_decay=False,
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    def state_dict(self) -> dict:
        """torch.optim.Adam's format: state by parameter index, the group with indices for parameters."""
        group = self.param_groups[0]
        index = {id(p): i for i, p in enumerate(group["params"])}
        return {
            "state": {index[id(p)]: dict(s) for p, s in self.state.items()},
            "param_groups": [{**{k: v for k, v in group.items() if k != "params"}, "params": list(index.values())}],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """From this class's or torch.optim.Adam's state_dict (one group, the same parameters in order)."""
        (saved,) = state_dict["param_groups"]
        group = self.param_groups[0]
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(
                f"optimizer state for {len(saved['params'])} parameters, this one has {len(group['params'])}"
            )
        maths = ("weight_decay", "amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")
        unsupported = {k: saved[k] for k in maths if saved.get(k, DEFAULTS[k]) != DEFAULTS[k]}
        if unsupported:
            raise ValueError(f"optimizer state with settings this Adam does not implement: {unsupported}")
        group.update(lr=saved["lr"], betas=tuple(saved["betas"]), eps=saved["eps"])
        by_index = dict(zip(saved["params"], group["params"]))
        self.state = {
            by_index[i]: {
                k: v.to(device="cpu", copy=True) if k == "step" else v.to(by_index[i], copy=True) for k, v in s.items()
            }
            for i, s in state_dict["state"].items()
        }


def _scalar_dtype() -> torch.dtype:
    """The step counter's dtype, as torch.optim's _get_scalar_dtype (unfused)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


__all__ = ["adam", "CpuAdam"]
