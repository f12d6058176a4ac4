"""Power: the smallest effect a test of a given size detects, and the size a target effect needs.

Every claim of the verdict table (report/verdicts.py) states its minimum detectable effect (MDE) at 80 %
power and two-sided α = 0.05, computed the way its test is run:

- paired differences (a score under two conditions on the same test examples, or per-seed means of two
  conditions with the same seeds): the exact power of the one-sample t-test, from the noncentral t;
- paired classification decisions (McNemar): Connor's (1987) normal approximation from the share of
  discordant pairs;
- one proportion against a fixed value (e.g. a binomial test against chance): the normal approximation
  of Fleiss (1981);
- a correlation: Fisher's z.

The functions are pure and have known-answer tests against textbook cases (tests/test_power.py).
"""

from __future__ import annotations

import math

from scipy import optimize
from scipy import stats as sps

ALPHA = 0.05
POWER = 0.80
N_MAX = 1_000_000


def _z(q: float) -> float:
    return float(sps.norm.ppf(q))


def _check(alpha: float, power: float) -> None:
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha={alpha} and power={power} must both lie in (0, 1)")


# --- paired differences (one-sample t on the differences) -----------------------------------------

def power_paired(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Exact power of the two-sided one-sample t-test of mean difference 0 when the true mean is ``effect``."""
    _check(alpha, 0.5)
    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if effect != 0 else alpha
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    ncp = abs(effect) / sd * math.sqrt(n)
    p = float(sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp))
    return 1.0 if math.isnan(p) else p  # scipy's nct gives NaN far in the tail, where the power is 1


def n_paired(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Smallest number of pairs whose t-test detects ``effect`` with the given power."""
    _check(alpha, power)
    if effect == 0:
        raise ValueError("an effect of 0 cannot be detected at any size")
    if sd <= 0:
        return 2
    # start from the normal approximation and walk up: power grows with n
    n = max(2, math.floor(((_z(1 - alpha / 2) + _z(power)) * sd / abs(effect)) ** 2))
    while power_paired(effect, sd, n, alpha) < power:
        n += 1
        if n > N_MAX:
            raise ValueError(f"more than {N_MAX} pairs needed for effect {effect} with sd {sd}")
    return n


def mde_paired(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest mean difference (in the units of ``sd``) the paired t-test on ``n`` pairs detects."""
    _check(alpha, power)
    if n < 2:
        return math.inf
    if sd <= 0:
        return 0.0
    hi = 2 * mde_from_se(sd / math.sqrt(n), df=n - 1, alpha=alpha, power=power)  # the t approximation, doubled
    return float(optimize.brentq(lambda d: power_paired(d, sd, n, alpha) - power, 1e-12 * sd, hi, xtol=1e-10 * sd))


def mde_from_se(se: float, df: int | None = None, alpha: float = ALPHA, power: float = POWER) -> float:
    """MDE from a standard error: (t_{1-α/2} + t_{power}) · se (normal quantiles when ``df`` is None)."""
    _check(alpha, power)
    if df is None:
        return (_z(1 - alpha / 2) + _z(power)) * se
    if df < 1:
        return math.inf
    return float(sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se


def se_from_interval(lo: float, hi: float, df: int | None = None, level: float = 0.95) -> float:
    """The standard error behind a symmetric-ish interval (t with ``df`` degrees of freedom, else normal)."""
    q = _z(0.5 + level / 2) if df is None else float(sps.t.ppf(0.5 + level / 2, df))
    return (hi - lo) / 2 / q


# --- paired binary decisions (McNemar) --------------------------------------------------------------

def n_mcnemar(p_discordant: float, diff: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Pairs needed to detect a difference ``diff`` = p10 - p01 of the discordant shares (Connor 1987)."""
    _check(alpha, power)
    if not 0 < abs(diff) <= p_discordant <= 1:
        raise ValueError(f"need 0 < |diff| <= p_discordant <= 1 (got diff={diff}, p_discordant={p_discordant})")
    za, zb = _z(1 - alpha / 2), _z(power)
    n = (za * math.sqrt(p_discordant) + zb * math.sqrt(p_discordant - diff ** 2)) ** 2 / diff ** 2
    return math.ceil(n - 1e-9)


def mde_mcnemar(p_discordant: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest p10 - p01 (a paired accuracy difference, as a share) that ``n`` pairs detect."""
    _check(alpha, power)
    if n < 1 or p_discordant <= 0:
        return math.inf

    def gap(d: float) -> float:
        za, zb = _z(1 - alpha / 2), _z(power)
        return (za * math.sqrt(p_discordant) + zb * math.sqrt(max(p_discordant - d * d, 0.0))) / math.sqrt(n) - d

    if gap(p_discordant) > 0:  # even a difference as large as every discordant pair is not enough
        return math.inf
    return float(optimize.brentq(gap, 1e-12, p_discordant))


# --- one proportion against a fixed value ----------------------------------------------------------

def n_proportion(p0: float, p1: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Examples needed for a two-sided test of p = p0 to detect p1 (normal approximation, Fleiss)."""
    _check(alpha, power)
    if not (0 < p0 < 1 and 0 < p1 < 1) or p0 == p1:
        raise ValueError(f"need two different proportions inside (0, 1) (got p0={p0}, p1={p1})")
    za, zb = _z(1 - alpha / 2), _z(power)
    n = ((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) / (p1 - p0)) ** 2
    return math.ceil(n - 1e-9)


# --- correlation (Fisher z) -----------------------------------------------------------------------

def n_correlation(r: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Pairs needed for a two-sided test of correlation 0 to detect ``r``."""
    _check(alpha, power)
    if not 0 < abs(r) < 1:
        raise ValueError(f"r={r} must lie in (-1, 1) and not be 0")
    n = ((_z(1 - alpha / 2) + _z(power)) / math.atanh(abs(r))) ** 2 + 3
    return math.ceil(n - 1e-9)


def mde_correlation(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |r| a test of correlation 0 on ``n`` pairs detects."""
    _check(alpha, power)
    if n <= 3:
        return 1.0
    return math.tanh((_z(1 - alpha / 2) + _z(power)) / math.sqrt(n - 3))


def scale_n(n: int, mde_now: float, mde_target: float) -> int:
    """Size needed to shrink an MDE from ``mde_now`` (at ``n``) to ``mde_target``: MDE ∝ 1/√n."""
    if mde_target <= 0:
        raise ValueError(f"target MDE {mde_target} must be > 0")
    if not math.isfinite(mde_now):
        raise ValueError("the current MDE is infinite: nothing to scale from")
    return max(n, math.ceil(n * (mde_now / mde_target) ** 2))
