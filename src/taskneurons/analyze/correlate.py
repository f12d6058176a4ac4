"""Correlation of neuron-parameter similarity with out-of-domain performance (paper Table 4)."""

from __future__ import annotations

import math
import warnings

from scipy import stats

from taskneurons.errors import ConfigError


def _clean(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def correlation(x: list[float], y: list[float], what: str = "correlation") -> dict[str, float | int | None]:
    """Pearson r and Spearman rho with two-sided p-values (scipy); None where undefined (constant input)."""
    if len(x) != len(y):
        raise ConfigError(f"{what}: {len(x)} similarity values but {len(y)} scores; every model needs both")
    if len(x) < 3:
        raise ConfigError(f"{what}: {len(x)} (similarity, score) points; a correlation needs at least 3 (train more models)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns nan, reported as None
        pr = stats.pearsonr(x, y)
        sr = stats.spearmanr(x, y)
    return {"n": len(x), "pearson_r": _clean(pr.statistic), "pearson_p": _clean(pr.pvalue),
            "spearman_rho": _clean(sr.statistic), "spearman_p": _clean(sr.pvalue)}
