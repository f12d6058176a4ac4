"""Tables 9-11: OOD performance of controlled-overlap runs, rows = overlap rate, columns = trained size."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from taskneurons.analyze.proportions import group_of
from taskneurons.analyze.sweeps import mean_or_none, task_mean
from taskneurons.errors import ConfigError


def pair_name(train_group: str | None, test_tasks: list[str], groups: dict[str, list[str]]) -> str | None:
    test = "CLS" if sorted(test_tasks) == sorted(groups.get("ood_cls") or []) else (
        "GEN" if sorted(test_tasks) == sorted(groups.get("ood_gen") or []) else None)
    if train_group is None or test is None:
        return None
    return f"{train_group[:3]}-{test}"


def controlled_table(jobs: list[dict[str, Any]], groups: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """pair (e.g. CLS-CLS) -> {"cells": {overlap: {size: mean OOD score}}, "achieved": {overlap: {size: rate}}}."""
    cells: dict[str, dict[float, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    rates: dict[str, dict[float, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for m in jobs:
        info = (m.get("neuron_sets") or {}).get("controlled")
        if m.get("job") != "train" or m.get("neurons") != "controlled" or not info:
            continue
        tests = info["test_tasks"]
        pair = pair_name(group_of(m.get("train_tasks", []), groups), tests, groups)
        score = task_mean(m, tests)
        if pair is None or score is None:
            continue
        cells[pair][info["overlap_asked"]][info["size"]].append(score)
        rates[pair][info["overlap_asked"]][info["size"]].append(info["overlap_rate"] * 100)
    if not cells:
        raise ConfigError("no controlled-overlap jobs (neurons=controlled) of a Table 3 group in the sweep")
    return {pair: {"cells": {o: {s: mean_or_none(v) for s, v in sorted(by_s.items())} for o, by_s in sorted(by_o.items())},
                   "achieved": {o: {s: mean_or_none(v) for s, v in sorted(by_s.items())} for o, by_s in sorted(rates[pair].items())}}
            for pair, by_o in cells.items()}
