"""LayerNorm then Linear as one autograd function: the two modules' outputs and gradients, the norm's output
not kept for backward."""

from __future__ import annotations

import pytest
import torch

from transfertraj.model.norm_linear import norm_linear, norm_linear_gelu_mean


def modules(dtype=torch.float64):
    torch.manual_seed(0)
    norm, linear = torch.nn.LayerNorm(6), torch.nn.Linear(6, 5)
    torch.nn.init.normal_(norm.weight, 1.0, 0.3)
    torch.nn.init.normal_(norm.bias, 0.0, 0.3)
    return norm.to(dtype), linear.to(dtype)


@pytest.mark.parametrize("shape", [(7, 6), (3, 4, 6)])
def test_outputs_and_every_gradient_equal_the_two_modules(shape):
    norm, linear = modules()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y, ref = norm_linear(x, norm, linear), linear(norm(x))
    torch.testing.assert_close(y, ref, rtol=0, atol=0)  # the same kernels forward
    params = [x, norm.weight, norm.bias, linear.weight, linear.bias]
    dy = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, params, dy), torch.autograd.grad(ref, params, dy)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, *p: norm_linear(x, norm, linear), (x,))


def test_autocast_runs_the_norm_in_float32_and_the_projection_in_bf16():
    norm, linear = modules(torch.float32)
    x = torch.randn(4, 3, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, ref = norm_linear(x, norm, linear), linear(norm(x))
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    y.float().square().sum().backward()
    assert linear.weight.grad.dtype == norm.weight.grad.dtype == x.grad.dtype == torch.float32


def test_keeps_the_input_not_the_normed_copy():
    norm, linear = modules()
    x = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    kept = []

    def pack(t):
        kept.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        norm_linear(x, norm, linear)
    assert sum(1 for s in kept if s == x.shape) == 1  # x itself; the (50, 6) norm output is not kept


def test_pooled_mlp_equals_the_modules_and_keeps_only_the_stream():
    norm, linear = modules()
    x = torch.randn(9, 4, 6, dtype=torch.float64, requires_grad=True)  # (N, M, d)
    kept = []

    def pack(t):
        kept.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = norm_linear_gelu_mean(x, norm, linear)
    ref = torch.nn.functional.gelu(linear(norm(x))).mean(dim=1)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    assert kept.count(x.shape) == 1 and (9, 4, 5) not in kept  # the stream, not the (N, M, hidden) pre-activation
    params = [x, norm.weight, norm.bias, linear.weight, linear.bias]
    dy = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, params, dy), torch.autograd.grad(ref, params, dy)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: norm_linear_gelu_mean(x, norm, linear), (x,))
