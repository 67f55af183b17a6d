"""LayerNorm followed by a Linear layer as one autograd function that keeps the norm's input, not its output,
for backward (the pre-norm blocks of model/transfertraj.py).

    from transfertraj.model.norm_linear import norm_linear, norm_linear_gelu_mean
    y = norm_linear(x, block.ln, block.proj)      # = block.proj(block.ln(x)), the same numbers
    p = norm_linear_gelu_mean(x, block.ln, block.proj)   # = F.gelu(block.proj(block.ln(x))).mean(dim=1)

Why: written as two autograd operations, the pair keeps both the norm's input (for the norm's backward) and
its output (for the weight gradient of the linear layer): two copies of the stream. The output is one
elementwise pass from the input and the statistics the norm keeps anyway, so the backward recomputes it
(torch.native_layer_norm again: the same numbers) and keeps the input only. In the modality mixer at
64 x 120 that is 15 MB per pair (issue #18). The norm's own backward is torch's kernel.

`norm_linear_gelu_mean` is the mixer's MLP up to its pooling over modalities: autograd would keep the
(N, M, 2d) pre-activation (30 MB at 64 x 120) for the GELU's backward. Here the backward recomputes it with the
linear layer (one matrix product, about 2 % of a training step's CPU time), so only the stream is kept.

Under autocast the norm runs in float32 and the linear layer in the autocast dtype, as autocast runs them;
gradients come back in each parameter's dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def norm_linear(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> torch.Tensor:
    """linear(norm(x)) over x's last dimension (norm with an elementwise affine: the model's LayerNorms)."""
    return _apply(_NormLinear, x, norm, linear)


def _apply(function, x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> torch.Tensor:
    """function.apply with autocast off inside it and the autocast dtype (or None) passed in: the function
    casts as autocast would (module docstring)."""
    kind = x.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    with torch.autocast(kind, enabled=False):
        return function.apply(x, norm.weight, norm.bias, linear.weight, linear.bias, norm.eps, dtype)


def _normed(x, gamma, beta, eps, dtype):
    """The forward's norm: (stream kept for backward, normed z, mean, rstd, the linear layer's dtype)."""
    stream = x.float() if dtype is not None else x  # autocast runs layer_norm in float32
    z, mean, rstd = torch.native_layer_norm(stream, (x.shape[-1],), gamma, beta, eps)
    return stream, z, mean, rstd, dtype or z.dtype


def _norm_backward(ctx, dz, stream, mean, rstd, gamma, beta):
    """The norm's backward from the gradient at its output (rows x d, any float dtype): (dx, dgamma, dbeta)."""
    need_x, need_gamma, need_beta = ctx.needs_input_grad[:3]
    dx, dgamma, dbeta = torch.ops.aten.native_layer_norm_backward(
        dz.to(stream.dtype).view(stream.shape),
        stream,
        (stream.shape[-1],),
        mean,
        rstd,
        gamma,
        beta,
        [need_x, need_gamma, need_beta],
    )
    return (None if dx is None else dx.to(ctx.x_dtype)), dgamma, dbeta


class _NormLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, weight, bias, eps, dtype):
        stream, z, mean, rstd, dt = _normed(x, gamma, beta, eps, dtype)
        y = F.linear(z.to(dt), weight.to(dt), None if bias is None else bias.to(dt))
        ctx.save_for_backward(stream, mean, rstd, gamma, beta, weight)
        ctx.eps, ctx.dt, ctx.x_dtype, ctx.has_bias = eps, dt, x.dtype, bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        stream, mean, rstd, gamma, beta, weight = ctx.saved_tensors
        need_x, need_gamma, need_beta, need_w, need_b, _, _ = ctx.needs_input_grad
        d = stream.shape[-1]
        dy = grad_y.to(ctx.dt).reshape(-1, grad_y.shape[-1])  # (rows, out)
        dw = db = dx = dgamma = dbeta = None
        if need_w:
            z = torch.native_layer_norm(stream, (d,), gamma, beta, ctx.eps)[0]  # recomputed: the same numbers
            dw = (dy.t() @ z.reshape(-1, d).to(ctx.dt)).to(weight.dtype)
            del z
        if need_b and ctx.has_bias:
            db = dy.sum(0).to(weight.dtype)
        if need_x or need_gamma or need_beta:
            dx, dgamma, dbeta = _norm_backward(ctx, dy @ weight.to(ctx.dt), stream, mean, rstd, gamma, beta)
        return dx, dgamma, dbeta, dw, db, None, None


def norm_linear_gelu_mean(x: torch.Tensor, norm: nn.LayerNorm, linear: nn.Linear) -> torch.Tensor:
    """F.gelu(linear(norm(x))).mean(dim=1): x (N, M, d) -> (N, hidden)."""
    return _apply(_NormLinearGeluMean, x, norm, linear)


class _NormLinearGeluMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, weight, bias, eps, dtype):
        stream, z, mean, rstd, dt = _normed(x, gamma, beta, eps, dtype)
        pooled = F.gelu(F.linear(z.to(dt), weight.to(dt), None if bias is None else bias.to(dt))).mean(dim=1)
        ctx.save_for_backward(stream, mean, rstd, gamma, beta, weight, bias)
        ctx.eps, ctx.dt, ctx.x_dtype = eps, dt, x.dtype
        return pooled

    @staticmethod
    def backward(ctx, grad_pooled):
        stream, mean, rstd, gamma, beta, weight, bias = ctx.saved_tensors
        need_x, need_gamma, need_beta, need_w, need_b, _, _ = ctx.needs_input_grad
        d, dt = stream.shape[-1], ctx.dt
        z = torch.native_layer_norm(stream, (d,), gamma, beta, ctx.eps)[0].to(dt)  # recomputed: the same numbers
        h = F.linear(z, weight.to(dt), None if bias is None else bias.to(dt))  # (N, M, hidden), recomputed
        # the mean's backward (each token gets grad / M: divided before it is broadcast, the same numbers
        # for M times fewer divisions), then the GELU's
        dh = torch.ops.aten.gelu_backward((grad_pooled.to(dt) / h.shape[1]).unsqueeze(1).expand(h.shape), h)
        del h
        dh2 = dh.reshape(-1, dh.shape[-1])  # (N*M, hidden)
        dw = (dh2.t() @ z.reshape(-1, d)).to(weight.dtype) if need_w else None
        db = dh2.sum(0).to(bias.dtype) if need_b and bias is not None else None
        del z
        dx = dgamma = dbeta = None
        if need_x or need_gamma or need_beta:
            dz = dh2 @ weight.to(dt)
            del dh, dh2
            dx, dgamma, dbeta = _norm_backward(ctx, dz, stream, mean, rstd, gamma, beta)
        return dx, dgamma, dbeta, dw, db, None, None


__all__ = ["norm_linear", "norm_linear_gelu_mean"]
