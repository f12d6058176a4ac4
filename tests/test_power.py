"""Known answers for report/power.py: textbook sample sizes and their inverses."""

import math

import numpy as np
import pytest

from taskneurons.report import power


def test_paired_t_matches_gpower():
    # G*Power 3, "means: difference from constant (one sample / matched pairs)", two-tailed, α .05, power .80
    assert power.n_paired(0.5, 1.0) == 34
    assert power.n_paired(0.8, 1.0) == 15
    assert power.n_paired(0.2, 1.0) == 199
    # the size found is the first that reaches the power
    assert power.power_paired(0.5, 1.0, 34) >= 0.8 > power.power_paired(0.5, 1.0, 33)


def test_paired_mde_inverts_the_size_and_scales_with_sd():
    mde = power.mde_paired(1.0, 34)
    assert 0.48 < mde <= 0.5
    assert math.isclose(power.power_paired(mde, 1.0, 34), 0.8, abs_tol=1e-6)
    assert math.isclose(power.mde_paired(10.0, 34), 10 * mde, rel_tol=1e-6)
    assert power.mde_paired(1.0, 1) == math.inf
    assert power.mde_paired(0.0, 10) == 0.0


def test_paired_power_by_simulation():
    rng = np.random.default_rng(0)
    n, d, reps = 20, 0.6, 4000
    x = rng.normal(d, 1.0, size=(reps, n))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    from scipy import stats

    simulated = float((np.abs(t) > stats.t.ppf(0.975, n - 1)).mean())
    assert abs(simulated - power.power_paired(d, 1.0, n)) < 0.03


def test_mde_from_interval_round_trip():
    se = power.se_from_interval(-1.96, 1.96)
    assert math.isclose(se, 1.0, rel_tol=1e-3)
    assert math.isclose(power.mde_from_se(1.0), 1.959964 + 0.841621, rel_tol=1e-5)
    # with 2 d.o.f. (3 seeds) the t quantiles make the MDE far larger than the normal one
    assert power.mde_from_se(1.0, df=2) > 1.9 * power.mde_from_se(1.0)
    assert power.mde_from_se(1.0, df=0) == math.inf


def test_proportion_matches_fleiss():
    # p0 = .5 vs p1 = .6, two-sided .05, power .8: ((1.96·.5 + .8416·√.24)/.1)² = 193.6
    assert power.n_proportion(0.5, 0.6) == 194
    assert power.n_proportion(0.5, 0.4) == 194
    with pytest.raises(ValueError):
        power.n_proportion(0.5, 0.5)


def test_mcnemar_matches_connor():
    # p10 = .15, p01 = .05: ψ = .2, δ = .1 -> (1.96·√.2 + .8416·√.19)² / .01 = 154.6
    assert power.n_mcnemar(0.2, 0.1) == 155
    mde = power.mde_mcnemar(0.2, 155)
    assert 0.095 < mde <= 0.1001
    assert power.mde_mcnemar(0.2, 2) == math.inf
    with pytest.raises(ValueError):
        power.n_mcnemar(0.1, 0.2)


def test_correlation_matches_cohen():
    # Cohen (1988) Table 3.4.1: r = .30, two-tailed α = .05, power .80 -> n = 85
    assert power.n_correlation(0.3) == 85
    assert math.isclose(power.mde_correlation(85), 0.3, abs_tol=0.003)
    assert power.mde_correlation(3) == 1.0


def test_scale_n():
    assert power.scale_n(60, 20.0, 10.0) == 240
    assert power.scale_n(60, 5.0, 10.0) == 60
    with pytest.raises(ValueError):
        power.scale_n(60, math.inf, 5.0)
