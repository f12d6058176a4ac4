"""Interleaved timing: every repeat of the candidate is paired with a baseline repeat run just before it."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

CONFIDENCE = 0.9


def median_interval(ratios: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free interval for the median ratio: the order statistics (x_(k), x_(n+1-k)) with the
    largest k whose coverage 1 - 2 P(Binomial(n, 1/2) < k) is at least ``confidence`` (the sign-test
    interval). With up to 5 pairs that is (min, max); more pairs let single outliers fall outside."""
    xs = sorted(ratios)
    n = len(xs)
    k = 1
    while k < (n + 1) // 2 and 1 - 2 * _binom_cdf(k, n) >= confidence:  # P(B <= k) = P(B < k + 1)
        k += 1
    return xs[k - 1], xs[n - k]


def _binom_cdf(k: int, n: int) -> float:
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def verdict(ratios: list[float], target: float, lower_is_better: bool = True) -> str:
    """"ok" when the median's interval (``median_interval``) meets the target, "missed" when it lies
    wholly on the wrong side, else "noisy" (the pairs cannot tell)."""
    lo, hi = median_interval(ratios)
    if not lower_is_better:
        lo, hi, target = -hi, -lo, -target
    if hi <= target:
        return "ok"
    if lo > target:
        return "missed"
    return "noisy"


def _time(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def paired_ratio(baseline: Callable[[], Any], candidate: Callable[[], Any], target: float,
                 min_pairs: int = 5, max_pairs: int = 11, lower_is_better: bool = True,
                 returns_seconds: bool = False) -> dict[str, Any]:
    """Candidate/baseline time over pairs after one warm-up of each; the order within a pair alternates
    (AB, BA, AB, ...) so that a run that is slower for coming second does not favour either side.

    Runs ``min_pairs`` pairs, then more (up to ``max_pairs``) while the verdict is still "noisy": a
    clear result stops early, a borderline one gets the repeats that a stable median needs.
    ``returns_seconds``: the callables time themselves and return the seconds (e.g. a median step time
    inside a fit) instead of being timed whole.
    """
    measure = (lambda fn: float(fn())) if returns_seconds else _time
    baseline()
    candidate()  # warm-up: allocator, kernels, lazy inits

    def pair(i: int) -> tuple[float, float]:
        if i % 2:
            c = measure(candidate)
            return measure(baseline), c
        b = measure(baseline)
        return b, measure(candidate)

    return adaptive_pairs(pair, target, min_pairs, max_pairs, lower_is_better)


def adaptive_pairs(pair: Callable[[int], tuple[float, float]], target: float, min_pairs: int = 5,
                   max_pairs: int = 11, lower_is_better: bool = True) -> dict[str, Any]:
    """``pair(i)`` -> (baseline seconds, candidate seconds), repeated until the verdict is clear (at least
    ``min_pairs``, at most ``max_pairs``); every pair, the ratios and the verdict."""
    base_s: list[float] = []
    cand_s: list[float] = []
    ratios: list[float] = []
    while len(ratios) < max_pairs:
        b, c = pair(len(ratios))
        base_s.append(b)
        cand_s.append(c)
        ratios.append(c / b)
        if len(ratios) >= min_pairs and verdict(ratios, target, lower_is_better) != "noisy":
            break
    return {
        "pairs": len(ratios),
        "baseline_s": [round(x, 5) for x in base_s],
        "candidate_s": [round(x, 5) for x in cand_s],
        "ratios": [round(x, 4) for x in ratios],
        "ratio_min": round(min(ratios), 4),
        "ratio_median": round(statistics.median(ratios), 4),
        "ratio_max": round(max(ratios), 4),
        "median_interval": [round(x, 4) for x in median_interval(ratios)],
        "median_interval_confidence": CONFIDENCE,
        "target": target,
        "verdict": verdict(ratios, target, lower_is_better),
    }
