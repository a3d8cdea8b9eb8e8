"""Mean +- SE and the paired comparison against the baseline, checked against hand computation."""

from __future__ import annotations

import math

import pytest

from experiments.sweeps.statistics import mean_se, paired_comparison


def test_paired_t_interval_equals_the_hand_computation():
    # Four seeds; module - baseline = 0.02, 0.05, -0.01, 0.04.
    baseline = {0: 0.70, 1: 0.60, 2: 0.81, 3: 0.66}
    module = {0: 0.72, 1: 0.65, 2: 0.80, 3: 0.70, 4: 0.99}  # seed 4 has no pair: left out
    result = paired_comparison("srm", module, "none", baseline, method="t")
    # By hand: mean 0.025; deviations -0.005, 0.025, -0.035, 0.015, squares sum 0.0021;
    # sd = sqrt(0.0021 / 3) = 0.0264575; se = sd / 2 = 0.0132288; t(0.975, df 3) = 3.18245
    # (Student's table); half width 0.0421000.
    assert result.n == 4
    assert result.wins == 3
    assert result.mean_diff == pytest.approx(0.025)
    assert result.low == pytest.approx(0.025 - 0.0421000, abs=1e-6)
    assert result.high == pytest.approx(0.025 + 0.0421000, abs=1e-6)
    assert result.low < 0 < result.high  # the interval includes 0
    assert result.format_interval() == "[-1.7, +6.7]"


def test_paired_bootstrap_is_seeded_and_brackets_the_mean():
    baseline = {s: 0.5 for s in range(6)}
    module = {s: 0.5 + d for s, d in enumerate([0.03, 0.05, 0.04, 0.06, 0.02, 0.05])}
    first = paired_comparison("srm", module, "none", baseline, method="bootstrap", seed=1)
    again = paired_comparison("srm", module, "none", baseline, method="bootstrap", seed=1)
    assert (first.low, first.high) == (again.low, again.high)
    # Every difference is positive: every resampled mean lies within [min, max].
    assert 0.02 <= first.low < first.mean_diff < first.high <= 0.06
    assert first.low > 0 and first.wins == 6


def test_mean_se_and_degenerate_cases():
    stat = mean_se([0.5, 0.7, math.nan])
    assert stat.mean == pytest.approx(0.6)
    assert stat.se == pytest.approx(0.1 * math.sqrt(2) / math.sqrt(2))  # sd 0.1414 / sqrt 2
    assert stat.n == 2 and stat.format() == "60.0 ± 10.0"
    single = mean_se([0.5])
    assert math.isnan(single.se) and single.format() == "50.0"
    one_pair = paired_comparison("srm", {0: 0.6}, "none", {0: 0.5})
    assert one_pair.n == 1 and math.isnan(one_pair.low)
    with pytest.raises(ValueError, match="'t' or 'bootstrap'"):
        paired_comparison("srm", {}, "none", {}, method="z")
