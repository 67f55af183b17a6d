"""The masking scheme: each task's mask, pretraining ratios, the collate function's zeroing and padding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transfertraj.model.masking import mask_for, od_mask, pretrain_mask, scored, scored_tasks, tp_mask, tr_mask
from transfertraj.model.trajectory_data import Collator, TrajectoryDataset, load_features


def test_tp_hides_the_last_five_positions_and_gives_their_times():
    m = tp_mask(12)
    assert m.keep.tolist() == list(range(12))
    assert m.spatial.tolist() == [False] * 7 + [True] * 5
    assert not m.temporal.any()  # the time asked about is part of the question
    tp_mask(6)
    with pytest.raises(ValueError):
        tp_mask(5)


@pytest.mark.parametrize("mu", [4, 8, 16])
def test_tr_keeps_every_mu_th_point_plus_first_and_last(mu):
    n = 37
    m = tr_mask(n, mu=mu)
    kept = set(np.flatnonzero(~m.spatial).tolist())
    assert kept == set(range(0, n, mu)) | {0, n - 1}
    assert not m.temporal.any()
    assert mask_for(f"tr{mu}")(n, np.random.default_rng(0)).spatial.tolist() == m.spatial.tolist()


def test_od_keeps_first_and_last_with_last_time_hidden():
    m = od_mask(30)
    assert m.keep.tolist() == [0, 29]
    assert m.spatial.tolist() == [False, False]
    assert m.temporal.tolist() == [False, True]


def test_pretraining_ratios():
    rng = np.random.default_rng(0)
    n = 100
    full, partial, spatial_only = [], [], []
    for _ in range(400):
        m = pretrain_mask(n, rng)
        both = m.spatial & m.temporal
        one = m.spatial ^ m.temporal
        full.append(both.sum() / n)
        partial.append(one.sum() / (~both).sum())
        spatial_only.append((m.spatial & ~m.temporal).sum() / max(one.sum(), 1))
    # round(0.4 * ceil(0.2 n)) = 8 of 20 random segments fully hidden: 40 % of the points on average
    assert abs(np.mean(full) - 0.4) < 0.03
    assert abs(np.mean(partial) - 0.2) < 0.01
    assert abs(np.mean(spatial_only) - 0.5) < 0.05


def test_pretraining_segments_count():
    rng = np.random.default_rng(1)
    n = 23
    m = pretrain_mask(n, rng)
    both = (m.spatial & m.temporal).astype(int)
    runs = int(both[0]) + int(np.sum(np.diff(both) == 1))  # maximal runs of fully hidden points
    n_seg = math.ceil(0.2 * n)
    assert 1 <= runs <= round(0.4 * n_seg)  # adjacent hidden segments merge into one run
    assert not both.all()
    short = pretrain_mask(3, rng)  # one segment: nothing fully hidden, never the whole trajectory
    assert not (short.spatial & short.temporal).all()


def test_scored_points():
    valid = np.array([[True] * 8, [True] * 6 + [False] * 2])
    m = tp_mask(8)
    ms = np.stack([m.spatial, np.r_[tp_mask(6).spatial, [False, False]]])
    s, t = scored("tp", ms, ms, valid)
    assert s.tolist() == [[False] * 7 + [True], [False] * 5 + [True, False, False]]
    assert not t.any()
    s, t = scored("od", np.zeros((1, 2), bool), np.array([[False, True]]), np.ones((1, 2), bool))
    assert t.tolist() == [[False, True]] and not s.any()


@pytest.fixture(scope="module")
def dataset(features_df):
    return TrajectoryDataset(load_features(features_df, data_version=1))


def test_collate_pads_zeroes_hidden_values_and_keeps_targets(dataset):
    samples = [dataset[i] for i in range(5)]
    batch, targets = Collator(task="tr4")(samples)
    lengths = [len(s["xy"]) for s in samples]
    B, L = batch["valid"].shape
    assert (B, L) == (5, max(lengths))
    assert batch["valid"].sum(1).tolist() == lengths
    hs = batch["mask_s"]
    assert (batch["xy"][hs] == 0).all() and (batch["poi"][hs] == 0).all() and (batch["road"][hs] == 0).all()
    assert (batch["time"][batch["mask_t"]] == 0).all()
    assert (targets["xy"][hs] != 0).any()  # the true values travel as targets only
    assert not (hs & ~batch["valid"]).any()  # padding is never a masked target
    np.testing.assert_allclose(targets["xy"][0, : lengths[0]].numpy(), samples[0]["xy"])


def test_collate_od_drops_middle_points(dataset):
    samples = [dataset[i] for i in range(3)]
    batch, targets = Collator(task="od")(samples)
    assert batch["valid"].shape == (3, 2)
    assert batch["point_index"][:, 1].tolist() == [len(s["xy"]) - 1 for s in samples]
    np.testing.assert_allclose(targets["time"][:, 1, 3].numpy(), [s["time"][-1, 3] for s in samples])
    assert (batch["time"][:, 1] == 0).all()


def test_context_dropout_rate_and_reproducible_masks(dataset):
    samples = [dataset[i % len(dataset)] for i in range(400)]
    batch, _ = Collator(task="pretrain", context_dropout=0.25, seed=3)(samples)
    assert abs(batch["context_missing"].float().mean().item() - 0.25) < 0.06
    a, _ = Collator(task="pretrain", seed=5)(samples[:8])
    b, _ = Collator(task="pretrain", seed=5)(samples[:8])
    assert (a["mask_s"] == b["mask_s"]).all() and (a["mask_t"] == b["mask_t"]).all()


def test_multitask_draws_every_task_a_trajectory_is_long_enough_for():
    from transfertraj.model.masking import MIXTURE, mask_for, multitask_mask

    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        m = multitask_mask(40, rng)
        for task in MIXTURE:  # which task drew it: the same mask from that task's function
            ref = mask_for(task)(40, np.random.default_rng(1)) if task != "pretrain" else None
            if ref is not None and np.array_equal(m.keep, ref.keep) and np.array_equal(m.spatial, ref.spatial):
                seen.add(task)
        if len(m.keep) == 40 and not (m.spatial == m.temporal).all():
            seen.add("pretrain")  # only the pretraining mask hides one modality without the other
    assert seen == set(MIXTURE)
    for _ in range(200):  # 4 points: TP (needs 6) would raise; the draw leaves it out
        multitask_mask(4, rng)


def test_trmix_draws_each_tr_mask_and_nothing_else():
    from transfertraj.model.masking import TR_MIXTURE, trmix_mask

    rng = np.random.default_rng(0)
    refs = {t: mask_for(t)(40, np.random.default_rng(1)) for t in TR_MIXTURE}
    seen = []
    for _ in range(300):
        m = trmix_mask(40, rng)
        match = [t for t, r in refs.items() if np.array_equal(m.spatial, r.spatial) and not m.temporal.any()]
        assert len(match) == 1  # always exactly one TR(mu) mask: every point in, the kept ones every mu-th
        seen.append(match[0])
    counts = {t: seen.count(t) for t in TR_MIXTURE}
    assert all(60 <= c <= 140 for c in counts.values()), counts  # about 100 each


def test_a_mixture_is_scored_on_each_task_it_draws_from():
    assert scored_tasks("trmix") == ("tr4", "tr8", "tr16")
    assert scored_tasks("multitask") == ("tp", "tr4", "tr8", "tr16", "od")
    assert scored_tasks("tr8") == ("tr8",)
