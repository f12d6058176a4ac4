"""Stored neuron sets for analysis: found in the identify store (re-selected at any proportion with
``neurons.neuronset.at_proportion``).

Attribution scores do not depend on the proportion, so one stored set of a task (its scores) gives the
task's top-p % set for every p without a model (``neurons/identify.py`` stores them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taskneurons.errors import ConfigError
from taskneurons.neurons.neuronset import NeuronSet, check_proportion
from taskneurons.runtime.atomic import read_json_with_checksum
from taskneurons.runtime.code_hash import code_hash


def check_grid(values: Any, key: str) -> list[str]:
    """A proportion grid: a non-empty list of distinct numbers in (0, 1]."""
    if values is None or isinstance(values, (str, int, float)) or len(values) == 0:
        return [f"{key}={values!r} must be a non-empty list of proportions in (0, 1], e.g. [0.1,0.3,0.5]"]
    p = [x for v in values for x in check_proportion(v, key)]
    if not p:
        floats = [float(v) for v in values]
        dup = sorted({v for v in floats if floats.count(v) > 1})
        if dup:
            p.append(f"{key}={list(values)} has duplicates {dup}; give each proportion once")
    return p


def _meta_matches(meta: dict, model: str, ncfg: Any) -> bool:
    want = {"model": model, "definition": ncfg.definition, "reduction": ncfg.reduction,
            "token_scope": ncfg.token_scope, "max_examples": ncfg.max_examples, "seed": int(ncfg.seed),
            "code_hash": code_hash()}  # a set identified by other code is not this code's result
    return all(meta.get(k) == v for k, v in want.items())


def find_task_set(store_dir: str | Path, model: str, task: str, ncfg: Any) -> Path:
    """The stored set of ``task`` whose attribution settings match ``ncfg`` (one folder of the store)."""
    root = Path(store_dir) / model / task
    folders: dict[Path, Path] = {}
    for path in sorted(root.glob(f"{ncfg.definition}-{ncfg.reduction}-{ncfg.token_scope}-*/*.json")):
        try:
            meta = read_json_with_checksum(path)["meta"]
        except (ValueError, KeyError):
            continue  # a damaged file is reported when a matching set is loaded, not here
        if _meta_matches(meta, model, ncfg):
            folders.setdefault(path.parent, path)
    if not folders:
        raise ConfigError(
            f"no stored neuron set for task '{task}' of model '{model}' under {root} with definition={ncfg.definition}, "
            f"max_examples={ncfg.max_examples}, seed={ncfg.seed}, identified by this code; run python -m "
            "taskneurons.identify with the same model/neurons settings first (or set neurons.store_dir)")
    if len(folders) > 1:
        raise ConfigError(
            f"task '{task}': {len(folders)} stored sets match ({', '.join(p.name for p in folders)}, data caps differ); "
            f"delete the stale ones under {root} or give analyze.sets.{task}=<path>")
    return next(iter(folders.values()))


def load_task_sets(tasks: list[str], model: str, ncfg: Any, explicit: dict | None = None) -> dict[str, NeuronSet]:
    """One stored set (with scores) per task; every problem in one ConfigError."""
    out, problems = {}, []
    for t in tasks:
        try:
            path = (explicit or {}).get(t) or find_task_set(ncfg.store_dir, model, t, ncfg)
            nset = NeuronSet.load(path)
            if nset.scores is None:
                raise ConfigError(f"{path}: has no scores to re-select from; identify it again")
            out[t] = nset
        except ConfigError as e:
            problems += e.problems
    problems += same_space_problems(out)
    if problems:
        raise ConfigError(problems)
    return out


def same_space_problems(sets: dict[str, NeuronSet]) -> list[str]:
    """Sets compared must come from one model and one neuron definition (same pools)."""
    if not sets:
        return []
    name0, first = next(iter(sets.items()))
    p = []
    for name, s in sets.items():
        for key in ("model", "definition"):
            if s.meta.get(key) != first.meta.get(key):
                p.append(f"neuron sets of '{name0}' and '{name}' come from different {key}s "
                         f"('{first.meta.get(key)}' vs '{s.meta.get(key)}'); compare sets of one model and definition")
        if s.pool_sizes != first.pool_sizes and s.meta.get("model") == first.meta.get("model"):
            p.append(f"neuron sets of '{name0}' and '{name}' have different pools (another model shape?)")
    return p
