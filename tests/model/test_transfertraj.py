"""The network: shapes, TRIE translation invariance, exact top-k routing, determinism, padding, no leaks."""

from __future__ import annotations

import pytest
import torch

from tests.model.generated import tiny_args
from transfertraj.model.trajectory_data import Collator, TrajectoryDataset, load_features
from transfertraj.model.transfertraj import ModelArgs, ScMoE, TransferTraj, TrieAttention, position_proxy


@pytest.fixture(scope="module")
def data(features_df):
    return load_features(features_df, data_version=1)


def make_batch(data, task="pretrain", rows=(0, 1, 2, 3), seed=0):
    ds = TrajectoryDataset(data)
    return Collator(task=task, seed=seed)([ds[i] for i in rows])


def model_for(**over) -> TransferTraj:
    """A tiny model whose spatial head is random, as after training (a residual head starts at zero
    and would hide what the encoder reads)."""
    torch.manual_seed(0)
    model = TransferTraj(args=tiny_args(**over))
    torch.nn.init.normal_(model.head_spatial.weight, std=0.5)
    return model


def test_residual_head_starts_at_the_position_proxy(data):
    batch, _ = make_batch(data, "tr8")
    torch.manual_seed(0)
    with torch.no_grad():
        out, _ = TransferTraj(args=tiny_args()).eval()(batch)
        plain, _ = TransferTraj(args=tiny_args(spatial_residual=False)).eval()(batch)
    timed = batch["valid"] & ~batch["mask_t"]
    proxy = position_proxy(batch["xy"], batch["valid"] & ~batch["mask_s"], batch["time"][..., 3], timed)
    hidden = batch["mask_s"] & batch["valid"]
    assert hidden.any()
    torch.testing.assert_close(out["xy"], proxy)  # hidden points: time interpolation of the kept ones
    assert not torch.allclose(plain["xy"][hidden], proxy[hidden])


def test_forward_backward_shapes(data):
    batch, targets = make_batch(data)
    model = model_for()
    out, loss = model(batch, targets)
    B, L = batch["valid"].shape
    assert out["xy"].shape == (B, L, 2) and out["time"].shape == (B, L, 4)
    assert (out["time"] >= 0).all()  # Softplus head
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.head_spatial.parameters())
    out2, none = model(batch)
    assert none is None and out2["xy"].shape == (B, L, 2)


def test_time_loss_l1_is_the_mean_absolute_scaled_error_of_hidden_times(data):
    batch, targets = make_batch(data, "od")
    model = model_for().eval()
    with torch.no_grad():
        mse, _ = model(batch, targets)
        l1, _ = model(batch, targets, time_loss="l1")
    hidden = batch["mask_t"] & batch["valid"]
    diff = (mse["time"] - targets["time"])[hidden] / model.temporal_scale  # (n, 4)
    torch.testing.assert_close(l1["loss_temporal"], diff.abs().mean())
    torch.testing.assert_close(mse["loss_temporal"], diff.pow(2).mean())
    torch.testing.assert_close(l1["loss_spatial"], mse["loss_spatial"])  # positions keep the squared error


def test_trie_attention_weights_invariant_to_translation():
    torch.manual_seed(0)
    attn = TrieAttention(dim=32, n_heads=2, position="trie", rope_freqs=True, unit_m=10.0).double()
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    coords = torch.randn(2, 12, 2, dtype=torch.float64) * 800
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, 9:] = False
    _, w = attn(x, coords, valid, return_weights=True)
    _, w_shift = attn(x, coords + torch.tensor([2500.0, -1300.0], dtype=torch.float64), valid, return_weights=True)
    torch.testing.assert_close(w_shift, w, atol=1e-9, rtol=0)
    _, w_scaled = attn(x, coords * 1.5, valid, return_weights=True)  # not translation: must change
    assert (w_scaled - w).abs().max() > 1e-3
    # fp32, the dtype training uses: equal to float tolerance
    attn32 = attn.float()
    _, a = attn32(x.float(), coords.float(), valid, return_weights=True)
    _, b = attn32(
        x.float(), (coords + torch.tensor([2500.0, -1300.0], dtype=torch.float64)).float(), valid, return_weights=True
    )
    torch.testing.assert_close(b, a, atol=2e-4, rtol=0)


