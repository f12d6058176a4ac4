"""Flag a training run that finished but whose numbers say it did not learn: machine-readable warnings.

Rules (thresholds are module constants, documented in docs/reliability-numerics.md):
- ``loss_diverged``: the mean loss of the last 20 % of batches is more than 3x the first batch's loss.
- ``loss_collapsed``: the last 20 % mean is at least 90 % of ln(vocabulary size), the loss of a uniform
  prediction over the vocabulary, and either the run started below that level (a pre-trained model that
  un-learned) or its loss rose above 3x the first batch's on the way (an unstable run that settled on
  uniform output). A random-init model that simply learned little starts at ln(V) and is not flagged.
- ``constant_prediction``: after training, a classification task's test examples (at least 8) were all
  given the same answer, so its score is that of a constant predictor (the majority or a minority class rate).
Each warning is ``{"code", "message"}``; the entry point prints one ``warning:`` line per warning and
keeps the list under ``warnings`` in metrics.json; the report marks the cells of such runs.
"""

from __future__ import annotations

import math
from statistics import mean
from typing import Any

DIVERGE_FACTOR = 3.0     # last-window mean vs the first batch's loss
LAST_FRACTION = 0.2      # the last-window: this share of the batches (at least one)
COLLAPSE_FRACTION = 0.9  # of ln(vocab): "no better than uniform over the vocabulary"
# fewer test examples than this all given one answer is too likely by chance to say anything (binary, random
# answers: 2 x 0.5^8 = 0.8 % at 8)
CONSTANT_MIN_EXAMPLES = 8


def warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def loss_warnings(losses: list[float], vocab_size: int | None, where: str = "training") -> list[dict[str, str]]:
    """The divergence rules above on one fit's per-batch losses (in order)."""
    finite = [x for x in losses if math.isfinite(x)]
    if len(finite) < 2:
        return []
    first = finite[0]
    window = max(1, math.ceil(LAST_FRACTION * len(finite)))
    last = mean(finite[-window:])
    peak = max(finite)
    out = []
    if first > 0 and last > DIVERGE_FACTOR * first:
        out.append(warning("loss_diverged", f"{where} diverged: mean loss of the last {window} batches {last:.4g} is "
                                            f"more than {DIVERGE_FACTOR:g}x the first batch's {first:.4g}; lower optim.lr"))
    if vocab_size and vocab_size > 1:
        uniform = math.log(vocab_size)
        if last >= COLLAPSE_FRACTION * uniform and (first < COLLAPSE_FRACTION * uniform or peak > DIVERGE_FACTOR * first):
            out.append(warning("loss_collapsed", f"{where} collapsed: mean loss of the last {window} batches {last:.4g} is "
                                                 f"that of a uniform guess over the vocabulary (ln {vocab_size} = "
                                                 f"{uniform:.4g}; first batch {first:.4g}, peak {peak:.4g}); lower optim.lr"))
    return out


def constant_prediction_warnings(results: dict[str, dict[str, Any]], tasks: list[str]) -> list[dict[str, str]]:
    """Classification tasks among ``tasks`` whose every test example got the same prediction."""
    out = []
    for t in tasks:
        r = results.get(t) or {}
        if (r.get("kind") == "classification" and int(r.get("n", 0)) >= CONSTANT_MIN_EXAMPLES
                and r.get("predicted_classes") == 1):
            out.append(warning("constant_prediction",
                               f"{t}: all {r['n']} test examples got the same prediction after training, so its score "
                               f"{r.get('score')} is a constant predictor's (majority class {r.get('majority_baseline')})"))
    return out


def print_warnings(warnings: list[dict[str, str]], stream: Any = None) -> None:
    import sys

    for w in warnings:
        print(f"warning: [{w['code']}] {w['message']}", file=stream or sys.stderr, flush=True)
