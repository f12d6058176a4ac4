"""Continual-learning metrics on an accuracy matrix ``a[s][t]``: the score on task ``t`` (order
position) after training stage ``s`` (0-based; stage s trains task s).

- CL (PAPER.md Eq. 4): mean of the last row.
- BWT: mean over t < N-1 of ``a[N-1][t] - a[t][t]`` (negative = forgetting).
- FG_s (Eq. 5, a *retention* ratio, higher is better): ``100/s * Σ_{t<s} a[s][t] / A[t]`` for s >= 1,
  A[t] = the per-task fine-tuned score of task t (the ``pertask`` method's diagonal).
- Average forgetting (Chaudhry et al. 2018): mean over t < N-1 of ``max_{t<=l<N-1} a[l][t] - a[N-1][t]``.
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _check_square(a: Matrix) -> int:
    n = len(a)
    if n == 0 or any(len(r) < n for r in a):
        raise ValueError(f"need an N x >=N accuracy matrix (stages x tasks), got {n} rows of {[len(r) for r in a]}")
    return n


def cl_average(a: Matrix) -> float:
    n = _check_square(a)
    return sum(a[n - 1][:n]) / n


def bwt(a: Matrix) -> float | None:
    n = _check_square(a)
    if n < 2:
        return None
    return sum(a[n - 1][t] - a[t][t] for t in range(n - 1)) / (n - 1)


def fg_retention(a: Matrix, per_task: Sequence[float]) -> list[float | None]:
    """FG per stage (None at stage 0, where it is undefined); ``per_task[t]`` = A_t."""
    n = _check_square(a)
    if len(per_task) < n:
        raise ValueError(f"per_task has {len(per_task)} scores for {n} tasks")
    out: list[float | None] = [None]
    for s in range(1, n):
        ratios = [a[s][t] / per_task[t] for t in range(s) if per_task[t] > 0]
        out.append(100.0 * sum(ratios) / len(ratios) if ratios else None)
    return out


def average_forgetting(a: Matrix) -> float | None:
    n = _check_square(a)
    if n < 2:
        return None
    return sum(max(a[s][t] for s in range(t, n - 1)) - a[n - 1][t] for t in range(n - 1)) / (n - 1)


def summarize(a: Matrix, per_task: Sequence[float] | None = None) -> dict[str, object]:
    """Every metric of one run, rounded for reports (FG only when the per-task scores are given)."""
    def r(x):
        return (None if x is None else round(float(x), 3))
    out: dict[str, object] = {"cl": r(cl_average(a)), "bwt": r(bwt(a)), "avg_forgetting": r(average_forgetting(a)),
                              "seen_average": [r(sum(row[: s + 1]) / (s + 1)) for s, row in enumerate(a)]}
    if per_task is not None:
        out["fg"] = [r(x) for x in fg_retention(a, per_task)]
    return out
