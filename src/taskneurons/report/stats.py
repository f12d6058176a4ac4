"""Intervals and paired tests for every number the report prints.

- One run: the cell's 95 % interval is a percentile bootstrap of the mean over its test examples.
- Several seeds (runs): the interval is Student's t over the per-seed means (n seeds, n-1 d.o.f.); with
  three seeds a bootstrap over seeds would be far too narrow. ``Estimate.method`` says which was used.
- Task vs random (the same test examples under both): a paired sign-flip permutation test on the
  per-example differences, pooled over seeds (pairs are formed within a run). Exact when the
  differences are in {-1, 0, 1} × c (classification: it is then McNemar's exact test, a binomial
  test on the discordant pairs) or when few are non-zero, Monte Carlo otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
N_BOOT = 2000
N_PERM = 20000
EXACT_MAX_NONZERO = 16


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float | None
    hi: float | None
    n: int  # test examples (one run) or seeds (several runs)
    method: str  # "bootstrap over N test examples" | "t over N seeds" | "single value"

    def fmt(self, digits: int = 1) -> str:
        if self.lo is None or self.hi is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {(self.hi - self.lo) / 2:.{digits}f}"

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def bootstrap_ci(values: Sequence[float], level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Percentile bootstrap of the mean over the values (test examples of one run)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return Estimate(float(x.mean()), float(lo), float(hi), int(x.size), f"bootstrap over {x.size} test examples")


def t_interval(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """Student's t interval of the mean of per-seed values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return Estimate(float(x.mean()), None, None, int(x.size), "single value")
    half = float(sps.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    m = float(x.mean())
    return Estimate(m, m - half, m + half, int(x.size), f"t over {x.size} seeds")


def cell_estimate(per_seed: Sequence[Sequence[float]], seed: int = 0) -> Estimate:
    """One table cell from the per-example scores of each seed's run."""
    runs = [list(r) for r in per_seed if len(r)]
    if not runs:
        raise ValueError("no runs with per-example scores")
    if len(runs) == 1:
        return bootstrap_ci(runs[0], seed=seed)
    return t_interval([float(np.mean(r)) for r in runs])


def mean_of_means(per_task: Sequence[Sequence[Sequence[float]]], seed: int = 0) -> Estimate:
    """The Avg column: mean over tasks of each task's mean; ``per_task[t][s]`` = scores of task t, seed s.

    One seed: bootstrap resampling every task's examples; several seeds: t over the per-seed averages.
    """
    n_seeds = min(len(t) for t in per_task)
    if n_seeds > 1:
        return t_interval([float(np.mean([np.mean(t[s]) for t in per_task])) for s in range(n_seeds)])
    arrays = [np.asarray(t[0], dtype=float) for t in per_task]
    rng = np.random.default_rng(seed)
    draws = np.mean([a[rng.integers(0, a.size, size=(N_BOOT, a.size))].mean(axis=1) for a in arrays], axis=0)
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    point = float(np.mean([a.mean() for a in arrays]))
    return Estimate(point, float(lo), float(hi), int(sum(a.size for a in arrays)),
                    f"bootstrap over {sum(a.size for a in arrays)} test examples")


def _sign_flip_exact(d: np.ndarray) -> float:
    obs = abs(d.sum())
    tot = 0
    count = 0
    for signs in itertools.product((1.0, -1.0), repeat=d.size):
        tot += 1
        count += abs(float(np.dot(signs, d))) >= obs - 1e-9
    return count / tot


def paired_test(a: Sequence[float], b: Sequence[float], seed: int = 0, n_perm: int = N_PERM) -> dict:
    """Two-sided paired sign-flip test of mean(a - b) = 0; returns diff, p, n and the method used."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"paired test needs two equal-length, non-empty samples (got {x.size} and {y.size})")
    d = x - y
    nz = d[np.abs(d) > 1e-12]
    out = {"diff": float(d.mean()), "n": int(d.size), "nonzero": int(nz.size)}
    if nz.size == 0:
        return {**out, "p": 1.0, "method": "no differing pairs"}
    mags = np.unique(np.abs(nz).round(9))
    if mags.size == 1:
        # every non-zero difference has one size: the sign-flip null is Binomial(n, 1/2) on the signs
        k = int((nz > 0).sum())
        p = float(sps.binomtest(k, nz.size, 0.5).pvalue)
        return {**out, "p": p, "method": f"exact sign test on {nz.size} discordant pairs (McNemar)"}
    if nz.size <= EXACT_MAX_NONZERO:
        return {**out, "p": _sign_flip_exact(nz), "method": f"exact sign-flip permutation ({nz.size} non-zero pairs)"}
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(n_perm, nz.size))
    hits = int((np.abs(signs @ nz) >= abs(nz.sum()) - 1e-9).sum())
    return {**out, "p": (hits + 1) / (n_perm + 1), "method": f"sign-flip permutation, {n_perm} draws"}


def paired_diff_ci(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Estimate:
    """Bootstrap interval of mean(a - b) over the same examples."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return bootstrap_ci(d, seed=seed)


def align(x: dict, y: dict) -> tuple[list[float], list[float]]:
    """Two ``per_example`` records ({"ids", "scores"}) as paired score lists over their common ids."""
    ys = dict(zip(y["ids"], y["scores"], strict=True))
    pairs = [(s, ys[i]) for i, s in zip(x["ids"], x["scores"], strict=True) if i in ys]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def mean_records(records: list[dict]) -> dict:
    """Per-example mean over several draws of the same examples (e.g. random control draws), and each draw."""
    ids = records[0]["ids"]
    maps = [dict(zip(r["ids"], r["scores"], strict=True)) for r in records]
    common = [i for i in ids if all(i in m for m in maps)]
    return {"ids": common, "scores": [round(float(np.mean([m[i] for m in maps])), 4) for i in common],
            "draws": [[m[i] for i in common] for m in maps]}


def dominance_score(change: np.ndarray) -> float:
    """Mean diagonal change minus mean off-diagonal change of a square task x task matrix."""
    n = change.shape[0]
    off = change[~np.eye(n, dtype=bool)]
    return float(np.diag(change).mean() - (off.mean() if off.size else 0.0))


def dominance_bootstrap(base: dict[str, dict], deact: dict[str, dict[str, dict]], tasks: list[str],
                        n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Dominance score of one run with a bootstrap interval over test examples.

    ``base[j]`` and ``deact[i][j]`` are ``per_example`` records; each bootstrap draw resamples task j's
    examples once and uses the same draw for the baseline and every row, as the pairing requires.
    """
    rng = np.random.default_rng(seed)
    cols = []
    for j in tasks:
        present = [set(deact[r][j]["ids"]) for r in tasks]
        ids = [i for i in base[j]["ids"] if all(i in s for s in present)]
        b = dict(zip(base[j]["ids"], base[j]["scores"], strict=True))
        rows = [dict(zip(deact[r][j]["ids"], deact[r][j]["scores"], strict=True)) for r in tasks]
        # [rows, examples]: the change of every row on each of task j's examples
        cols.append(np.array([[row[i] - b[i] for i in ids] for row in rows]))
    point = dominance_score(np.stack([c.mean(axis=1) for c in cols], axis=1))
    draws = np.empty(n_boot)
    for k in range(n_boot):
        mat = np.stack([c[:, rng.integers(0, c.shape[1], c.shape[1])].mean(axis=1) for c in cols], axis=1)
        draws[k] = dominance_score(mat)
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    n = min(c.shape[1] for c in cols)
    return Estimate(point, float(lo), float(hi), n, f"bootstrap over test examples (>= {n} per task)")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
