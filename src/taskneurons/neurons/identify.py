"""Identify a task's neurons: attribution on its training data -> NeuronSet, cached in a store.

Store layout: ``<store_dir>/<model>/<task>/<definition>-<reduction>-<token_scope>-<data hash>[-<dtype>][<method tag>]/
<scope>-p<proportion>`` (``.safetensors`` + ``.json``); the method tag names a scorer other than grad_x_act and the
options its scores depend on (``scorers.method_tag``). Scores do not depend on the proportion, so a set at
another proportion is re-selected from any stored set's scores instead of re-running attribution. A set records
the hash of the code that identified it (``runtime/code_hash.py``): one stored by other code is identified again.
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from taskneurons.data.encoding import collate_sft, encode_example
from taskneurons.data.examples import sample_examples
from taskneurons.data.loading import TaskData
from taskneurons.errors import ConfigError, NumericalError
from taskneurons.neurons.attribution import REDUCTIONS, TOKEN_SCOPES, attribute
from taskneurons.neurons.neuronset import (
    SCOPES,
    NeuronSet,
    all_units,
    check_proportion,
    random_like,
    select_top,
)
from taskneurons.neurons.pools import DEFINITIONS, Pool, key_str, pool_sizes
from taskneurons.neurons.scorers import NEEDS_PEERS, SCORERS, ScoringInput, method_tag, score
from taskneurons.runtime.atomic import cleanup_temp_files
from taskneurons.runtime.code_hash import code_hash
from taskneurons.runtime.distributed import is_global_zero

log = logging.getLogger(__name__)
SET_KINDS = ("task", "random", "all_ffn")
# neurons.matrices: which FFN matrices a set keeps (output_units): W1 = role "in" (gate/up, h_to_4h, c_fc),
# W2 = role "out" (down, 4h_to_h, c_proj)
MATRIX_FILTERS = {"all": ("in", "out"), "W1": ("in",), "W2": ("out",)}


def validate_method_config(n: Any, tasks: list[str] | None = None) -> list[str]:
    """``neurons.method`` and its options (``tasks``: the run's tasks, when the caller knows them)."""
    method = n.get("method", "grad_x_act")
    if method not in SCORERS:
        return [f"neurons.method='{method}' must be one of {', '.join(SCORERS)}"]
    p = []
    try:
        if int(n.get("ig_steps", 8)) < 1:
            p.append(f"neurons.ig_steps={n.get('ig_steps')} must be >= 1 (Riemann steps of integrated gradients)")
    except (TypeError, ValueError):
        p.append(f"neurons.ig_steps={n.get('ig_steps')!r} must be an integer >= 1")
    sample = n.get("ablation_sample")
    if sample is not None and (not isinstance(sample, int) or sample < 1):
        p.append(f"neurons.ablation_sample={sample!r} must be null (every unit) or an integer >= 1")
    if method in NEEDS_PEERS and tasks is not None and len(tasks) < 2:
        p.append(f"neurons.method={method} compares tasks and needs >= 2 selected tasks, got {list(tasks)} "
                 "(select more with task=[a,b] or a benchmark)")
    for key in ("filter_rate", "activation_bar_ratio"):
        v = (n.get("lape") or {}).get(key, 0.95)
        if not 0 < float(v) < 1:
            p.append(f"neurons.lape.{key}={v} must be in (0, 1)")
    return p


def check_ablation_sample(n: Any, pools: list[Pool]) -> None:
    """After the model has loaded (its unit count), before any scoring: the sample must fit the model."""
    sample, total = n.get("ablation_sample"), sum(p.size for p in pools)
    if n.get("method") == "exact_ablation" and sample is not None and int(sample) > total:
        raise ConfigError(f"neurons.ablation_sample={sample} exceeds this model's {total} units "
                          f"(checked after loading the model, before any scoring): use <= {total} or null for all")


def validate_neurons_config(n: Any, model_name: str | None = None, tasks: list[str] | None = None) -> list[str]:
    p = check_proportion(n.proportion) + validate_method_config(n, tasks)
    for key, allowed in (("set", (*SET_KINDS, "controlled")), ("definition", DEFINITIONS), ("scope", SCOPES),
                         ("reduction", REDUCTIONS), ("token_scope", TOKEN_SCOPES), ("split", ("train", "test"))):
        if n.get(key) not in allowed:
            p.append(f"neurons.{key}='{n.get(key)}' must be one of {', '.join(allowed)}")
    for key in ("max_examples", "batch_size", "micro_batch_size", "control_seeds"):
        if n.get(key) is not None and int(n[key]) < 1:
            p.append(f"neurons.{key}={n[key]} must be >= 1")
    matrices = n.get("matrices", "all")
    if matrices not in MATRIX_FILTERS:
        p.append(f"neurons.matrices='{matrices}' must be one of {', '.join(MATRIX_FILTERS)}")
    elif matrices != "all" and n.get("definition") == "intermediate":
        # zeroing an intermediate unit's gate/up rows or its down column silences the same unit
        p.append(f"neurons.matrices={matrices} needs neurons.definition=output_units (an intermediate unit spans W1 and W2)")
    if n.get("path"):
        # a saved set is checked now (checksum, model, definition), not after the model has loaded
        try:
            nset = NeuronSet.load(n.path)
        except ConfigError as e:
            p += [f"neurons.path: {x}" for x in e.problems]
        else:
            if nset.meta.get("definition") != n.definition:
                p.append(f"neurons.path: set uses definition '{nset.meta.get('definition')}', this run uses '{n.definition}' (neurons.definition)")
            if model_name is not None and nset.meta.get("model") != model_name:
                p.append(f"neurons.path: set is for model '{nset.meta.get('model')}', not '{model_name}'; identify it on this model")
    return p


def attribution_batches(tok, td: TaskData, ncfg: Any, data_cfg: Any) -> tuple[list[dict], str]:
    """The examples attribution reads (seeded sample of the split) as SFT batches, and their hash."""
    split = ncfg.split
    if split == "train" and not td.train and ncfg.get("fallback_to_test"):
        split = "test"  # test-only tasks (amazonfood, gptnli): the paper identifies their neurons too
    examples = td.split(split)
    if not examples:
        raise ConfigError(
            f"task '{td.spec.name}' has no {ncfg.split} examples to identify neurons on"
            + ("; it is test-only: set neurons.fallback_to_test=true (or neurons.split=test)" if ncfg.split == "train" else "")
        )
    chosen = sample_examples(examples, ncfg.max_examples, int(ncfg.seed), td.spec.name, f"attribution-{split}")
    encoded = [encode_example(tok, td.spec, e, int(data_cfg.max_prompt_tokens), int(data_cfg.max_target_tokens)) for e in chosen]
    loader = DataLoader(encoded, batch_size=int(ncfg.batch_size), shuffle=False,
                        collate_fn=lambda b: collate_sft(b, tok.pad_token_id, tok.eos_token_id))
    sub = TaskData(td.spec, chosen if split == "train" else [], chosen if split == "test" else [])
    return list(loader), f"{split}-{sub.fingerprint(split)}"


def _attr_dir(ncfg: Any, model_name: str, task: str, data_hash: str, dtype: torch.dtype = torch.float32,
              peers: list[str] | None = None) -> Path:
    # scores computed in another dtype are another result: bf16 sets are never reused for an fp32 request
    compute = "" if dtype == torch.float32 else f"-{str(dtype).removeprefix('torch.')}"
    # another scorer's sets are another result too (grad_x_act's folder keeps its name from before the methods)
    return (Path(ncfg.store_dir) / model_name / task
            / f"{ncfg.definition}-{ncfg.reduction}-{ncfg.token_scope}-{data_hash}{compute}{method_tag(ncfg, peers)}")


def _stem(ncfg: Any) -> str:
    return f"{ncfg.scope}-p{float(ncfg.proportion):g}"


def _donor(folder: Path, code: str) -> tuple[Path, NeuronSet] | None:
    """A stored set of this folder that this code identified: its scores can be re-selected."""
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        nset = NeuronSet.load(path)
        if nset.meta.get("code_hash") == code:
            return path, nset
    return None


def check_compatible(nset: NeuronSet, pools: list[Pool], model_name: str, definition: str, where: str) -> None:
    problems = []
    if nset.meta.get("definition") != definition:
        problems.append(f"{where}: neuron set uses definition '{nset.meta.get('definition')}', this run uses '{definition}' (neurons.definition)")
    if nset.meta.get("model") != model_name or {key_str(k): v for k, v in nset.pool_sizes.items()} != pool_sizes(pools):
        problems.append(f"{where}: neuron set is for model '{nset.meta.get('model')}', not '{model_name}'; identify it on this model")
    if problems:
        raise ConfigError(problems)


def identify_task(model, tok, model_name: str, td: TaskData, ncfg: Any, data_cfg: Any, pools: list[Pool],
                  log_artifact=None, attribute_fn=attribute,
                  peers: dict[str, TaskData] | None = None) -> tuple[NeuronSet, dict[str, Any]]:
    """The task's NeuronSet at ``ncfg.proportion``: from the store when present, else the scorer
    ``neurons.method`` (``peers``: every task of the run, for the scorers that compare tasks)."""
    method = str(ncfg.get("method", "grad_x_act"))
    batches, data_hash = attribution_batches(tok, td, ncfg, data_cfg)
    peer_batches: dict[str, list[dict]] = {}
    peer_ids: list[str] = []
    if method in NEEDS_PEERS:
        encoded = {td.spec.name: (batches, data_hash)}
        for name, other in (peers or {}).items():
            if name not in encoded:
                encoded[name] = attribution_batches(tok, other, ncfg, data_cfg)
        if len(encoded) < 2:
            raise ConfigError(f"neurons.method={method} compares tasks: select >= 2 tasks (got {sorted(encoded)})")
        peer_batches = {n: e[0] for n, e in encoded.items()}
        peer_ids = sorted(f"{n}:{e[1]}" for n, e in encoded.items())  # the peers' data is part of the result
    folder = _attr_dir(ncfg, model_name, td.spec.name, data_hash, next(model.parameters()).dtype, peer_ids)
    stem = folder / _stem(ncfg)
    sizes = {p.key: p.size for p in pools}
    info: dict[str, Any] = {"path": f"{stem}.json", "source": "store"}
    code = code_hash()
    if ncfg.reuse and Path(f"{stem}.json").is_file():
        nset = NeuronSet.load(stem)
        if nset.meta.get("code_hash") == code:
            check_compatible(nset, pools, model_name, ncfg.definition, str(stem))
            return nset, info
        log.info("%s was identified by other code (%s): identifying it again", stem, nset.meta.get("code_hash"))
    if folder.is_dir():
        cleanup_temp_files(folder)  # a writer killed mid-save leaves its temp file
    found = _donor(folder, code) if ncfg.reuse else None
    t0 = time.perf_counter()
    if found is not None:
        path, donor = found
        check_compatible(donor, pools, model_name, ncfg.definition, str(path))
        scores, means = donor.scores, donor.means
        info["source"] = f"re-selected from {path.name}"
    else:
        check_ablation_sample(ncfg, pools)
        lcfg = ncfg.get("lape") or {}
        inp = ScoringInput(model, batches, pools, ncfg.reduction, ncfg.token_scope, ncfg.get("micro_batch_size"),
                           int(ncfg.get("ig_steps", 8)), ncfg.get("ablation_sample"), int(ncfg.seed), td.spec.name,
                           peer_batches, float(lcfg.get("filter_rate", 0.95)),
                           float(lcfg.get("activation_bar_ratio", 0.95)), attribute_fn)
        try:
            scores, means = score(method, inp)
        except NumericalError as e:  # named here: the scorers do not know the task
            raise NumericalError(
                f"identifying task '{td.spec.name}'s neurons: {e}; usually the model's weights hold nan/inf (a "
                "diverged training run, a damaged model file) or float16 overflow; fix: model.dtype=bfloat16 or "
                "float32, or a freshly loaded model; no neuron set was saved") from None
        info["source"] = "attribution"
        info["attribution_seconds"] = round(time.perf_counter() - t0, 2)
        info["attribution_examples"] = sum(int(b["input_ids"].shape[0]) for b in batches)
    meta = {
        "model": model_name, "task": td.spec.name, "definition": ncfg.definition, "proportion": float(ncfg.proportion),
        "scope": ncfg.scope, "reduction": ncfg.reduction, "token_scope": ncfg.token_scope, "split": ncfg.split,
        "max_examples": ncfg.max_examples, "seed": int(ncfg.seed), "data_fingerprint": data_hash, "kind": "task",
        "code_hash": code,  # a set stored by other code is identified again, never reused
    }
    if method != "grad_x_act":  # absent: grad_x_act (sets saved before the methods read the same)
        meta["method"] = method
        if method in NEEDS_PEERS:
            meta["peers"] = peer_ids
    nset = NeuronSet(select_top(scores, sizes, float(ncfg.proportion), ncfg.scope), sizes, meta, scores, means)
    if is_global_zero():  # under trainer=ddp every rank holds the same summed scores; rank 0 saves
        nset.save(stem)
        if log_artifact is not None:
            log_artifact(stem, nset)
    return nset, info


def control_draw_seed(ncfg: Any, source: str, draw: int) -> int:
    """The seed of one random control: a different draw per (source task, run seed, draw index)."""
    return zlib.crc32(f"{int(ncfg.control_seed)}|{source}|{int(ncfg.seed)}|{int(draw)}".encode()) & 0x7FFFFFFF


def restrict_matrices(nset: NeuronSet, pools: list[Pool], matrices: str) -> NeuronSet:
    """The set with only the units of the chosen matrix role (``neurons.matrices``); other pools empty."""
    if matrices == "all":
        return nset
    roles = MATRIX_FILTERS[matrices]
    keep = {p.key for p in pools if all(m.role in roles for m in p.rows)}
    empty = torch.empty(0, dtype=torch.long)
    idx = {k: (v if k in keep else empty) for k, v in nset.indices.items()}
    return NeuronSet(idx, nset.pool_sizes, {**nset.meta, "matrices": matrices}, nset.scores, nset.means)


def control_set(kind: str, reference: NeuronSet | None, pools: list[Pool], model_name: str, ncfg: Any,
                source: str = "", draw: int = 0) -> NeuronSet:
    """The set actually used: the task set itself, a same-count random control, or every FFN unit.

    A random control is drawn per (source task, run seed, draw) (``control_draw_seed``), so the random
    rows of a task x task matrix and the draws of ``neurons.control_seeds`` are different sets.
    """
    sizes = {p.key: p.size for p in pools}
    if kind == "task":
        assert reference is not None
        return reference
    if kind == "all_ffn":
        nset = NeuronSet(all_units(sizes), sizes, {"model": model_name, "definition": ncfg.definition, "kind": "all_ffn", "task": "all"})
        return restrict_matrices(nset, pools, ncfg.get("matrices", "all"))
    assert reference is not None
    seed = control_draw_seed(ncfg, source, draw)
    meta = {**reference.meta, "kind": "random", "control_seed": int(ncfg.control_seed), "control_draw": int(draw),
            "control_draw_seed": seed}
    return NeuronSet(random_like(reference.counts(), sizes, seed), sizes, meta)


def union_all(sets: list[NeuronSet]) -> NeuronSet:
    out = sets[0]
    for s in sets[1:]:
        out = out.union(s)
    return out


@torch.no_grad()
def set_summary(nset: NeuronSet) -> dict[str, Any]:
    per_layer: dict[int, int] = {}
    for k, v in nset.indices.items():
        per_layer[k[0]] = per_layer.get(k[0], 0) + int(v.numel())
    return {"count": nset.count(), "total": nset.total(), "fraction": round(nset.count() / max(nset.total(), 1), 6),
            "fingerprint": nset.fingerprint(), "per_layer": per_layer}


def wandb_artifact_logger(logger: Any):
    """A callback that logs a saved neuron set as a W&B artifact (None when not logging to W&B)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return None

    def log_set(stem: Path, nset: NeuronSet) -> None:
        import wandb

        name = f"neurons-{nset.meta['model']}-{nset.meta['task']}-{stem.name}".replace("/", "_")
        art = wandb.Artifact(name=name, type="neurons", metadata=nset.meta)
        art.add_file(f"{stem}.json")
        art.add_file(f"{stem}.safetensors")
        logger.experiment.log_artifact(art)

    return log_set


def sets_for_tasks(session: Any, names: list[str], pools: list[Pool],
                   attribute_fn=attribute) -> tuple[dict[str, NeuronSet], dict[str, dict]]:
    """Each named task's neuron set (``neurons.path`` overrides them all with one saved set)."""
    ncfg = session.cfg.neurons
    sets, infos = {}, {}
    if ncfg.get("path"):
        nset = NeuronSet.load(ncfg.path)
        check_compatible(nset, pools, session.model_name, ncfg.definition, str(ncfg.path))
        nset = restrict_matrices(nset, pools, ncfg.get("matrices", "all"))
        return dict.fromkeys(names, nset), {n: {"path": str(ncfg.path), "source": "neurons.path"} for n in names}
    log_set = wandb_artifact_logger(session.logger)
    for name in names:
        nset, info = identify_task(session.model, session.tok, session.model_name, session.data[name], ncfg,
                                   session.cfg.data, pools, log_set, attribute_fn,
                                   peers={n: session.data[n] for n in names})
        nset = restrict_matrices(nset, pools, ncfg.get("matrices", "all"))
        sets[name], infos[name] = nset, {**info, **set_summary(nset)}
    return sets, infos
