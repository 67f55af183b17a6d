"""The context the jobs' workers map (features/mapped_context.py): the NPZ's values, the same features."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.features.test_features import small_context
from transfertraj.features.context import context_vectors, load_city_context, poi_index, save_city_context
from transfertraj.features.mapped_context import is_unpacked, map_context, mapped_folder, unpack_context
from transfertraj.features.taxonomy import covered_mask


def _vectors(ctx, index, xy):
    return context_vectors(xy, ctx.lattice, index, phi_m=100.0, category_missing=covered_mask(["food", "shop"]))


def test_mapped_context_gives_the_npz_features_bit_for_bit(tmp_path):
    rng = np.random.default_rng(3)
    npz = save_city_context(small_context(rng), tmp_path / "city.npz")
    folder = unpack_context(npz)
    assert folder == mapped_folder(npz) and is_unpacked(npz)
    mapped, index = map_context(folder)
    loaded = load_city_context(npz)
    assert isinstance(mapped.lattice.road_m, np.ndarray) and not isinstance(mapped.lattice.road_m, np.memmap)
    assert not mapped.lattice.road_m.flags.writeable  # a read-only map: no worker can change it
    # inside, on the edges and outside the lattice
    xy = np.column_stack([rng.uniform(499_950, 500_350, 5000), rng.uniform(4_549_950, 4_550_250, 5000)])
    for want, got in zip(_vectors(loaded, poi_index(loaded), xy), _vectors(mapped, index, xy), strict=True):
        np.testing.assert_array_equal(got, want)
    assert mapped.taxonomy_version == loaded.taxonomy_version
    np.testing.assert_array_equal(mapped.poi_category, loaded.poi_category)


def test_a_second_unpack_reuses_the_folder_and_a_rebuilt_npz_gets_a_new_one(tmp_path):
    rng = np.random.default_rng(4)
    npz = save_city_context(small_context(rng), tmp_path / "city.npz")
    folder = unpack_context(npz)
    made = (folder / "meta.json").stat().st_mtime_ns
    assert unpack_context(npz) == folder and (folder / "meta.json").stat().st_mtime_ns == made
    other = small_context(np.random.default_rng(5))
    save_city_context(other, npz)  # the same name, other values (a lake rebuilt from scratch)
    os.utime(npz, ns=(made + 10**9, made + 10**9))
    assert not is_unpacked(npz)
    mapped, _ = map_context(unpack_context(npz))
    np.testing.assert_array_equal(mapped.lattice.nearest_class, other.lattice.nearest_class)
    assert not list(tmp_path.glob("*.tmp"))  # no half-written folder left behind


def test_a_folder_that_is_not_there_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        map_context(tmp_path / "nowhere.mapped")
