"""The TransferTraj network: modality embeddings, RTTE layers (TRIE attention + SC-MoE), heads.

    from transfertraj.model.transfertraj import ModelArgs, TransferTraj
    model = TransferTraj(args=ModelArgs(poi_dim=P, road_dim=R))
    outputs, loss = model(batch, targets)      # batch/targets from transfertraj.model.trajectory_data.Collator

A trajectory is a padded sequence of points; every point carries four modalities (relative metres,
four temporal numbers, POI density, road density). Masked values arrive zeroed from the collate
function and are replaced here by learned mask embeddings, so a masked value can never leak.
Shapes: B trajectories, L points (padded), d = args.d_model, H heads, C experts, k active experts.

Two deviations from the paper (docs/evaluation.md measures them): the spatial head predicts an offset from
each point's position proxy (its coordinates when observed, else the interpolation by time between the
observed neighbours: model/position_proxy.py) and starts at zero; `spatial_residual=False` is the paper's
plain linear head. And a hidden point's spatial token carries the curve offset (the step from that straight
line to a smooth curve through the observed neighbours, or constant velocity past the last one), which the
head may add with a weight it learns per point (`curve_input`). Optionally (`road_input`) the same for the
road offset, the step from that line to the shortest path on the city's drive graph (model/road_offsets.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from transfertraj.model.grouped_experts import expert_mixture
from transfertraj.model.norm_linear import norm_linear, norm_linear_gelu_mean
from transfertraj.model.position_proxy import curve_offset, position_proxy
from transfertraj.model.rotary import rotate_halves

POSITIONS = ("trie", "absolute_sincos", "none")
# Per-point batch fields the embedding reads: gathered at the real points before it.
TOKEN_FIELDS = ("xy", "time", "poi", "poi_missing", "road", "road_missing", "mask_s", "mask_t", "road_offset")


@dataclass
class ModelArgs:
    poi_dim: int = 0  # P: POI categories + total, from the features table
    road_dim: int = 0  # R: road classes + nearest-road distance and class, from the features table
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4  # head dim 32: 16 rotary planes per head
    n_experts: int = 8  # C
    top_k: int = 4  # k
    expert_hidden: int = 256  # k=4 experts of 128->256->128 cost about one 128->1024->128 FFN
    ffn_hidden: int = 512  # the plain FFN of the "wo SC-MoE" ablation
    mixer_heads: int = 4
    fourier_freqs: int = 16  # learnable frequencies per temporal feature
    dropout: float = 0.0
    position: str = "trie"  # "trie" | "absolute_sincos" ("wo TRIE") | "none"
    trie_rope_freqs: bool = True  # multiply the learned angles by RoFormer frequencies 10000^(-2k/dh)
    trie_unit_m: float = 10.0  # TRIE sees coordinates in units of 10 m: wavelengths ~60 m .. 6 km at init
    use_moe: bool = True  # False: plain FFN ("wo SC-MoE")
    use_poi: bool = True  # False: "wo POI"
    use_road: bool = True  # False: "wo road"
    router_noise: bool = True  # noisy top-k gating while training; never at inference
    spatial_scale_m: float = 100.0  # fixed, never per region: input MLP, head units and loss scale
    # True: the spatial head predicts an offset from the point's position proxy (its own coordinates
    # when observed, else the index interpolation between observed neighbours), zero at init. A
    # deviation from the paper's plain linear head, measured in docs/evaluation.md.
    spatial_residual: bool = True
    # True: hidden points see the curve offset of model/position_proxy.py as an input, and the spatial head
    # adds it with a learned per-point weight (zero at init). Checkpoints written before it load with False.
    curve_input: bool = True
    # True: hidden points see the TR road offset of model/road_offsets.py (road path minus straight line,
    # batch["road_offset"]) as an input, and the spatial head adds it with a learned per-point weight; both
    # start at zero, so a fine-tune that switches it on starts from its checkpoint's answers. False by
    # default: every checkpoint written before it loads unchanged, and a model without it needs no map.
    road_input: bool = False
    # Loss/head scale per temporal feature: weekday (days), hour, minute of hour, minutes since start.
    # Minute of hour wraps at 60, so its error is weighed in units of 10 minutes.
    temporal_scale: tuple[float, float, float, float] = (1.0, 1.0, 10.0, 1.0)
    aux_loss_weight: float = 0.01  # load-balancing loss weight

    def __post_init__(self):
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError("d_model / n_heads must be an even integer (rotary planes)")
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError("need 1 <= top_k <= n_experts")
        self.temporal_scale = tuple(float(s) for s in self.temporal_scale)

    @property
    def has_poi(self) -> bool:
        return self.use_poi and self.poi_dim > 0

    @property
    def has_road(self) -> bool:
        return self.use_road and self.road_dim > 0

    def to_dict(self) -> dict:
        return asdict(self)


class LearnableFourierTime(nn.Module):
    """cos/sin of each temporal feature times learnable frequencies, projected to d."""

    def __init__(self, *, dim: int, n_freqs: int):
        super().__init__()
        k = torch.arange(1, n_freqs + 1, dtype=torch.float32)
        periodic = [2 * math.pi * k / p for p in (7.0, 24.0, 60.0)]  # weekday, hour, minute harmonics
        elapsed = 2 * math.pi / torch.logspace(0, 3, n_freqs)  # minutes since start: 1 .. 1000 min
        self.freqs = nn.Parameter(torch.stack([*periodic, elapsed]))  # (4, F)
        self.proj = nn.Linear(4 * 2 * n_freqs, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=t.device.type, enabled=False):  # angles need fp32
            ang = t.float().unsqueeze(-1) * self.freqs  # (B, L, 4, F)
            feats = torch.cat([ang.cos(), ang.sin()], dim=-1).flatten(-2)  # (B, L, 8F)
        return self.proj(feats)  # (B, L, d)


class ModalityEmbedding(nn.Module):
    """Four modality vectors per point, masked and missing values replaced by learned vectors."""

    def __init__(self, *, args: ModelArgs):
        super().__init__()
        d = args.d_model
        self.args = args
        self.spatial = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.temporal = LearnableFourierTime(dim=d, n_freqs=args.fourier_freqs)
        self.mask_spatial = nn.Parameter(torch.randn(d) * 0.02)
        if args.curve_input:  # what a hidden point knows of where it is: the curve offset (position_proxy.py)
            self.curve = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        if args.road_input:  # ... and where the road path between its kept neighbours runs (road_offsets.py)
            self.road_path = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
            nn.init.zeros_(self.road_path[2].weight)  # zero at init: switching it on changes no answer
            nn.init.zeros_(self.road_path[2].bias)
        self.mask_temporal = nn.Parameter(torch.randn(d) * 0.02)
        if args.has_poi:
            self.poi = nn.Linear(args.poi_dim, d)
            self.poi_category_missing = nn.Linear(args.poi_dim, d, bias=False)  # one vector per category
            self.mask_poi = nn.Parameter(torch.randn(d) * 0.02)
            self.missing_poi = nn.Parameter(torch.randn(d) * 0.02)
        if args.has_road:
            self.road = nn.Linear(args.road_dim, d)
            self.mask_road = nn.Parameter(torch.randn(d) * 0.02)
            self.missing_road = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, tokens: dict, bend: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """tokens: the batch's fields at its N real points (TransferTraj.forward: padding is never read, so
        it is never embedded), context_missing per point; bend: the curve offset (N, 2) metres, with
        curve_input. -> modality vectors, each (N, d), and the context vector for routing (N, d)."""
        hide_s = tokens["mask_s"].unsqueeze(-1)  # (N, 1)
        hide_t = tokens["mask_t"].unsqueeze(-1)
        s = self.spatial(tokens["xy"] / self.args.spatial_scale_m)  # (N, d)
        t = self.temporal(tokens["time"])  # (N, d)
        masked = self.mask_spatial.to(s.dtype)
        if self.args.curve_input and bend is not None:
            masked = masked + self.curve(bend.to(s.dtype) / self.args.spatial_scale_m)  # (N, d)
        if self.args.road_input:
            masked = masked + self.road_path(road_offset(tokens).to(s.dtype) / self.args.spatial_scale_m)
        mods = [
            torch.where(hide_s, masked, s),
            torch.where(hide_t, self.mask_temporal.to(t.dtype), t),
        ]
        no_ctx = tokens["context_missing"].unsqueeze(-1)  # (N, 1)
        context = torch.zeros_like(mods[0])
        if self.args.has_poi:
            missing = tokens["poi_missing"].to(tokens["poi"].dtype)  # (N, P)
            p = self.poi(tokens["poi"] * (1 - missing)) + self.poi_category_missing(missing)  # (N, d)
            p = torch.where(hide_s, self.mask_poi.to(p.dtype), p)
            p = torch.where(no_ctx, self.missing_poi.to(p.dtype), p)
            mods.append(p)
            context = context + p
        if self.args.has_road:
            r = self.road(tokens["road"])  # (N, d)
            r = torch.where(tokens["road_missing"].unsqueeze(-1), self.missing_road.to(r.dtype), r)
            r = torch.where(hide_s, self.mask_road.to(r.dtype), r)
            r = torch.where(no_ctx, self.missing_road.to(r.dtype), r)
            mods.append(r)
            context = context + r
        return mods, context


class SelfAttention(nn.Module):
    """Plain bidirectional multi-head attention over a short sequence (the modality mixer)."""

    def __init__(self, *, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, norm: nn.LayerNorm | None = None) -> torch.Tensor:
        """x (N, M, d) -> (N, M, d); norm: applied to x first (pre-norm), fused with the projection."""
        N, M, d = x.shape
        qkv = norm_linear(x, norm, self.qkv) if norm is not None else self.qkv(x)  # (N, M, 3d)
        q, k, v = qkv.view(N, M, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)  # (N, H, M, dh)
        # M is 4: scores (N, H, 4, 4) from two batched products, faster on CPU than the fused kernel (sized for
        # long sequences; at 64 x 120 its backward took 110 ms a step against 65 ms), the same attention
        weights = (q @ k.transpose(-2, -1) / math.sqrt(d // self.n_heads)).softmax(dim=-1)  # (N, H, M, M)
        y = weights @ v  # (N, H, M, dh)
        return self.out(y.transpose(1, 2).reshape(N, M, d))


class ModalityMixer(nn.Module):
    """One Transformer block over the per-point sequence of modality vectors, mean-pooled to d."""

    def __init__(self, *, dim: int, n_heads: int, n_modalities: int, dropout: float):
        super().__init__()
        self.kind = nn.Parameter(torch.randn(n_modalities, dim) * 0.02)  # which modality a token is
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim=dim, n_heads=n_heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim), nn.Dropout(dropout))

    def forward(self, mods: list[torch.Tensor]) -> torch.Tensor:
        tokens = torch.stack(mods, dim=1) + self.kind  # (N, M, d): one token per modality of each real point
        # norm and projection fused (model/norm_linear.py): backward keeps the stream, not its normed copy
        tokens = tokens + self.attn(tokens, norm=self.ln1)
        linear, act, out, drop = self.mlp
        if self.training and drop.p > 0:  # dropout draws per token: pool after it
            hidden = act(norm_linear(tokens, self.ln2, linear))  # (N, M, 2d)
            return (tokens + drop(out(hidden))).mean(dim=1)  # (N, d)
        # The mean over modalities commutes with the last (affine) layer: pooled first, it runs on N rows,
        # not N x M. The same answer to float rounding. (act is nn.GELU(): the fused function's GELU.)
        return tokens.mean(dim=1) + drop(out(norm_linear_gelu_mean(tokens, self.ln2, linear)))  # (N, d)


def absolute_sincos(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of ABSOLUTE metric (x, y), wavelengths 10 m .. 100 km ("wo TRIE").

    coords (B, L, 2) float64 metres in the city's CRS -> (B, L, dim) float32.
    """
    n = dim // 4
    wavelengths = torch.logspace(1, 5, n, dtype=torch.float64, device=coords.device)  # (n,)
    ang = coords.double().unsqueeze(-1) * (2 * math.pi / wavelengths)  # (B, L, 2, n)
    enc = torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)  # (B, L, 4n)
    return F.pad(enc, (0, dim - enc.shape[-1])).float()


