"""Per-layer similarity of task-specific neuron parameters (paper §5.2, Fig. 3).

In model M_i (fully fine-tuned on training task i) and layer l, compare the parameters of training
task i's neurons with those of test task j's neurons, both read from M_i:

- ``masked`` (PAPER.md §5.2 option A): cos(vec(W ⊙ M_i), vec(W ⊙ M_j)) with row masks. Only the row
  norms enter: Σ_{u ∈ N_i ∩ N_j} ‖w_u‖² / sqrt(Σ_{N_i} ‖w_u‖² · Σ_{N_j} ‖w_u‖²).
- ``flattened`` (option B): the selected rows of each set, in ascending unit order, flattened; needs
  the same count in every pool.

A layer's pools are concatenated (``layer_reduce=concat``, one vector per layer) or their cosines
averaged (``mean``). Weights are streamed one layer at a time (``weights.SavedWeights``).
"""

from __future__ import annotations

import math

import torch

from taskneurons.analyze.weights import SavedWeights, unit_params
from taskneurons.errors import ConfigError
from taskneurons.neurons.neuronset import NeuronSet
from taskneurons.neurons.pools import Key, key_str

OPTIONS = ("masked", "flattened")
LAYER_REDUCE = ("concat", "mean")


def row_norms(units: torch.Tensor) -> torch.Tensor:
    """‖w_u‖² of every unit, in float64 (computed once per pool, shared by every pair of sets)."""
    return units.double().pow(2).sum(1)


def pool_terms(units: torch.Tensor, a: torch.Tensor, b: torch.Tensor, option: str,
               norms: torch.Tensor | None = None) -> tuple[float, float, float]:
    """(dot, |P_a|², |P_b|²) of one pool's unit-parameter matrix ``units`` [n, d] under sets a and b."""
    norms = row_norms(units) if norms is None else norms
    na, nb = float(norms[a].sum()), float(norms[b].sum())
    if option == "masked":
        both = a[torch.isin(a, b)]
        return float(norms[both].sum()), na, nb
    if a.numel() != b.numel():
        raise ConfigError(f"analyze.similarity=flattened needs the same number of neurons per pool ({a.numel()} vs {b.numel()}); "
                          "use neurons.scope=per_module, or analyze.similarity=masked")
    return float((units[a].double() * units[b].double()).sum()), na, nb  # only the selected rows are copied


def cosine(dot: float, na: float, nb: float) -> float:
    return dot / math.sqrt(na * nb) if na > 0 and nb > 0 else 0.0


def layer_similarity(pools: list[tuple[Key, torch.Tensor]], sa: NeuronSet, sb: NeuronSet, option: str,
                     reduce: str = "concat", norms: dict[Key, torch.Tensor] | None = None) -> float:
    terms = [pool_terms(u, sa.indices[k], sb.indices[k], option, (norms or {}).get(k)) for k, u in pools]
    if reduce == "concat":
        return cosine(sum(t[0] for t in terms), sum(t[1] for t in terms), sum(t[2] for t in terms))
    return sum(cosine(*t) for t in terms) / len(terms)


def check_flattened(sets: dict[str, NeuronSet]) -> list[str]:
    counts = {name: s.counts() for name, s in sets.items()}
    first = next(iter(counts.items()))
    bad = [n for n, c in counts.items() if c != first[1]]
    if bad:
        k = next(k for k in first[1] if counts[bad[0]][k] != first[1][k])
        return [f"analyze.similarity=flattened needs equal neuron counts per (layer, matrix); '{first[0]}' and '{bad[0]}' "
                f"differ at {key_str(k)} ({first[1][k]} vs {counts[bad[0]][k]}); use neurons.scope=per_module or "
                "analyze.similarity=masked"]
    return []


def model_similarity(weights: SavedWeights, own: NeuronSet, tests: dict[str, NeuronSet], definition: str,
                     option: str = "masked", reduce: str = "concat") -> dict[str, list[float]]:
    """test task -> per-layer cosine between ``own`` (the model's training task) and its neurons, in one
    pass over the layers (one layer's FFN weights in memory at a time)."""
    layers = sorted({k[0] for k in own.pool_sizes})
    out: dict[str, list[float]] = {t: [] for t in tests}
    for layer in layers:
        pools = list(unit_params(weights, layer, definition))
        norms = {k: row_norms(u) for k, u in pools}
        for t, s in tests.items():
            out[t].append(layer_similarity(pools, own, s, option, reduce, norms))
        del pools, norms
    return out


def mean_curves(per_model: dict[str, dict[str, list[float]]], models: list[str], tests: list[str]) -> dict[str, list[float]]:
    """Fig. 3: for each test task, the per-layer similarity averaged over the given models."""
    out = {}
    for t in tests:
        rows = [per_model[m][t] for m in models if m in per_model]
        out[t] = [sum(v) / len(rows) for v in zip(*rows, strict=True)] if rows else []
    return out
