"""Interleaved timing: every repeat of the candidate is paired with a baseline repeat run just before it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def verdict(ratios: list[float], target: float, lower_is_better: bool = True) -> str:
    """"ok" when every pair meets the target, "missed" when none does, else "noisy"."""
    lo, hi = min(ratios), max(ratios)
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
                 min_pairs: int = 5, max_pairs: int = 11, lower_is_better: bool = True) -> dict[str, Any]:
    """Candidate/baseline time over ABAB... pairs after one warm-up of each.

    Runs ``min_pairs`` pairs, then more (up to ``max_pairs``) while the verdict is still "noisy": a
    clear result stops early, a borderline one gets the repeats that a stable median needs.
    """
    baseline()
    candidate()  # warm-up: allocator, kernels, lazy inits
    base_s: list[float] = []
    cand_s: list[float] = []
    ratios: list[float] = []
    while len(ratios) < max_pairs:
        base_s.append(_time(baseline))
        cand_s.append(_time(candidate))
        ratios.append(cand_s[-1] / base_s[-1])
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
        "target": target,
        "verdict": verdict(ratios, target, lower_is_better),
    }