class TrieAttention(nn.Module):
    """Bidirectional multi-head attention with rotary angles from space: angle = W (x || y), no bias.

    q_i . k_j depends on coordinates only through W (c_i - c_j), so a translation of the whole
    trajectory leaves the attention weights unchanged. With position != "trie" no rotation is applied.
    """

    def __init__(self, *, dim: int, n_heads: int, position: str, rope_freqs: bool, unit_m: float):
        super().__init__()
        self.n_heads, self.head_dim, self.unit_m = n_heads, dim // n_heads, unit_m
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.rotary = position == "trie"
        if self.rotary:
            planes = self.head_dim // 2
            self.phi = nn.Linear(2, n_heads * planes, bias=False)  # bias-free: linear in (x, y)
            freqs = 10000.0 ** (-2 * torch.arange(planes) / self.head_dim) if rope_freqs else torch.ones(planes)
            self.register_buffer("freqs", freqs, persistent=False)

    def rotate(self, qk: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """qk (B, L, 2, H, dh): queries and keys, both turned by the angles of their point in one pass
        (model/rotary.py: one set of elementwise operations for the two, little kept for backward)."""
        B, L, _, H, dh = qk.shape
        with torch.autocast(device_type=qk.device.type, enabled=False):  # angles of km-scale inputs need fp32
            ang = (
                self.phi(coords.to(self.phi.weight.dtype) / self.unit_m).view(B, L, 1, H, dh // 2) * self.freqs
            )  # (B, L, 1, H, dh/2): the same angle for a point's query and key
        return rotate_halves(qk, ang)

    def forward(
        self,
        x: torch.Tensor,
        coords: torch.Tensor,
        valid: torch.Tensor,
        *,
        return_weights: bool = False,
        queries: torch.Tensor | None = None,
        norm: nn.LayerNorm | None = None,
    ):
        """x (B, L, d) -> (B, L, d) and the weights (B, H, L, L) when return_weights. queries (n,): flat
        positions in (B, L), row-major, of the only points whose output is wanted -> (n, d) at them; every
        real point is still a key (RtteLayer's last-layer path). norm: applied to x first (pre-norm), fused
        with the projection (model/norm_linear.py)."""
        B, L, d = x.shape
        qkv = norm_linear(x, norm, self.qkv) if norm is not None else self.qkv(x)
        qkv = qkv.view(B, L, 3, self.n_heads, self.head_dim)  # (B, L, 3, H, dh)
        qk = self.rotate(qkv[:, :, :2], coords) if self.rotary else qkv[:, :, :2]  # (B, L, 2, H, dh)
        q, k = qk.permute(2, 0, 3, 1, 4)  # (B, H, L, dh)
        # v copied out of the projection: attention keeps v for backward, and a view would keep all of qkv
        v = qkv[:, :, 2].transpose(1, 2).contiguous() if self.rotary else qkv[:, :, 2].transpose(1, 2)  # (B, H, L, dh)
        keep = valid.view(B, 1, 1, L)  # padded keys are never attended
        if queries is not None:  # the wanted queries, left-aligned per trajectory: (B, Lq) slots, Lq <= L
            row = torch.div(queries, L, rounding_mode="floor")  # (n,)
            counts = torch.bincount(row, minlength=B)  # (B,)
            slot = torch.arange(len(queries), device=x.device) - (counts.cumsum(0) - counts)[row]  # (n,)
            wanted = qk[:, :, 0].reshape(B * L, self.n_heads, self.head_dim)[queries]  # (n, H, dh)
            q = wanted.new_zeros(B, int(counts.max()) if len(queries) else 0, self.n_heads, self.head_dim)
            q[row, slot] = wanted
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=keep)  # (B, H, Lq, dh)
            return self.out(y.transpose(1, 2)[row, slot].reshape(-1, d)), None  # (n, d)
        if return_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, L, L)
            weights = scores.float().masked_fill(~keep, float("-inf")).softmax(dim=-1)
            y = weights.to(v.dtype) @ v  # (B, H, L, dh)
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, H, L, dh)
        return self.out(y.transpose(1, 2).reshape(B, L, d)), weights


