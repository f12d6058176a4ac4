"""Overlap of neuron sets (paper Eq. 13, Table 8): Jaccard of the union of the training tasks' sets
and the union of the test tasks' sets, overall and per layer, for every train -> test pair of types."""

from __future__ import annotations

from typing import Any

from taskneurons.errors import ConfigError
from taskneurons.neurons.neuronset import NeuronSet, at_proportion

# Table 8 rows: (training type, test type) -> (group key of the training tasks, group key of the tests)
PAIRS = {"CLS-CLS": ("train_cls", "ood_cls"), "CLS-GEN": ("train_cls", "ood_gen"),
         "GEN-CLS": ("train_gen", "ood_cls"), "GEN-GEN": ("train_gen", "ood_gen")}


def union_of(sets: list[NeuronSet]) -> NeuronSet:
    if not sets:
        raise ConfigError("a union of no neuron sets was asked for; every group needs at least one task")
    out = sets[0]
    for s in sets[1:]:
        out = out.union(s)
    return out


def group_overlap(sets: dict[str, NeuronSet], train: list[str], test: list[str]) -> dict[str, Any]:
    """Jaccard of union(train sets) and union(test sets): overall, per layer, and the set sizes."""
    nx, ny = union_of([sets[t] for t in train]), union_of([sets[t] for t in test])
    per_layer = nx.jaccard(ny, per_layer=True)
    return {"jaccard": float(nx.jaccard(ny)), "per_layer": {int(k): float(v) for k, v in per_layer.items()},
            "train_union": nx.count(), "test_union": ny.count(), "intersection": nx.intersection(ny).count(),
            "total": nx.total()}


def overlap_sweep(scored: dict[str, NeuronSet], groups: dict[str, list[str]], proportions: list[float],
                  scope: str = "per_module") -> dict[str, dict[float, dict[str, Any]]]:
    """Table 8 (+ per layer): pair -> proportion -> group_overlap, each task's set re-selected at p."""
    missing = [f"{g}={groups.get(g)}" for pair in PAIRS.values() for g in pair if not groups.get(g)]
    if missing:
        raise ConfigError(f"analyze.groups needs non-empty {', '.join(sorted(set(missing)))}")
    out: dict[str, dict[float, dict[str, Any]]] = {pair: {} for pair in PAIRS}
    for p in proportions:
        at_p = {t: at_proportion(s, p, scope) for t, s in scored.items()}
        for pair, (gx, gy) in PAIRS.items():
            out[pair][float(p)] = group_overlap(at_p, list(groups[gx]), list(groups[gy]))
    return out
