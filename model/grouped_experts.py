"""The SC-MoE's experts and their weighted sum (model/transfertraj.py) as one autograd function that keeps
little for the backward pass.

    from transfertraj.model.grouped_experts import expert_mixture
    y = expert_mixture(x, tok, weight, counts, w1, b1, w2, b2)
    # x (N, d) tokens; the n = N*k (token, expert) assignments grouped by expert (counts[e] rows for expert e,
    # in expert order): tok (n,) their token, weight (n,) their gate weight; w1 (C, d, h), b1 (C, h),
    # w2 (C, h, d), b2 (C, d) -> y (N, d): y[t] = sum over t's assignments i of weight[i] * MLP_e(x[t]),
    # MLP_e(u) = gelu(u @ w1[e] + b1[e]) @ w2[e] + b2[e]

Why a function of its own: written with autograd operations, a training step keeps the gathered rows
x[tok] (n, d), the pre-activation (n, h), its GELU (n, h), the experts' outputs (n, d) and their weighted
copy (n, d) until backward, 105 MB per layer at 64 x 120 (N = 7,680 real points, k = 4), each expert's slice a
buffer of its own whose size follows the routing and so changes every step; glibc's heap, which reuses a
freed hole only for a request that fits in it, grew by about 50 MB a step (issue #18, bench/README.md). Here
the backward keeps x, the weights and the pre-activation (34 MB) and recomputes the rest from them: the GELU
and the gather (the same operations on the same numbers), and the gate weights' gradient through the product
it computes anyway, by linearity: <dy, g w2 + b2> = <dy w2^T, g> + <dy, b2>. The pre-activation is kept, not
recomputed: recomputing it (a gather and one matrix product per expert) cost about 60 ms of a 1.2 s step at
64 x 120, and since the training step no longer imports torch._dynamo (model/optimizer.py) its 30 MB a
layer fit under issue #18's memory cap. Every buffer is one (n, .) block whose size does not depend on the
routing.

Under autocast the products run in the autocast dtype, as torch.addmm does there, and the weighted sum in
the weights' dtype; gradients come back in each input's own dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expert_mixture(
    x: torch.Tensor,
    tok: torch.Tensor,
    weight: torch.Tensor,
    counts: list[int],
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
) -> torch.Tensor:
    """y[t] = sum of weight[i] * MLP_e(x[t]) over the assignments i of token t (e: the expert whose block of
    `counts` holds i). -> (N, d) in x's dtype."""
    kind = x.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
    with torch.autocast(kind, enabled=False):
        return _ExpertMixture.apply(x, tok, weight, w1, b1, w2, b2, blocks(counts), dtype)


def blocks(counts: list[int]) -> list[tuple[int, int, int]]:
    """(expert, first row, end row) of every expert with at least one row."""
    out, start = [], 0
    for e, c in enumerate(counts):
        if c:
            out.append((e, start, start + c))
        start += c
    return out


def _hidden(xs, w1, b1, spans) -> torch.Tensor:
    """The pre-activation (n, hidden): each gathered row xs (n, d) through its expert's first layer."""
    h = xs.new_empty(len(xs), w1.shape[-1])
    for e, a, b in spans:
        torch.addmm(b1[e].to(xs.dtype), xs[a:b], w1[e].to(xs.dtype), out=h[a:b])
    return h


class _ExpertMixture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tok, weight, w1, b1, w2, b2, spans, dtype):
        h = _hidden(x.to(dtype)[tok], w1, b1, spans)  # (n, hidden), kept for backward
        g = F.gelu(h)  # (n, hidden)
        out = g.new_empty(len(tok), w2.shape[-1])  # (n, d)
        for e, a, b in spans:
            torch.addmm(b2[e].to(dtype), g[a:b], w2[e].to(dtype), out=out[a:b])
        del g
        w = weight.unsqueeze(-1)  # in place where no promotion is lost (autocast: bf16 outputs, fp32 weights)
        weighted = out.mul_(w) if out.dtype == torch.promote_types(out.dtype, w.dtype) else out * w
        y = torch.zeros_like(x).index_add_(0, tok, weighted.to(x.dtype))
        ctx.save_for_backward(x, tok, weight, w1, b1, w2, b2, h)
        ctx.spans, ctx.dtype, ctx.param_dtypes = spans, dtype, (w1.dtype, b1.dtype, w2.dtype, b2.dtype)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, tok, weight, w1, b1, w2, b2, h = ctx.saved_tensors
        spans, dtype = ctx.spans, ctx.dtype
        need_x, _, need_weight, need_w1, need_b1, need_w2, need_b2, _, _ = ctx.needs_input_grad
        dys = grad_y.to(torch.promote_types(dtype, weight.dtype))[tok]  # (n, d): each assignment's dy
        dout = (dys * weight.unsqueeze(-1)).to(dtype)  # (n, d): gradient of the experts' outputs
        g = F.gelu(h)  # recomputed: the forward kept only its input
        # Experts without rows get zero gradients, as a loop that skips them would leave them.
        dw2 = torch.zeros(w2.shape, dtype=dtype, device=w2.device) if need_w2 else None
        db2 = torch.zeros(w2.shape[0], w2.shape[2], dtype=dtype, device=w2.device) if need_b2 else None
        for e, a, b in spans:
            if need_w2:
                torch.mm(g[a:b].t(), dout[a:b], out=dw2[e])
            if need_b2:
                torch.sum(dout[a:b], 0, out=db2[e])
        del dout
        dweight = dx = dw1 = db1 = None
        if need_weight or need_x or need_w1 or need_b1:
            dg = torch.empty_like(h)  # (n, hidden): dy w2^T per assignment, before its weight
            dys_c = dys.to(dtype)
            dweight = torch.empty_like(weight) if need_weight else None
            for e, a, b in spans:
                torch.mm(dys_c[a:b], w2[e].to(dtype).t(), out=dg[a:b])
                if need_weight:  # <dy, g w2 + b2> = <dy w2^T, g> + <dy, b2>
                    wt = dweight.dtype
                    dweight[a:b] = (dg[a:b].to(wt) * g[a:b].to(wt)).sum(-1) + dys[a:b] @ b2[e].to(dys.dtype)
            del g, dys_c
            dg.mul_(weight.to(dtype).unsqueeze(-1))  # now the gradient of the GELU's output
            dh = torch.ops.aten.gelu_backward(dg, h)
            del dg, h
            if need_w1:  # the gather again: kept from the recomputation, it would add to backward's peak
                xs = x.to(dtype)[tok]
                dw1 = torch.zeros(w1.shape, dtype=dtype, device=w1.device)
                for e, a, b in spans:
                    torch.mm(xs[a:b].t(), dh[a:b], out=dw1[e])
                del xs
            if need_b1:
                db1 = torch.zeros(w1.shape[0], w1.shape[2], dtype=dtype, device=w1.device)
                for e, a, b in spans:
                    torch.sum(dh[a:b], 0, out=db1[e])
            if need_x:
                dxs = torch.empty(len(tok), w1.shape[1], dtype=dtype, device=x.device)  # (n, d)
                for e, a, b in spans:
                    torch.mm(dh[a:b], w1[e].to(dtype).t(), out=dxs[a:b])
                dx = torch.zeros_like(x).index_add_(0, tok, dxs.to(x.dtype))
        grads = [None if g is None else g.to(t) for g, t in zip((dw1, db1, dw2, db2), ctx.param_dtypes)]
        return dx, None, dweight, *grads, None, None


__all__ = ["expert_mixture"]