class FeedForward(nn.Module):
    """The plain FFN of the "wo SC-MoE" ablation; same call signature as ScMoE."""

    def __init__(self, *, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, dict | None]:
        return self.net(x), None


class ScMoE(nn.Module):
    """Spatial-context mixture of experts: noisy top-k gating on (token, context), k of C experts.

    Works on the N real tokens only (N, d). Noise only while training, so evaluation is deterministic.
    The load-balancing loss is C * sum_e f_e * P_e (f_e: share of the N*k assignments sent to expert e,
    P_e: mean router probability of e); it is 1 when the load is uniform.
    """

    def __init__(self, *, dim: int, hidden: int, n_experts: int, top_k: int, noise: bool, dropout: float):
        super().__init__()
        self.n_experts, self.top_k, self.noise = n_experts, top_k, noise
        self.gate = nn.Linear(2 * dim, n_experts, bias=False)
        self.noise_scale = nn.Linear(2 * dim, n_experts, bias=False)
        nn.init.zeros_(self.noise_scale.weight)  # noise std softplus(0) = 0.69 at init
        self.w1 = nn.Parameter(torch.randn(n_experts, dim, hidden) / math.sqrt(dim))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.randn(n_experts, hidden, dim) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(n_experts, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, dict]:
        N, d = x.shape
        context = context.to(x.dtype)
        logits = _halves(self.gate, x, context).float()  # (N, C)
        if self.training and self.noise:
            logits = logits + torch.randn_like(logits) * F.softplus(_halves(self.noise_scale, x, context).float())
        top_logits, top_idx = logits.topk(self.top_k, dim=-1)  # (N, k)
        top_w = top_logits.softmax(dim=-1)  # (N, k)

        # Each (token, expert) assignment sorted by expert once (stable: a token's experts keep their
        # top-k order), so each expert reads one contiguous block: one matmul pair per expert, and the
        # weighted sum back onto the tokens, in model/grouped_experts.py (which keeps little for backward).
        # The per-expert boolean search this replaces cost a scan of all N*k assignments and a
        # gather/scatter per expert.
        flat_idx = top_idx.reshape(-1)  # (N*k,)
        order = flat_idx.argsort(stable=True)  # (N*k,) assignments grouped by expert
        tok = torch.div(order, self.top_k, rounding_mode="floor")  # (N*k,) token of each assignment
        counts = torch.bincount(flat_idx, minlength=self.n_experts)  # (C,)
        weight = top_w.reshape(-1)[order]  # (N*k,) gate weight of each assignment
        y = expert_mixture(x, tok, weight, counts.tolist(), self.w1, self.b1, self.w2, self.b2)  # (N, d)

        probs = logits.softmax(dim=-1)  # (N, C)
        frac = counts.float() / max(flat_idx.numel(), 1)
        aux = self.n_experts * (frac * probs.mean(dim=0)).sum()
        return self.drop(y), {"indices": top_idx, "weights": top_w, "aux_loss": aux}


