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

from transfertraj.model.position_proxy import curve_offset, position_proxy

POSITIONS = ("trie", "absolute_sincos", "none")


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

    def forward(self, batch: dict, bend: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """bend: the curve offset (B, L, 2) metres, with curve_input.
        -> modality vectors, each (B, L, d), and the context vector for routing (B, L, d)."""
        hide_s = batch["mask_s"].unsqueeze(-1)  # (B, L, 1)
        hide_t = batch["mask_t"].unsqueeze(-1)
        s = self.spatial(batch["xy"] / self.args.spatial_scale_m)  # (B, L, d)
        t = self.temporal(batch["time"])  # (B, L, d)
        masked = self.mask_spatial.to(s.dtype)
        if self.args.curve_input and bend is not None:
            masked = masked + self.curve(bend.to(s.dtype) / self.args.spatial_scale_m)  # (B, L, d)
        if self.args.road_input:
            masked = masked + self.road_path(road_offset(batch).to(s.dtype) / self.args.spatial_scale_m)
        mods = [
            torch.where(hide_s, masked, s),
            torch.where(hide_t, self.mask_temporal.to(t.dtype), t),
        ]
        no_ctx = batch["context_missing"].view(-1, 1, 1)  # (B, 1, 1)
        context = torch.zeros_like(mods[0])
        if self.args.has_poi:
            missing = batch["poi_missing"].to(batch["poi"].dtype)  # (B, L, P)
            p = self.poi(batch["poi"] * (1 - missing)) + self.poi_category_missing(missing)  # (B, L, d)
            p = torch.where(hide_s, self.mask_poi.to(p.dtype), p)
            p = torch.where(no_ctx, self.missing_poi.to(p.dtype), p)
            mods.append(p)
            context = context + p
        if self.args.has_road:
            r = self.road(batch["road"])  # (B, L, d)
            r = torch.where(batch["road_missing"].unsqueeze(-1), self.missing_road.to(r.dtype), r)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, M, d = x.shape
        q, k, v = self.qkv(x).view(N, M, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)  # (N, H, M, dh)
        y = F.scaled_dot_product_attention(q, k, v)  # (N, H, M, dh)
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

    def forward(self, mods: list[torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
        x = torch.stack(mods, dim=2)  # (B, L, M, d)
        B, L, M, d = x.shape
        tokens = x[valid] + self.kind  # (N, M, d): real points only
        tokens = tokens + self.attn(self.ln1(tokens))
        tokens = tokens + self.mlp(self.ln2(tokens))
        out = x.new_zeros(B, L, d)
        out[valid] = tokens.mean(dim=1).to(out.dtype)  # (N, d)
        return out  # (B, L, d)


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

    def rotate(self, q: torch.Tensor, k: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, L, dh = q.shape
        with torch.autocast(device_type=q.device.type, enabled=False):  # angles of km-scale inputs need fp32
            ang = (
                self.phi(coords.to(self.phi.weight.dtype) / self.unit_m).view(B, L, H, dh // 2) * self.freqs
            )  # (B, L, H, dh/2)
            ang = ang.transpose(1, 2)  # (B, H, L, dh/2)
            cos, sin = ang.cos().to(q.dtype), ang.sin().to(q.dtype)

        def rot(u):
            u1, u2 = u[..., : dh // 2], u[..., dh // 2 :]
            return torch.cat([u1 * cos - u2 * sin, u1 * sin + u2 * cos], dim=-1)

        return rot(q), rot(k)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, valid: torch.Tensor, *, return_weights: bool = False):
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, L, dh)
        if self.rotary:
            q, k = self.rotate(q, k, coords)
        keep = valid.view(B, 1, 1, L)  # padded keys are never attended
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

    def experts(self, xs: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Rows grouped by expert (counts[e] rows for expert e, in expert order) -> each row through its
        expert's 2-layer MLP, (n, d) in the same order."""
        outs = []
        for e, xe in enumerate(xs.split(counts)):
            if xe.shape[0] == 0:
                continue
            h = F.gelu(torch.addmm(self.b1[e].to(xe.dtype), xe, self.w1[e].to(xe.dtype)))  # (n_e, hidden)
            outs.append(torch.addmm(self.b2[e].to(xe.dtype), h, self.w2[e].to(xe.dtype)))  # (n_e, d)
        return torch.cat(outs) if outs else xs.new_zeros(0, xs.shape[-1])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, dict]:
        N, d = x.shape
        route_in = torch.cat([x, context.to(x.dtype)], dim=-1)  # (N, 2d)
        logits = self.gate(route_in).float()  # (N, C)
        if self.training and self.noise:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise_scale(route_in).float())
        top_logits, top_idx = logits.topk(self.top_k, dim=-1)  # (N, k)
        top_w = top_logits.softmax(dim=-1)  # (N, k)

        # Each (token, expert) assignment sorted by expert once (stable: a token's experts keep their
        # top-k order), so each expert reads one contiguous slice: one gather, one matmul pair per
        # expert, one scatter. The per-expert boolean search this replaces cost a scan of all N*k
        # assignments and a gather/scatter per expert.
        flat_idx = top_idx.reshape(-1)  # (N*k,)
        order = flat_idx.argsort(stable=True)  # (N*k,) assignments grouped by expert
        tok = torch.div(order, self.top_k, rounding_mode="floor")  # (N*k,) token of each assignment
        counts = torch.bincount(flat_idx, minlength=self.n_experts)  # (C,)
        out = self.experts(x[tok], counts.tolist())  # (N*k, d), sorted order
        y = x.new_zeros(N, d).index_add_(0, tok, (out * top_w.reshape(-1)[order].unsqueeze(-1)).to(x.dtype))

        probs = logits.softmax(dim=-1)  # (N, C)
        frac = counts.float() / max(flat_idx.numel(), 1)
        aux = self.n_experts * (frac * probs.mean(dim=0)).sum()
        return self.drop(y), {"indices": top_idx, "weights": top_w, "aux_loss": aux}


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

    def forward(self, h, coords, valid, context, *, return_weights=False):
        a, weights = self.attn(self.ln1(h), coords, valid, return_weights=return_weights)
        h = h + self.drop(a)  # (B, L, d)
        f, route = self.ffn(self.ln2(h)[valid], context[valid])  # (N, d): real tokens only
        h = h + torch.zeros_like(h).index_put((valid,), f.to(h.dtype))  # scatter back, padding gets 0
        return h, weights, route


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

    def forward(
        self, batch: dict, targets: dict | None = None, *, return_attention: bool = False, time_loss: str = "mse"
    ):
        """batch: inputs from the collate function; targets: {"xy" (B, L, 2), "time" (B, L, 4)}.

        time_loss: "mse" (squared error of the scaled temporal features, the paper's) or "l1" (absolute
        error). OD-TTE is scored by MAE: travel times are right-skewed, and the squared error pulls the
        answer towards the mean, which the long trips drag above the median that minimises the MAE.

        Returns (outputs, loss); loss is None without targets. outputs: "xy" (B, L, 2) relative
        metres, "time" (B, L, 4), "routing" (per layer: "indices"/"weights" (N, k) over real tokens
        in row-major order of `valid`, or None for the FFN ablation), "aux_loss", and "attention"
        (per layer (B, H, L, L)) when return_attention.
        """
        valid = batch["valid"]  # (B, L)
        seen = valid & ~batch["mask_s"]
        minutes, timed = batch["time"][..., 3], valid & ~batch["mask_t"]  # minutes since start, where known
        coords = position_proxy(batch["xy"], seen, minutes, timed)  # (B, L, 2) metres
        bend = curve_offset(batch["xy"], seen, minutes, timed) if self.args.curve_input else None  # (B, L, 2)
        mods, context = self.embed(batch, bend)  # M x (B, L, d), (B, L, d)
        h = self.mixer(mods, valid)  # (B, L, d)
        if self.args.position == "absolute_sincos":
            absolute = batch["origin"].double().unsqueeze(1) + coords.double()  # (B, L, 2) city CRS metres
            h = h + absolute_sincos(absolute, self.args.d_model).to(h.dtype)

        attention, routing, aux = [], [], h.new_zeros((), dtype=torch.float32)
        for layer in self.layers:
            h, weights, route = layer(h, coords, valid, context, return_weights=return_attention)
            attention.append(weights)
            if route is not None:
                aux = aux + route.pop("aux_loss")
            routing.append(route)
        h = self.ln_f(h)
        xy = self.head_spatial(h).float() * self.args.spatial_scale_m  # (B, L, 2) metres
        if self.args.spatial_residual:
            xy = xy + coords.float()  # offset from the position proxy
        if self.args.curve_input:
            xy = xy + self.head_curve(h).float() * bend  # the curve offset, as much as the model trusts it
        if self.args.road_input:
            xy = xy + self.head_road(h).float() * road_offset(batch).float()  # and the road offset
        time = F.softplus(self.head_temporal(h).float()) * self.temporal_scale  # (B, L, 4)
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
