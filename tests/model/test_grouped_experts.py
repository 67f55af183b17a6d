"""The SC-MoE's experts as one autograd function: the same outputs, gradients and training losses as the
experts written with autograd operations, and less kept for backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import transfertraj.model.transfertraj as network
from tests.model.generated import tiny_args
from transfertraj.model.grouped_experts import expert_mixture
from transfertraj.model.trajectory_data import Collator, TrajectoryDataset, load_features


def autograd_mixture(x, tok, weight, counts, w1, b1, w2, b2):
    """The experts as ScMoE computed them before this function (commit 1545dec): autograd operations, one
    matmul pair per expert's slice, the weighted rows added back onto their tokens."""
    outs = []
    for e, xe in enumerate(x[tok].split(counts)):
        if xe.shape[0]:
            h = F.gelu(torch.addmm(b1[e].to(xe.dtype), xe, w1[e].to(xe.dtype)))
            outs.append(torch.addmm(b2[e].to(xe.dtype), h, w2[e].to(xe.dtype)))
    out = torch.cat(outs) if outs else x.new_zeros(0, x.shape[-1])
    return x.new_zeros(x.shape).index_add_(0, tok, (out * weight.unsqueeze(-1)).to(x.dtype))


def routed(n_tokens: int, n_experts: int = 6, k: int = 2, d: int = 8, hidden: int = 12, seed: int = 0):
    """Random tokens, parameters and a top-k routing sorted by expert, as ScMoE builds it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, d, generator=g, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(n_tokens, n_experts, generator=g, dtype=torch.float64, requires_grad=True)
    top, idx = logits.topk(k, dim=-1)
    order = idx.reshape(-1).argsort(stable=True)
    tok = torch.div(order, k, rounding_mode="floor")
    weight = top.softmax(-1).reshape(-1)[order]
    counts = torch.bincount(idx.reshape(-1), minlength=n_experts).tolist()
    params = [
        (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
        for shape in ((n_experts, d, hidden), (n_experts, hidden), (n_experts, hidden, d), (n_experts, d))
    ]
    return x, logits, tok, weight, counts, params


@pytest.mark.parametrize("n_tokens", [0, 1, 3, 50])
def test_outputs_and_every_gradient_equal_the_autograd_experts(n_tokens):
    """Float64, so a wrong term shows; 3 tokens with k=2 of 6 experts leave experts without rows (zero grads)."""
    x, logits, tok, weight, counts, params = routed(n_tokens)
    y = expert_mixture(x, tok, weight, counts, *params)
    ref = autograd_mixture(x, tok, weight, counts, *params)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    if n_tokens == 3:
        assert 0 in counts
    if n_tokens:
        dy = torch.randn_like(y)
        inputs = [x, logits, *params]
        got = torch.autograd.grad(y, inputs, dy, retain_graph=True)  # the routing graph is shared
        want = torch.autograd.grad(ref, inputs, dy)
        for name, a, b in zip(["x", "gate logits", "w1", "b1", "w2", "b2"], got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_gradcheck():
    x, logits, tok, weight, counts, params = routed(5, n_experts=3, k=2, d=3, hidden=4, seed=1)
    assert torch.autograd.gradcheck(lambda x, wt, *p: expert_mixture(x, tok, wt, counts, *p), (x, weight, *params))


def test_frozen_experts_give_the_input_gradient_only():
    x, _, tok, weight, counts, params = routed(20)
    frozen = [p.detach() for p in params]
    (dx,) = torch.autograd.grad(expert_mixture(x, tok, weight.detach(), counts, *frozen).sum(), [x])
    (dx_ref,) = torch.autograd.grad(autograd_mixture(x, tok, weight.detach(), counts, *frozen).sum(), [x])
    torch.testing.assert_close(dx, dx_ref, rtol=1e-10, atol=1e-12)


def test_autocast_computes_in_its_dtype_and_returns_gradients_in_the_parameters():
    x, _, tok, weight, counts, params = routed(40)
    x32, w32 = x.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    p32 = [p.detach().float().requires_grad_() for p in params]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = expert_mixture(x32, tok, w32, counts, *p32)
        ref = autograd_mixture(x32, tok, w32, counts, *p32)
    assert y.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=0, atol=0)  # same bf16 products, same fp32 sum
    y.square().sum().backward()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in [x32, w32, *p32])


def test_saves_less_for_backward_than_the_autograd_experts():
    """What the graph keeps, counted by storage: the function keeps x, the gate weights, the parameters and
    the (n, hidden) pre-activation, nothing else."""
    x, _, tok, weight, counts, params = routed(400, n_experts=8, k=4, d=32, hidden=64)

    def kept(fn) -> int:
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x, tok, weight, counts, *params)
        leaves = {t.untyped_storage().data_ptr() for t in [x, weight, tok, *params]}
        return sum(n for ptr, n in storages.items() if ptr not in leaves)

    n, hidden, d = 1600, 64, 32
    assert kept(expert_mixture) == n * hidden * x.element_size()  # its inputs and the pre-activation
    assert kept(autograd_mixture) >= n * (2 * hidden + 3 * d) * 8


def test_training_losses_equal_those_of_the_autograd_experts(features_df):
    """Ten Adam steps of the tiny model (fixed seed, router noise on): the same losses either way."""
    data = load_features(features_df, data_version=1)
    ds = TrajectoryDataset(data)
    batch, targets = Collator(task="pretrain", seed=0)([ds[i] for i in range(8)])

    def losses() -> list[float]:
        torch.manual_seed(0)
        model = network.TransferTraj(args=tiny_args())
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        out = []
        for _ in range(10):
            _, loss = model(batch, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    ours = losses()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(network, "expert_mixture", autograd_mixture)
        reference = losses()
    assert ours[-1] < ours[0]
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=0)