def _halves(layer: nn.Linear, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """layer(cat([x, context], -1)) for a bias-free layer, from the two halves of its weight: no (N, 2d)
    concatenation, which backward would keep (x and context are kept by others already)."""
    d = x.shape[-1]
    return F.linear(x, layer.weight[:, :d]) + F.linear(context, layer.weight[:, d:])


class RtteLayer(nn.Module):
    """TRIE attention block + SC-MoE (or FFN) block, pre-norm residuals."""

    def __init__(self, *, args: ModelArgs):
        super().__init__()
        d = args.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = TrieAttention(
            dim=d,
            n_heads=args.n_heads,
            position=args.position,
            rope_freqs=args.trie_rope_freqs,
            unit_m=args.trie_unit_m,
        )
        self.drop = nn.Dropout(args.dropout)
        self.ln2 = nn.LayerNorm(d)
        if args.use_moe:
            self.ffn = ScMoE(
                dim=d,
                hidden=args.expert_hidden,
                n_experts=args.n_experts,
                top_k=args.top_k,
                noise=args.router_noise,
                dropout=args.dropout,
            )
        else:
            self.ffn = FeedForward(dim=d, hidden=args.ffn_hidden, dropout=args.dropout)

    def forward(self, h, coords, valid, context, *, return_weights=False, rows=None):
        """rows (n,): flat positions in (B, L), row-major, of the points whose output is read (default: every
        real point); the feed-forward block runs on those only, and without return_weights the attention
        computes their queries only (the other points' outputs are left as they came in). context: (n, d)
        at the rows."""
        if rows is not None and not return_weights:  # only `rows` are read: their queries alone
            flat = h.reshape(-1, h.shape[-1])  # (B*L, d)
            a, _ = self.attn(h, coords, valid, queries=rows, norm=self.ln1)  # (n, d)
            at = flat[rows] + self.drop(a).to(h.dtype)  # (n, d)
            f, route = self.ffn(self.ln2(at), context)
            return flat.index_copy(0, rows, at + f.to(h.dtype)).view_as(h), None, route  # the rest: as it came
        a, weights = self.attn(h, coords, valid, return_weights=return_weights, norm=self.ln1)
        h = h + self.drop(a)  # (B, L, d)
        rows = valid.reshape(-1).nonzero().squeeze(1) if rows is None else rows
        flat = h.reshape(-1, h.shape[-1])  # (B*L, d)
        f, route = self.ffn(self.ln2(flat[rows]), context)  # (n, d): real tokens only
        return flat.index_add(0, rows, f.to(h.dtype)).view_as(h), weights, route  # padding gets 0


class TransferTraj(nn.Module):
    def __init__(self, *, args: ModelArgs):
        super().__init__()
        self.args = args
        d = args.d_model
        self.embed = ModalityEmbedding(args=args)
        n_mod = 2 + int(args.has_poi) + int(args.has_road)
        self.mixer = ModalityMixer(dim=d, n_heads=args.mixer_heads, n_modalities=n_mod, dropout=args.dropout)
        self.layers = nn.ModuleList([RtteLayer(args=args) for _ in range(args.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head_spatial = nn.Linear(d, 2)  # relative metres / spatial_scale_m (an offset when residual)
        if args.spatial_residual:  # start exactly at the position proxy
            nn.init.zeros_(self.head_spatial.weight)
            nn.init.zeros_(self.head_spatial.bias)
        if args.curve_input:  # per-point weight of the curve offset in the answer, zero at init
            self.head_curve = nn.Linear(d, 1)
            nn.init.zeros_(self.head_curve.weight)
            nn.init.zeros_(self.head_curve.bias)
        if args.road_input:  # per-point weight of the road offset in the answer, zero at init
            self.head_road = nn.Linear(d, 1)
            nn.init.zeros_(self.head_road.weight)
            nn.init.zeros_(self.head_road.bias)
        self.head_temporal = nn.Linear(d, 4)  # Softplus: weekday, hour, minute, minutes since start
        self.register_buffer("temporal_scale", torch.tensor(args.temporal_scale), persistent=False)

    def encoder_parameters(self):
        """Everything but the two heads: what `freeze_encoder` freezes."""
        head_modules = [self.head_spatial, self.head_temporal]
        head_modules += [self.head_curve] if self.args.curve_input else []
        head_modules += [self.head_road] if self.args.road_input else []
        heads = {id(p) for m in head_modules for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in heads]

    def heads(self, h, coords, bend, road) -> tuple[torch.Tensor, torch.Tensor]:
        """Final states (..., d) -> (xy (..., 2) metres, time (..., 4)); coords, bend and road (..., 2) metres
        at the same points (bend/road None when the model has no such input)."""
        h = self.ln_f(h)
        xy = self.head_spatial(h).float() * self.args.spatial_scale_m  # metres
        if self.args.spatial_residual:
            xy = xy + coords.float()  # offset from the position proxy
        if self.args.curve_input:
            xy = xy + self.head_curve(h).float() * bend  # the curve offset, as much as the model trusts it
        if self.args.road_input:
            xy = xy + self.head_road(h).float() * road.float()  # and the road offset
        time = F.softplus(self.head_temporal(h).float()) * self.temporal_scale
        return xy, time

    def forward(
        self,
        batch: dict,
        targets: dict | None = None,
        *,
        return_attention: bool = False,
        time_loss: str = "mse",
        outputs_at: torch.Tensor | None = None,
    ):
        """batch: inputs from the collate function; targets: {"xy" (B, L, 2), "time" (B, L, 4)}.

        time_loss: "mse" (squared error of the scaled temporal features, the paper's) or "l1" (absolute
        error). OD-TTE is scored by MAE: travel times are right-skewed, and the squared error pulls the
        answer towards the mean, which the long trips drag above the median that minimises the MAE.

        outputs_at (B, L) bool, inference only: the points whose answers the caller reads (predict: the
        hidden ones). The last layer's feed-forward block and the heads run on those points only; "xy" and
        "time" are NaN elsewhere and the last layer's routing covers those points. Every other point is
        still a key of the last attention, so the answers read are the full forward's (tested).

        Returns (outputs, loss); loss is None without targets. outputs: "xy" (B, L, 2) relative
        metres, "time" (B, L, 4), "routing" (per layer: "indices"/"weights" (N, k) over real tokens
        in row-major order of `valid`, or None for the FFN ablation), "aux_loss", and "attention"
        (per layer (B, H, L, L)) when return_attention.
        """
        if outputs_at is not None and targets is not None:
            raise ValueError("outputs_at is for inference: the loss and its load balancing read every point")
        valid = batch["valid"]  # (B, L)
        seen = valid & ~batch["mask_s"]
        minutes, timed = batch["time"][..., 3], valid & ~batch["mask_t"]  # minutes since start, where known
        coords = position_proxy(batch["xy"], seen, minutes, timed)  # (B, L, 2) metres
        bend = curve_offset(batch["xy"], seen, minutes, timed) if self.args.curve_input else None  # (B, L, 2)
        B, L = valid.shape
        real = valid.reshape(-1).nonzero().squeeze(1)  # (N,) flat positions of the real points, row-major
        tokens = {k: v.flatten(0, 1)[real] for k, v in batch.items() if k in TOKEN_FIELDS}  # (N, ...)
        tokens["context_missing"] = batch["context_missing"][real // L]  # (N,)
        mods, context = self.embed(tokens, bend.flatten(0, 1)[real] if bend is not None else None)  # M x (N, d)
        h = torch.zeros(B * L, self.args.d_model, dtype=mods[0].dtype, device=valid.device)
        h = h.index_copy(0, real, self.mixer(mods).to(h.dtype)).view(B, L, -1)  # (B, L, d), padding 0
        if self.args.position == "absolute_sincos":
            absolute = batch["origin"].double().unsqueeze(1) + coords.double()  # (B, L, 2) city CRS metres
            h = h + absolute_sincos(absolute, self.args.d_model).to(h.dtype)

        read = None if outputs_at is None else (outputs_at & valid).reshape(-1).nonzero().squeeze(1)  # (n,)
        attention, routing, aux = [], [], h.new_zeros((), dtype=torch.float32)
        for i, layer in enumerate(self.layers):
            rows = read if i == len(self.layers) - 1 else None
            ctx = context if rows is None else context[outputs_at[valid]]  # (n, d)
            h, weights, route = layer(h, coords, valid, ctx, return_weights=return_attention, rows=rows)
            attention.append(weights)
            if route is not None:
                aux = aux + route.pop("aux_loss")
            routing.append(route)
        road = road_offset(batch) if self.args.road_input else None  # (B, L, 2)
        if read is None:
            xy, time = self.heads(h, coords, bend, road)  # (B, L, 2), (B, L, 4)
        else:
            xy_at, time_at = self.heads(
                *(None if u is None else u.flatten(0, 1)[read] for u in (h, coords, bend, road))
            )
            xy = torch.full((B * L, 2), math.nan, device=h.device).index_copy(0, read, xy_at).view(B, L, 2)
            time = torch.full((B * L, 4), math.nan, device=h.device).index_copy(0, read, time_at).view(B, L, 4)
        aux = aux / max(len(self.layers), 1)
        outputs = {"xy": xy, "time": time, "routing": routing, "aux_loss": aux}
        if return_attention:
            outputs["attention"] = attention
        if targets is None:
            return outputs, None

        sel_s = (batch["mask_s"] & valid).float()  # (B, L)
        sel_t = (batch["mask_t"] & valid).float()
        err_s = ((xy - targets["xy"]) / self.args.spatial_scale_m).pow(2).mean(-1)  # (B, L)
        diff_t = (time - targets["time"]) / self.temporal_scale
        err_t = (diff_t.abs() if time_loss == "l1" else diff_t.pow(2)).mean(-1)  # (B, L)
        loss_s = (err_s * sel_s).sum() / sel_s.sum().clamp(min=1)
        loss_t = (err_t * sel_t).sum() / sel_t.sum().clamp(min=1)
        outputs.update(
            loss_spatial=loss_s.detach(), loss_temporal=loss_t.detach(), n_spatial=sel_s.sum(), n_temporal=sel_t.sum()
        )
        loss = loss_s + loss_t + (self.args.aux_loss_weight * aux if self.args.use_moe else 0.0)
        return outputs, loss


def with_road_input(model: TransferTraj) -> TransferTraj:
    """`model` with the road-offset input and head added (a fine-tune that switches `road_input` on): the same
    weights otherwise, and the same answers until training moves the new zero-initialised layers."""
    if model.args.road_input:
        return model
    road = TransferTraj(args=replace(model.args, road_input=True))
    missing, unexpected = road.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith(("embed.road_path.", "head_road.")) for k in missing):
        raise ValueError(f"cannot add the road input: unexpected {unexpected}, missing {missing}")
    return road.train(model.training)


def road_offset(batch: dict) -> torch.Tensor:
    """The batch's road offset (B, L, 2) metres at hidden points, 0 elsewhere and when the batch has none (no
    map: the model's "no road path")."""
    if "road_offset" not in batch:
        return torch.zeros_like(batch["xy"])
    return batch["road_offset"] * batch["mask_s"].unsqueeze(-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "ModelArgs",
    "TransferTraj",
    "TrieAttention",
    "ScMoE",
    "position_proxy",
    "absolute_sincos",
    "count_parameters",
]
