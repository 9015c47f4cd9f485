"""Seed statistics (clcore.report.stats) against values computed by hand and by scipy on small fixed inputs."""

import math

import numpy as np
import pytest
from scipy import stats

from clcore.report.stats import paired, seed_stats


def test_mean_std_and_t_interval_by_hand():
    s = seed_stats([60.0, 62.0, 67.0])
    assert (s.n, s.mean) == (3, 63.0)
    assert s.std == pytest.approx(math.sqrt(13.0))          # ((−3)² + (−1)² + 4²) / 2
    assert s.sem == pytest.approx(math.sqrt(13.0 / 3.0))
    half = 4.302652729749464 * math.sqrt(13.0 / 3.0)        # t(0.975, 2) from the table
    assert (s.ci_low, s.ci_high) == pytest.approx((63.0 - half, 63.0 + half))
    assert (round(s.ci_low, 2), round(s.ci_high, 2)) == (54.04, 71.96)


def test_interval_agrees_with_scipy_and_ignores_undefined_values():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10):
        x = rng.normal(50, 5, n)
        s = seed_stats([*x, float("nan")])  # a NaN (an undefined metric) is left out, not counted
        low, high = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert s.n == n and (s.ci_low, s.ci_high) == pytest.approx((low, high))


def test_one_or_no_value_has_no_spread():
    one, none = seed_stats([42.0]), seed_stats([])
    assert one.mean == 42.0 and all(math.isnan(v) for v in (one.std, one.sem, one.ci_low, one.ci_high))
    assert none.n == 0 and math.isnan(none.mean)


def test_paired_difference_over_shared_seeds_reports_the_seeds_left_out():
    result = paired({0: 70.0, 1: 72.0, 2: 75.0}, {0: 68.0, 1: 71.0, 3: 60.0})
    assert result.seeds == (0, 1) and result.only_method == (2,) and result.only_base == (3,)
    assert (result.diff.mean, result.diff.std, result.diff.sem) == pytest.approx((1.5, math.sqrt(0.5), 0.5))
    half = 12.706204736174698 * 0.5                          # t(0.975, 1)
    assert (result.diff.ci_low, result.diff.ci_high) == pytest.approx((1.5 - half, 1.5 + half))
    # t = 1.5 / 0.5 = 3 with 1 degree of freedom (a Cauchy): p = 2 (1 − (1/2 + atan(3)/π))
    assert result.p_value == pytest.approx(1 - 2 * math.atan(3) / math.pi)
    assert not result.excludes_zero


def test_paired_difference_agrees_with_scipy_and_marks_an_interval_without_zero():
    method, base = {0: 65.0, 1: 70.0, 2: 71.0}, {0: 60.0, 1: 64.0, 2: 64.0}  # differences 5, 6, 7
    result = paired(method, base)
    assert result.diff.mean == pytest.approx(6.0) and result.excludes_zero
    assert result.p_value == pytest.approx(stats.ttest_rel(list(method.values()), list(base.values())).pvalue)
    assert result.p_value == pytest.approx(0.009133, rel=1e-3)


def test_no_spread_or_one_pair_gives_no_test():
    same = paired({0: 62.0, 1: 64.0}, {0: 60.0, 1: 62.0})  # both differences are 2
    assert same.diff.mean == 2.0 and math.isnan(same.p_value) and not same.excludes_zero
    single = paired({0: 62.0, 1: float("nan")}, {0: 60.0, 1: 62.0})  # seed 1: the method's metric undefined
    assert single.seeds == (0,) and single.only_base == (1,)  # reported, not dropped quietly
    assert math.isnan(single.p_value) and math.isnan(single.diff.ci_low)
