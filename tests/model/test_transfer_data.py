"""Source and target datasets of the transfer experiments, cut from GENERATED features (two_cities, conftest)."""

from __future__ import annotations

import numpy as np

from transfertraj.model.transfer_data import city_data, covered_categories, restrict_poi, split_meridian, subset


def test_subset_and_meridian_split(two_cities):
    porto = city_data(two_cities, "porto")
    assert len(porto) == 50 and set(porto.city) == {"porto"}
    west, east, meridian = split_meridian(porto)
    assert abs(len(west) - len(east)) <= 1
    assert (west.lonlat[west.offsets[:-1], 0] < meridian).all()
    assert (east.lonlat[east.offsets[:-1], 0] >= meridian).all()
    row = 3
    s = subset(porto, [row])
    a, b = porto.offsets[row], porto.offsets[row + 1]
    np.testing.assert_array_equal(s.mxy, porto.mxy[a:b])
    np.testing.assert_array_equal(s.offsets, [0, b - a])


def test_restrict_poi_hides_other_categories_and_recomputes_the_total(two_cities):
    porto = city_data(two_cities, "porto")
    assert covered_categories(porto).all()
    assert not covered_categories(city_data(two_cities, "beijing")).any()  # no context at all
    keep = np.array([True, False, True, False, True])  # categories 0 and 2, plus the total
    r = restrict_poi(porto, keep)
    assert r.poi_missing[:, [1, 3]].all() and (r.poi[:, [1, 3]] == 0).all()
    expected_total = np.log1p(np.expm1(porto.poi[:, 0]) + np.expm1(porto.poi[:, 2]))
    np.testing.assert_allclose(r.poi[:, -1], expected_total, rtol=1e-5)
    assert (r.poi[:, -1] <= porto.poi[:, -1] + 1e-6).all()
    np.testing.assert_array_equal(r.poi[:, 0], porto.poi[:, 0])
