"""Controlled overlap (paper App. A.7, Tables 9-11): a trained set T of a given size whose overlap rate
|T ∩ N_y| / |T| with a test set N_y is fixed, drawn at random per (layer, matrix) from N_y and from its
complement (PAPER.md §8 E2: only this definition makes 100 % overlap with |T| < |N_y| drawable)."""

from __future__ import annotations

import zlib
from typing import Any

import torch

from taskneurons.errors import ConfigError
from taskneurons.neurons.identify import sets_for_tasks, union_all
from taskneurons.neurons.neuronset import NeuronSet, _n_select, at_proportion
from taskneurons.neurons.pools import Key, key_str


def counts_for(size: float, overlap: float, pool: int) -> tuple[int, int]:
    """(units drawn from N_y, units drawn from its complement) in one pool of ``pool`` units."""
    n = _n_select(size, pool)  # the same rounding as a top-k selection of that size
    n_in = int(round(overlap * n))
    return n_in, n - n_in


def check_controlled(c: Any, n_test_tasks: int, test_proportion: float) -> list[str]:
    """Checks that need no model: ranges, and the bounds any N_y (a union of the test tasks' top-q sets,
    so q <= |N_y| / pool <= min(1, k q)) puts on a drawable (size, overlap)."""
    p = []
    try:
        size, overlap = float(c.size), float(c.overlap)
    except (TypeError, ValueError):
        return [f"neurons.controlled.size={c.get('size')!r} and .overlap={c.get('overlap')!r} must be numbers"]
    if not 0 < size <= 1:
        p.append(f"neurons.controlled.size={size} must be in (0, 1] (a fraction of each (layer, matrix))")
    if not 0 <= overlap <= 1:
        p.append(f"neurons.controlled.overlap={overlap} must be in [0, 1] (|T ∩ N_y| / |T|)")
    if not c.get("test_tasks"):
        p.append("neurons.controlled.test_tasks must name the test tasks whose union is N_y, e.g. [sst2,paws,gptnli]")
    if p:
        return p
    most, least = min(1.0, n_test_tasks * test_proportion), test_proportion
    if overlap * size > most + 1e-9:
        p.append(f"neurons.controlled: overlap {overlap:g} of size {size:g} needs {overlap * size:.3g} of each pool inside N_y, "
                 f"but N_y (union of {n_test_tasks} top-{test_proportion:g} sets) holds at most {most:.3g}; "
                 "lower the overlap or the size")
    if (1 - overlap) * size > 1 - least + 1e-9:
        p.append(f"neurons.controlled: overlap {overlap:g} of size {size:g} needs {(1 - overlap) * size:.3g} of each pool "
                 f"outside N_y, but at most {1 - least:.3g} lies outside; raise the overlap or lower the size")
    return p


def draw_controlled(reference: NeuronSet, size: float, overlap: float, seed: int) -> dict[Key, torch.Tensor]:
    """Per pool: round(overlap * n) units from ``reference`` (N_y) and the rest from its complement,
    n = round(size * pool); seeded per (layer, matrix). Infeasible anywhere -> one ConfigError."""
    out, bad = {}, []
    for k, pool in reference.pool_sizes.items():
        ref = reference.indices[k]
        n_in, n_out = counts_for(size, overlap, pool)
        inside = torch.zeros(pool, dtype=torch.bool)
        inside[ref] = True
        if n_in > ref.numel() or n_out > pool - ref.numel():
            bad.append(f"{key_str(k)} (N_y {ref.numel()} of {pool}, needs {n_in} in + {n_out} out)")
            continue
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(("controlled" + key_str(k)).encode()))
        comp = torch.nonzero(~inside).flatten()
        pick_in = ref[torch.randperm(ref.numel(), generator=g)[:n_in]]
        pick_out = comp[torch.randperm(comp.numel(), generator=g)[:n_out]]
        out[k] = torch.sort(torch.cat([pick_in, pick_out])).values
    if bad:
        raise ConfigError(f"neurons.controlled: size {size:g} at overlap {overlap:g} cannot be drawn in {len(bad)} pools, "
                          f"e.g. {bad[0]}; lower the overlap or the size (or raise neurons.controlled.test_proportion)")
    return out


def overlap_rate(trained: NeuronSet, reference: NeuronSet) -> float:
    """|T ∩ N_y| / |T| over all pools."""
    return trained.intersection(reference).count() / max(trained.count(), 1)


def controlled_set(session: Any, pools: list, ncfg: Any) -> tuple[NeuronSet, dict[str, Any]]:
    """``neurons=controlled`` in a training run: N_y = union of the test tasks' top-q sets (identified on
    this model, q = neurons.controlled.test_proportion), T drawn from N_y and its complement."""
    c = ncfg.controlled
    tests = list(c.test_tasks)
    sets, infos = sets_for_tasks(session, tests, pools)
    q = float(c.test_proportion)
    reference = union_all([at_proportion(sets[t], q, ncfg.scope) if sets[t].scores is not None else sets[t] for t in tests])
    drawn = draw_controlled(reference, float(c.size), float(c.overlap), int(ncfg.control_seed))
    meta = {"model": session.model_name, "definition": ncfg.definition, "kind": "controlled", "task": f"controlled({','.join(tests)})",
            "size": float(c.size), "overlap": float(c.overlap), "test_proportion": q, "control_seed": int(ncfg.control_seed)}
    nset = NeuronSet(drawn, dict(reference.pool_sizes), meta)
    info = {"test_sets": infos, "test_union": reference.count(), "size": float(c.size), "overlap_asked": float(c.overlap),
            "overlap_rate": round(overlap_rate(nset, reference), 6), "jaccard": round(float(nset.jaccard(reference)), 6)}
    return nset, info
