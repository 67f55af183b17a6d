"""Bootstrap intervals: coverage of a known mean, exact ratios, the verdict sentence (generated numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from transfertraj.model.bootstrap import mean_ci, paired_ratio_ci, verdict


def test_mean_ci_covers_a_known_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    covered = 0
    trials = 200
    for i in range(trials):
        x = rng.exponential(scale=3.0, size=80)  # skewed, true mean 3
        _, lo, hi = mean_ci(x, n_boot=500, seed=i)
        covered += lo <= 3.0 <= hi
    assert 0.88 <= covered / trials <= 0.99


def test_mean_ci_is_centred_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    m, lo, hi = mean_ci(rng.normal(5.0, 1.0, 100))
    m2, lo2, hi2 = mean_ci(rng.normal(5.0, 1.0, 2500))
    assert lo < m < hi and lo2 < m2 < hi2
    assert (hi2 - lo2) < 0.3 * (hi - lo)
    assert lo2 < 5.0 < hi2


def test_paired_ratio_is_exact_when_one_method_is_a_multiple_of_the_other():
    rng = np.random.default_rng(2)
    b = rng.uniform(1, 100, 50)
    n = rng.integers(1, 10, 50)
    r, lo, hi = paired_ratio_ci(4 * b, b, n, kind="rmse")
    assert r == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    r, lo, hi = paired_ratio_ci(0.5 * b, b, kind="mae")
    assert r == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)


def test_paired_ratio_interval_contains_one_for_exchangeable_methods_and_excludes_it_for_a_real_gap():
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 100.0, 200)
    a = base * rng.uniform(0.9, 1.1, 200)
    b = base * rng.uniform(0.9, 1.1, 200)
    _, lo, hi = paired_ratio_ci(a, b, kind="mae")
    assert lo < 1 < hi
    _, lo, hi = paired_ratio_ci(0.7 * base * rng.uniform(0.9, 1.1, 200), b, kind="mae")
    assert hi < 1


def test_paired_ratio_checks_its_inputs():
    with pytest.raises(ValueError):
        paired_ratio_ci([1.0, 2.0], [1.0], kind="rmse")
    with pytest.raises(ValueError):
        paired_ratio_ci([1.0], [1.0], kind="median")


def test_verdict_sentences():
    assert "real" in verdict(0.5, 0.8) and "below 1" in verdict(0.5, 0.8)
    assert "above 1" in verdict(1.1, 1.4)
    assert "contains 1" in verdict(0.9, 1.1)
    assert "met with confidence" in verdict(0.5, 0.8, 0.85)
    assert "missed with confidence" in verdict(0.9, 0.95, 0.85)
    assert "undecided" in verdict(0.8, 0.9, 0.85)
