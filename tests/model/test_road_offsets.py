"""Road offsets (model/road_offsets.py) and how the Collator hands them to the model: the toy L-shaped street
of test_road_paths, where the road path is the truth and the straight line cuts the corner."""

from __future__ import annotations

import numpy as np

from tests.model.generated import generated_features
from tests.model.test_road_paths import STREETS, l_trip
from transfertraj.model.baselines import tr_linear_interpolation
from transfertraj.model.masking import tp_mask, tr_mask
from transfertraj.model.road_offsets import computed_rows, road_offsets, with_road_offsets
from transfertraj.model.road_paths import RoadGraph
from transfertraj.model.trajectory_data import Collator, TrajectoryDataset, load_features, tr_road_offset
from transfertraj.model.transfer_data import subset


def toy_graph() -> RoadGraph:
    return RoadGraph.from_lines([np.array(s, float) for s in STREETS])


def test_the_offset_is_the_step_from_the_straight_line_to_the_road_path():
    data = l_trip()
    off = road_offsets(data, [0], mu=8, graphs={"toy": toy_graph()})
    line = tr_linear_interpolation(data, [0], mu=8, by="time")
    hidden = line["point"].to_numpy()
    # GENERATED trip drives the L at constant speed: line + offset is exactly where it was
    np.testing.assert_allclose(line[["pred_mx", "pred_my"]].to_numpy() + off[hidden], data.mxy[hidden], atol=1e-3)
    assert np.abs(off[hidden]).max() > 50  # the corner is cut by up to 141 m
    np.testing.assert_array_equal(off[[0, 8]], 0)  # kept points


def test_no_graph_gives_zero_and_rows_not_asked_for_stay_unknown():
    data = load_features(generated_features(3, min_points=9, max_points=12, city="toy"), 0)
    off = road_offsets(data, [1], mu=4, graphs={})
    row1 = slice(data.offsets[1], data.offsets[2])
    np.testing.assert_array_equal(off[row1], 0)
    assert np.isnan(np.delete(off, np.r_[row1], axis=0)).all()
    with_off = with_road_offsets(data, [1], mus=(4,), graphs={})
    np.testing.assert_array_equal(computed_rows(with_off, 4), [False, True, False])
    assert not computed_rows(with_off, 8).any()
    np.testing.assert_array_equal(computed_rows(subset(with_off, [2, 1]), 4), [False, True])  # travels with rows


def test_the_cache_is_read_back_instead_of_recomputed(tmp_path):
    data = l_trip()
    first = with_road_offsets(data, [0], mus=(8,), graphs={"toy": toy_graph()}, cache_dir=tmp_path)
    (cached,) = list(tmp_path.rglob("*.npz"))
    assert "features-0" in str(cached) and "toy-tr8-1rows" in cached.name
    # a graph with no way north would give 0 offsets: the cached file answers instead
    broken = RoadGraph.from_lines([np.array(s, float) for s in STREETS if s[0] != (200, 0)])
    again = with_road_offsets(data, [0], mus=(8,), graphs={"toy": broken}, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.road_offsets[8], first.road_offsets[8])
    assert np.abs(first.road_offsets[8]).max() > 50


def test_the_collator_carries_the_offset_for_tr_masks_only():
    data = with_road_offsets(l_trip(), [0], mus=(8,), graphs={"toy": toy_graph()})
    sample = TrajectoryDataset(data)[0]
    np.testing.assert_array_equal(tr_road_offset(sample, tr_mask(9, mu=8)), data.road_offsets[8])
    assert tr_road_offset(sample, tr_mask(9, mu=4)) == 0  # another mu: not computed here
    assert tr_road_offset(sample, tp_mask(9)) == 0
    batch, _ = Collator(task="tr8")([sample])
    np.testing.assert_array_equal(batch["road_offset"][0].numpy(), data.road_offsets[8])
    batch, _ = Collator(task="tp")([sample])
    assert not batch["road_offset"].any()


def test_multitask_draws_of_tr_get_the_offset_and_the_others_do_not():
    data = load_features(generated_features(40, min_points=9, max_points=30, city="toy"), 0)
    data = with_road_offsets(data, np.arange(40), mus=(4, 8, 16), graphs={"toy": toy_graph()})
    data.road_offsets.update({mu: off + mu for mu, off in data.road_offsets.items()})  # tell the mus apart
    ds = TrajectoryDataset(data)
    batch, _ = Collator(task="multitask", seed=3)([ds[i] for i in range(40)])
    seen = set()
    for b in range(40):
        n = int(data.n_points[b])
        got = batch["road_offset"][b, :n].numpy()
        kind = "other"
        for mu in (4, 8, 16):
            if bool(batch["mask_t"][b].any()) is False and np.array_equal(
                batch["mask_s"][b, :n].numpy(), tr_mask(n, mu=mu).spatial
            ):
                kind = "tr"
                np.testing.assert_array_equal(got, data.road_offsets[mu][data.offsets[b] : data.offsets[b + 1]])
                break
        if kind == "other":
            assert not got.any()
        seen.add(kind)
    assert seen == {"tr", "other"}


def test_the_tr_mixture_reads_every_mu_of_road_offsets():
    from transfertraj.model.train import road_mus

    assert road_mus("trmix") == road_mus("multitask") == (4, 8, 16)
    assert road_mus("tr16") == (16,) and road_mus("tp") == () and road_mus("od") == ()
