"""Proportion sweeps (paper Fig. 2 and Fig. 6): ID specialisation and OOD generalisation of jobs that
fine-tuned the top-p % neurons of their training tasks, per training group and proportion."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from taskneurons.analyze.sweeps import mean_or_none
from taskneurons.errors import ConfigError

LINES = {"ID-CLS": "in_domain_cls", "OOD-CLS": "out_of_domain_cls", "ID-GEN": "in_domain_gen", "OOD-GEN": "out_of_domain_gen"}


def group_of(train_tasks: list[str], groups: dict[str, list[str]]) -> str | None:
    for name, key in (("CLS-trained", "train_cls"), ("GEN-trained", "train_gen")):
        if sorted(train_tasks) == sorted(groups.get(key) or []):
            return name
    return None


def fig2_table(jobs: list[dict[str, Any]], groups: dict[str, list[str]]) -> dict[str, dict[float, dict[str, float | None]]]:
    """group -> proportion -> line -> score (mean over seeds), plus ``mean`` = (ID + OOD of the training type) / 2."""
    acc: dict[str, dict[float, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for m in jobs:
        if m.get("job") != "train" or m.get("neurons") != "task":
            continue
        g = group_of(m.get("train_tasks", []), groups)
        if g is None:
            continue
        for line, key in LINES.items():
            if m["summary"].get(key) is not None:
                acc[g][float(m["proportion"])][line].append(m["summary"][key])
    if not acc:
        raise ConfigError("no fine-tuning jobs of a Table 3 training group (analyze.groups.train_cls / train_gen) in the sweep")
    out: dict[str, dict[float, dict[str, float | None]]] = {}
    for g, by_p in acc.items():
        kind = "CLS" if g.startswith("CLS") else "GEN"
        out[g] = {}
        for p in sorted(by_p):
            row = {line: mean_or_none(by_p[p][line]) for line in LINES}
            idv, oodv = row[f"ID-{kind}"], row[f"OOD-{kind}"]
            row["mean"] = round((idv + oodv) / 2, 2) if idv is not None and oodv is not None else None
            out[g][p] = row
    return out


def fig6_table(jobs: list[dict[str, Any]]) -> dict[str, dict[float, float | None]]:
    """training task (trained alone) -> proportion -> its own (ID) score, mean over seeds."""
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for m in jobs:
        if m.get("job") != "train" or m.get("neurons") != "task" or len(m.get("train_tasks", [])) != 1:
            continue
        t = m["train_tasks"][0]
        acc[t][float(m["proportion"])].append(m["tasks"][t]["score"])
    if not acc:
        raise ConfigError("no single-task fine-tuning jobs in the sweep (fig6 trains each task alone)")
    return {t: {p: mean_or_none(v) for p, v in sorted(by_p.items())} for t, by_p in acc.items()}


def trend(values: list[float | None]) -> str:
    """rising / falling / peak at index / flat, for the finding checks in the notes."""
    v = [x for x in values if x is not None]
    if len(v) < 2:
        return "n/a"
    if all(b >= a for a, b in zip(v, v[1:], strict=False)):
        return "flat" if v[-1] == v[0] else "rises monotonically"
    if all(b <= a for a, b in zip(v, v[1:], strict=False)):
        return "falls monotonically"
    i = max(range(len(v)), key=v.__getitem__)
    return f"peaks at point {i + 1} of {len(v)}" if 0 < i < len(v) - 1 else "non-monotonic"