def test_absolute_position_ablation_is_not_translation_invariant(data):
    batch, _ = make_batch(data)
    shifted = dict(batch, origin=batch["origin"] + torch.tensor([2500.0, -1300.0], dtype=torch.float64))
    for position, invariant in (("trie", True), ("absolute_sincos", False)):
        model = model_for(position=position).eval()
        with torch.no_grad():
            w = model(batch, return_attention=True)[0]["attention"][0]
            w2 = model(shifted, return_attention=True)[0]["attention"][0]
        valid = batch["valid"]
        real = valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, L, L) real query and key
        diff = ((w2 - w).abs() * real).max()
        assert (diff < 1e-6) == invariant, (position, float(diff))


def test_trie_golden_values():
    """Seeded golden values of one small module: catches silent changes to the rotary math or init."""
    torch.manual_seed(0)
    m = TrieAttention(dim=8, n_heads=2, position="trie", rope_freqs=True, unit_m=10.0)
    x = torch.linspace(-1, 1, 24).view(1, 3, 8)
    coords = torch.tensor([[[0.0, 0.0], [100.0, 50.0], [250.0, -30.0]]])
    y, w = m(x, coords, torch.ones(1, 3, dtype=torch.bool), return_weights=True)
    want_row = torch.tensor([-0.050937, -0.239793, -0.191118, 0.377943, 0.074015, 0.298004, -0.094441, 0.159350])
    torch.testing.assert_close(y[0, 1].detach(), want_row, atol=2e-6, rtol=0)
    torch.testing.assert_close(w[0, 0, 2].detach(), torch.tensor([0.395136, 0.329951, 0.274913]), atol=2e-6, rtol=0)
    y2, _ = m(x, coords, torch.ones(1, 3, dtype=torch.bool))  # the fused SDPA path agrees
    torch.testing.assert_close(y2, y, atol=1e-6, rtol=0)


def test_moe_uses_exactly_k_experts_per_token():
    torch.manual_seed(0)
    moe = ScMoE(dim=16, hidden=24, n_experts=6, top_k=3, noise=True, dropout=0.0)
    x, ctx = torch.randn(50, 16), torch.randn(50, 16)
    for training in (True, False):
        moe.train(training)
        y, route = moe(x, ctx)
        idx, w = route["indices"], route["weights"]
        assert idx.shape == (50, 3)
        assert all(len(set(row.tolist())) == 3 for row in idx)  # k distinct experts
        torch.testing.assert_close(w.sum(-1), torch.ones(50))
        # reference: the weighted sum of exactly those k experts, computed densely
        ref = torch.zeros_like(y)
        for t in range(50):
            for j in range(3):
                e = idx[t, j]
                h = torch.nn.functional.gelu(x[t] @ moe.w1[e] + moe.b1[e])
                ref[t] += w[t, j] * (h @ moe.w2[e] + moe.b2[e])
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    assert route["aux_loss"] >= 1.0 - 1e-5  # C * sum f_e P_e is at least 1 (uniform) for these shapes


def test_routing_exposed_for_every_layer_and_k_active(data):
    batch, _ = make_batch(data)
    model = model_for().eval()
    out, _ = model(batch)
    n_real = int(batch["valid"].sum())
    assert len(out["routing"]) == 2
    for route in out["routing"]:
        assert route["indices"].shape == (n_real, 2) and route["weights"].shape == (n_real, 2)
        assert (route["indices"][:, 0] != route["indices"][:, 1]).all()
    ffn_out, _ = model_for(use_moe=False)(batch)
    assert ffn_out["routing"] == [None, None]


