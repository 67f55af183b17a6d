"""The rotary turn as an autograd function: the autograd formula's outputs and gradients, less kept for backward."""

from __future__ import annotations

import torch

from transfertraj.model.rotary import rotate_halves


def autograd_turn(qk: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """TrieAttention.rotate's turn as it was before the function (commit 1545dec), autograd operations."""
    half = qk.shape[-1] // 2
    cos, sin = ang.cos().to(qk.dtype), ang.sin().to(qk.dtype)
    swapped = torch.cat([qk[..., half:], qk[..., :half]], dim=-1)
    return qk * torch.cat([cos, cos], dim=-1) + swapped * torch.cat([-sin, sin], dim=-1)


def inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(3, 5, 2, 4, 8, generator=g, dtype=dtype, requires_grad=True)  # (B, L, q/k, H, dh)
    ang = (torch.randn(3, 5, 1, 4, 4, generator=g, dtype=dtype) * 3).requires_grad_()  # shared by q and k
    return qk, ang


def test_outputs_and_gradients_equal_the_autograd_turn():
    qk, ang = inputs()
    out, ref = rotate_halves(qk, ang), autograd_turn(qk, ang)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the same operations forward
    dy = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, [qk, ang], dy), torch.autograd.grad(ref, [qk, ang], dy)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(rotate_halves, inputs())


def test_a_turn_keeps_lengths_and_relative_angles():
    qk, ang = inputs()
    out = rotate_halves(qk, ang).detach()
    planes = lambda t: torch.stack([t[..., :4], t[..., 4:]], -1).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(planes(out), planes(qk.detach()))
    # q . k after turning both by the same angle equals q . k unturned (only differences of angles count)
    torch.testing.assert_close((out[:, :, 0] * out[:, :, 1]).sum(-1), (qk[:, :, 0] * qk[:, :, 1]).sum(-1).detach())


def test_keeps_only_the_turned_vectors_and_the_angles():
    qk, ang = inputs()
    kept = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.shape
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = rotate_halves(qk, ang)
    assert sorted(kept.values()) == sorted([out.shape, ang.shape])
    assert qk.untyped_storage().data_ptr() not in kept
