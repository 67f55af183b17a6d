"""Rotary turn of query/key vectors by per-point angles, as an autograd function that keeps for backward only
what attention keeps anyway (TrieAttention, model/transfertraj.py).

    from transfertraj.model.rotary import rotate_halves
    turned = rotate_halves(qk, ang)   # qk (..., dh), ang (..., dh/2) broadcastable -> (..., dh)
    # planes (u1, u2) = (qk[..., :dh/2], qk[..., dh/2:]) turned by ang: (u1 cos - u2 sin, u1 sin + u2 cos)

Why a function of its own: written with autograd operations the turn keeps the unturned vectors, their
half-swapped copy and [cos, cos], [-sin, sin] until backward (26 MB a layer at 64 x 120, issue #18), and the
unturned vectors hold the whole query/key/value projection alive. The backward needs none of them: the
gradient of the input is the same turn backwards, from cos and sin (recomputed from the angles, the same
numbers), and the gradient of an angle is g2 * out1 - g1 * out2 summed over what shares it (d out1 / d ang =
-out2, d out2 / d ang = out1), from the turned vectors that the attention keeps for its own backward.

cos and sin are taken in the angles' dtype (the caller's float32 for km-scale coordinates) and cast to the
vectors' dtype (bf16 under autocast); the angles' gradient comes back in the angles' dtype.
"""

from __future__ import annotations

import torch


def rotate_halves(qk: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """qk (..., dh) turned plane by plane by ang (..., dh/2), broadcast over qk's leading dimensions."""
    return _RotateHalves.apply(qk, ang)


def _cos_sin(ang: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _swap(u: torch.Tensor) -> torch.Tensor:
    half = u.shape[-1] // 2
    return torch.cat([u[..., half:], u[..., :half]], dim=-1)


def _reduce_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum t over the dimensions that were broadcast from `shape`."""
    dims = [i for i, (n, m) in enumerate(zip(t.shape, shape)) if m == 1 and n != 1]
    return t.sum(dim=dims, keepdim=True) if dims else t


class _RotateHalves(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qk, ang):
        cos, sin = _cos_sin(ang, qk.dtype)
        # [u1 cos - u2 sin, u1 sin + u2 cos] as qk * [cos, cos] + [u2, u1] * [-sin, sin]: two products over
        # whole rows instead of four over strided halves (6x less time on CPU)
        out = qk * torch.cat([cos, cos], dim=-1) + _swap(qk) * torch.cat([-sin, sin], dim=-1)
        ctx.save_for_backward(out, ang)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, ang = ctx.saved_tensors
        cos, sin = _cos_sin(ang, out.dtype)
        grad = grad.to(out.dtype)
        d_qk = d_ang = None
        if ctx.needs_input_grad[0]:  # the turn by -ang: [g1 cos + g2 sin, g2 cos - g1 sin]
            d_qk = grad * torch.cat([cos, cos], dim=-1) + _swap(grad) * torch.cat([sin, -sin], dim=-1)
        if ctx.needs_input_grad[1]:
            half = out.shape[-1] // 2
            g1, g2, o1, o2 = grad[..., :half], grad[..., half:], out[..., :half], out[..., half:]
            d_ang = _reduce_to((g2 * o1 - g1 * o2).to(ang.dtype), ang.shape)
        return d_qk, d_ang


__all__ = ["rotate_halves"]