def test_eval_is_deterministic_and_training_routing_is_noisy(data):
    batch, _ = make_batch(data)
    model = model_for()
    model.eval()
    with torch.no_grad():
        a, _ = model(batch)
        b, _ = model(batch)
    assert torch.equal(a["xy"], b["xy"]) and torch.equal(a["time"], b["time"])
    assert all(torch.equal(r1["indices"], r2["indices"]) for r1, r2 in zip(a["routing"], b["routing"]))
    model.train()
    with torch.no_grad():
        c, _ = model(batch)
        d, _ = model(batch)
    assert any(not torch.equal(r1["indices"], r2["indices"]) for r1, r2 in zip(c["routing"], d["routing"]))


@pytest.mark.parametrize("position", ["trie", "absolute_sincos"])
def test_padding_does_not_change_real_outputs(data, position):
    lengths = data.n_points
    short, long_ = int(lengths.argmin()), int(lengths.argmax())
    assert lengths[short] < lengths[long_]
    model = model_for(position=position).eval()
    alone, _ = make_batch(data, "tr4", rows=(short,))
    padded, _ = make_batch(data, "tr4", rows=(short, long_))
    with torch.no_grad():
        a, _ = model(alone, return_attention=True)
        b, _ = model(padded, return_attention=True)
    n = int(lengths[short])
    torch.testing.assert_close(b["xy"][0, :n], a["xy"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["time"][0, :n], a["time"][0], atol=1e-5, rtol=1e-5)
    assert b["attention"][0][0, :, :n, n:].abs().max() == 0  # nobody attends to padding


def test_hidden_values_do_not_leak(data):
    batch, _ = make_batch(data, "pretrain")
    model = model_for().eval()
    poked = {k: v.clone() for k, v in batch.items()}
    hs, ht = batch["mask_s"], batch["mask_t"]
    assert hs.any() and ht.any()
    poked["xy"][hs] = 5000.0
    poked["poi"][hs] = 3.0
    poked["road"][hs] = 3.0
    poked["time"][ht] = 17.0
    with torch.no_grad():
        a, _ = model(batch)
        b, _ = model(poked)
    torch.testing.assert_close(b["xy"], a["xy"])
    torch.testing.assert_close(b["time"], a["time"])


def test_missing_poi_categories_and_missing_context_are_not_read(data):
    batch, _ = make_batch(data, "tp")
    model = model_for().eval()
    batch["poi_missing"][:, :, 1] = True
    poked = {k: v.clone() for k, v in batch.items()}
    poked["poi"][..., 1] = 9.0  # a missing category: its value must be ignored
    with torch.no_grad():
        a, _ = model(batch)
        b, _ = model(poked)
        torch.testing.assert_close(b["xy"], a["xy"])
        poked["poi"][..., 2] = 9.0  # a present category: it matters
        assert not torch.allclose(model(poked)[0]["xy"], a["xy"])
        no_road = dict(batch, road_missing=torch.ones_like(batch["road_missing"]))  # points without road data
        e, _ = model(no_road)
        torch.testing.assert_close(model(dict(no_road, road=no_road["road"] + 5.0))[0]["xy"], e["xy"])
        no_ctx = dict(batch, context_missing=torch.ones_like(batch["context_missing"]))
        c, _ = model(no_ctx)
        d, _ = model(dict(no_ctx, poi=no_ctx["poi"] + 4.0, road=no_ctx["road"] * 3.0))
    torch.testing.assert_close(d["xy"], c["xy"])


def test_modality_ablations_build_and_run(data):
    batch, targets = make_batch(data)
    for over in ({"use_poi": False}, {"use_road": False}, {"use_poi": False, "use_road": False}, {"position": "none"}):
        out, loss = model_for(**over)(batch, targets)
        assert torch.isfinite(loss)
    with pytest.raises(ValueError):
        ModelArgs(position="index")


def test_tiny_model_overfits_a_tiny_batch(data):
    batch, targets = make_batch(data, "pretrain", rows=tuple(range(8)))
    torch.manual_seed(0)
    model = TransferTraj(args=tiny_args())  # as trained: the residual head starts at the proxy
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        _, loss = model(batch, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def _moe_loop_reference(moe: ScMoE, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The expert loop as it was before the sorted grouping: a boolean search and a gather per expert."""
    y = x.new_zeros(x.shape)
    flat_idx, flat_w = idx.reshape(-1), w.reshape(-1)
    flat_tok = torch.arange(x.shape[0]).repeat_interleave(moe.top_k)
    for e in range(moe.n_experts):
        sel = (flat_idx == e).nonzero(as_tuple=True)[0]
        tok = flat_tok[sel]
        h = torch.nn.functional.gelu(x[tok] @ moe.w1[e] + moe.b1[e])
        y.index_add_(0, tok, (h @ moe.w2[e] + moe.b2[e]) * flat_w[sel].unsqueeze(-1))
    return y


@pytest.mark.parametrize("n_tokens", [0, 1, 7, 300])
def test_moe_sorted_experts_match_the_expert_loop(n_tokens):
    """Outputs and gradients of the grouped experts equal the per-expert loop's on random inputs, also
    when some experts receive no token (7 tokens, k=2 of 8) and for an empty batch."""
    torch.manual_seed(n_tokens)
    moe = ScMoE(dim=32, hidden=48, n_experts=8, top_k=2, noise=False, dropout=0.0)
    torch.nn.init.normal_(moe.b1, std=0.3)
    torch.nn.init.normal_(moe.b2, std=0.3)
    x = torch.randn(n_tokens, 32, requires_grad=True)
    ctx = torch.randn(n_tokens, 32)
    y, route = moe(x, ctx)
    ref = _moe_loop_reference(moe, x, route["indices"], route["weights"])
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=1e-6)
    if n_tokens == 7:
        assert len(route["indices"].unique()) < 8  # the case of experts without tokens is exercised
    if n_tokens:
        grads = torch.autograd.grad(y.square().sum(), [x, moe.w1, moe.b2, moe.gate.weight], retain_graph=True)
        grads_ref = torch.autograd.grad(ref.square().sum(), [x, moe.w1, moe.b2, moe.gate.weight])
        # float32 rounding: the gate's gradient is summed in another order than the loop's (through
        # <dy w2^T, gelu> + <dy, b2>, model/grouped_experts.py), 2e-7 of its largest entry; each is as far
        # from the float64 answer (exact in float64: tests/model/test_grouped_experts.py)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, atol=1e-6 * float(g_ref.abs().max()), rtol=1e-5)
        # aux loss: C * sum f_e P_e with f_e the share of assignments, counted directly
        f = torch.bincount(route["indices"].reshape(-1), minlength=8).float() / (n_tokens * 2)
        p = moe.gate(torch.cat([x, ctx], -1)).softmax(-1).mean(0)
        torch.testing.assert_close(route["aux_loss"], 8 * (f * p).sum())


def test_committed_base_weights_still_load():
    """weights/base/transfertraj-base.pt loads strictly (ScMoE's parameter names and shapes unchanged)."""
    from pathlib import Path

    from transfertraj.model.checkpoint import load_model

    path = Path(__file__).resolve().parents[2] / "weights" / "base" / "transfertraj-base.pt"
    model, _ = load_model(path)
    moe = model.layers[0].ffn
    assert isinstance(moe, ScMoE) and moe.w1.shape == (moe.n_experts, model.args.d_model, model.args.expert_hidden)


# TP answers of the committed base weights for GENERATED trips 1 (20 points) and 3 (10 points) of the batch
# below, computed by the forward pass as it was before the inference speed-ups (commit 6789f73): padding
# embedded, every modality token through the mixer's last layer, the last layer's feed-forward everywhere.
BASE_TP_XY_M = {
    1: [[-691.2219, -2024.7432], [-718.0248, -2109.6829], [-741.3079, -2195.4182], [-763.1003, -2277.8523],
        [-784.5341, -2360.6653]],
    3: [[230.1345, 621.4974], [249.853, 713.194], [269.8856, 797.3068], [290.2388, 879.8086], [310.4894, 960.8994]],
}  # fmt: skip
BASE_TP_MINUTES = {1: [3.88037, 3.7317, 3.86502, 4.01785, 4.23383], 3: [2.28548, 2.31001, 2.40658, 2.57883, 2.77927]}


@pytest.mark.parametrize("read_only", [False, True])
def test_committed_base_tp_answers_are_those_before_the_speed_ups(read_only):
    """The committed base weights answer TP as the forward pass did before it embedded real points only, pooled
    the mixer before its last layer and (outputs_at, what predict asks) ran the last feed-forward at the read
    points only: to float32 rounding (1 ulp of a 2-4 km coordinate is 2.4e-4 m)."""
    from pathlib import Path

    from tests.model.generated import generated_features
    from transfertraj.features.taxonomy import N_POI, N_ROAD, TAXONOMY_VERSION
    from transfertraj.model.checkpoint import load_model

    model, _ = load_model(Path(__file__).resolve().parents[2] / "weights" / "base" / "transfertraj-base.pt")
    feats = generated_features(
        6, seed=3, min_points=8, max_points=40, poi_dim=N_POI, road_dim=N_ROAD, city="porto",
        taxonomy_version=TAXONOMY_VERSION,
    )  # fmt: skip
    data = load_features(feats, data_version=1)
    ds = TrajectoryDataset(data)
    batch, _ = Collator(task="tp")([ds[i] for i in range(len(ds))])
    hidden = batch["valid"] & batch["mask_s"]
    with torch.inference_mode():
        out, _ = model.eval()(batch, outputs_at=hidden if read_only else None)
    xy, minutes = out["xy"][hidden].view(6, 5, 2), out["time"][hidden][:, 3].view(6, 5)
    for trip, want in BASE_TP_XY_M.items():
        torch.testing.assert_close(xy[trip], torch.tensor(want), atol=1e-3, rtol=0)
        torch.testing.assert_close(minutes[trip], torch.tensor(BASE_TP_MINUTES[trip]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("task", ["tp", "tr8", "pretrain"])
def test_outputs_at_gives_the_full_forwards_answers_there(data, task):
    batch, targets = make_batch(data, task, rows=(0, 1, 2, 3, 5, 8))
    model = model_for().eval()
    read = batch["valid"] & (batch["mask_s"] | batch["mask_t"])
    with torch.no_grad():
        full, _ = model(batch)
        part, _ = model(batch, outputs_at=read)
    torch.testing.assert_close(part["xy"][read], full["xy"][read], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(part["time"][read], full["time"][read], atol=1e-5, rtol=1e-6)
    assert part["xy"][~read].isnan().all() and part["time"][~read].isnan().all()  # never computed, never zero
    assert torch.equal(part["routing"][0]["indices"], full["routing"][0]["indices"])
    assert part["routing"][-1]["indices"].shape[0] == int(read.sum())
    with pytest.raises(ValueError, match="inference"):
        model(batch, targets, outputs_at=read)


def test_mixer_pooled_before_its_last_layer_is_the_mean_of_its_tokens():
    """Eval (and dropout 0): the mean over modalities taken before the MLP's last linear layer equals the
    block applied per token and then pooled; with dropout while training, the per-token path is taken."""
    from transfertraj.model.transfertraj import ModalityMixer

    torch.manual_seed(0)
    mixer = ModalityMixer(dim=16, n_heads=2, n_modalities=4, dropout=0.5)
    mods = [torch.randn(30, 16) for _ in range(4)]

    def per_token(m):
        tokens = torch.stack(mods, dim=1) + m.kind
        tokens = tokens + m.attn(m.ln1(tokens))
        return (tokens + m.mlp(m.ln2(tokens))).mean(dim=1)

    with torch.no_grad():
        torch.testing.assert_close(mixer.eval()(mods), per_token(mixer), atol=1e-6, rtol=1e-6)
        mixer.train()
        torch.manual_seed(1)
        noisy = mixer(mods)
        torch.manual_seed(1)
        torch.testing.assert_close(noisy, per_token(mixer), atol=1e-6, rtol=1e-6)


def test_bf16_autocast_forward_and_backward_run(data):
    """Training on CUDA runs under bf16 autocast (model/train.py): the real-point scatters keep the stream's dtype."""
    batch, targets = make_batch(data)
    model = model_for()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, loss = model(batch, targets)
    loss.backward()
    assert torch.isfinite(loss) and out["xy"].dtype == torch.float32
