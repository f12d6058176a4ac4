"""The Python API: the framework's pieces on any HF causal LM and plain Python data, without Hydra.

Every function checks its arguments first and raises one :class:`~taskneurons.errors.ConfigError` naming
the argument and the fix, before any computation. See docs/api.md and docs/quickstart.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from taskneurons import CONF_DIR
from taskneurons.data.encoding import LengthSortedBatches, collate_sft, encode_example
from taskneurons.data.examples import Example, normalize_row, sample_examples
from taskneurons.data.tasks import TaskSpec, task_spec_from_config, validate_task_config
from taskneurons.errors import ConfigError
from taskneurons.models.ffn import UnsupportedModelError
from taskneurons.models.hf_folder import save_hf_folder
from taskneurons.neurons import masking
from taskneurons.neurons.attribution import attribute
from taskneurons.neurons.config import NeuronConfig
from taskneurons.neurons.neuronset import SCOPES, NeuronSet, check_proportion, select_top
from taskneurons.neurons.neuronset import random_like as _random_indices
from taskneurons.neurons.pools import DEFINITIONS, Key, Pool
from taskneurons.neurons.pools import neuron_pools as _pools
from taskneurons.neurons.sparse_finetune import NeuronDeltas, NeuronFinetuning

# data.max_prompt_tokens / data.max_target_tokens of conf/data/default.yaml (a test keeps them equal)
MAX_PROMPT_TOKENS = 256
MAX_TARGET_TOKENS = 64
PATHS = ("weights", "hooks")
_IN_MEMORY = {"type": "local", "path": "(in memory: examples passed to the API)"}
# deltas attached through attach_deltas and not merged yet: export_hf refuses such a model
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# --- models --------------------------------------------------------------------------------------


def load_model(name_or_cfg: str | Path | Mapping[str, Any], dtype: str | None = None,
               cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode.

    ``name_or_cfg``: a model config name of the package (``tiny_llama``, ``smollm2_135m``, …: the files
    of ``conf/model/``), a local HF folder, a Hugging Face hub id (offline: from the local cache), or a
    model config mapping in the format of ``conf/model/*.yaml``. ``dtype``: ``auto`` (bf16 where the
    device computes it fast, fp32 elsewhere), ``float32``, ``bfloat16``, ``float16``; ``None`` keeps the
    named config's own (``auto`` for folders and hub ids).
    """
    from taskneurons.models.loading import load_model_and_tokenizer

    cfg = _model_config(name_or_cfg)
    if dtype is not None:
        cfg["dtype"] = dtype
    model, tok = load_model_and_tokenizer(OmegaConf.create(cfg), cache_dir=cache_dir)
    model.taskneurons_name = str(cfg.get("name") or cfg.get("hf_id"))  # what neuron sets record as "model"
    return model, tok


def _model_config(name_or_cfg: Any) -> dict[str, Any]:
    if isinstance(name_or_cfg, DictConfig | Mapping):
        cfg = OmegaConf.to_container(OmegaConf.create(dict(name_or_cfg)), resolve=True)
        return dict(cfg)
    if not isinstance(name_or_cfg, str | Path):
        raise ConfigError(f"load_model(name_or_cfg=...): expected a config name, folder, hub id or mapping, "
                          f"got {type(name_or_cfg).__name__}")
    text = str(name_or_cfg)
    packaged = CONF_DIR / "model" / f"{text}.yaml"
    if "/" not in text and packaged.is_file():
        return dict(OmegaConf.to_container(OmegaConf.load(packaged), resolve=True))
    if Path(text).expanduser().is_dir():
        folder = str(Path(text).expanduser().resolve())
        return {"name": Path(folder).name, "source": "hub", "hf_id": folder, "dtype": "auto"}
    if "/" in text:
        return {"name": text.replace("/", "_"), "source": "hub", "hf_id": text, "dtype": "auto"}
    names = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    raise ConfigError(f"load_model(name_or_cfg='{text}'): not a packaged model config ({', '.join(names)}), "
                      "a local folder or a hub id of the form owner/name")


def model_name(model: Any) -> str:
    """The name a neuron set records for ``model``: the one ``load_model`` gave, else its HF name or type."""
    name = getattr(model, "taskneurons_name", None)
    config = getattr(model, "config", None)
    return str(name or getattr(config, "name_or_path", None) or getattr(config, "model_type", "model"))


def _check_model(model: Any, arg: str = "model") -> None:
    if not isinstance(model, torch.nn.Module) or not hasattr(getattr(model, "config", None), "model_type"):
        raise ConfigError(f"{arg}: expected a Hugging Face causal LM (a torch.nn.Module with .config.model_type), "
                          f"got {type(model).__name__}; load one with taskneurons.load_model(...)")


def neuron_pools(model: Any, definition: str = "output_units") -> list[Pool]:
    """The model's neuron pools under ``definition`` (``output_units`` or ``intermediate``)."""
    _check_model(model)
    if definition not in DEFINITIONS:
        raise ConfigError(f"definition='{definition}' must be one of {', '.join(DEFINITIONS)}")
    try:
        return _pools(model, definition)
    except UnsupportedModelError as e:
        raise ConfigError(f"model: {e}") from None


def _check_tokenizer(tokenizer: Any) -> tuple[int, int]:
    if not callable(tokenizer) or not hasattr(tokenizer, "eos_token_id"):
        raise ConfigError(f"tokenizer: expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("tokenizer has no eos_token: set tokenizer.eos_token (the targets end with it)")
    pad = tokenizer.pad_token_id
    return (eos if pad is None else pad), eos


# --- tasks and examples --------------------------------------------------------------------------


def make_task(spec: str | Mapping[str, Any] | TaskSpec, examples: Any = None, name: str | None = None) -> TaskSpec:
    """A task from a packaged task name (``conf/task/<name>.yaml``) or a mapping in that format.

    A mapping needs ``kind`` (``classification`` | ``generation``), ``prompt`` (a template such as
    ``"Review: {input}\\nSentiment:"``), ``metric`` (``accuracy`` | ``rougeL``) and, for classification,
    ``labels``; ``source`` may be left out (the examples come from the caller). ``examples``, when given,
    are checked against the task now, so a bad row fails here rather than mid-run.
    """
    if isinstance(spec, TaskSpec):
        task = spec
    elif isinstance(spec, str):
        path = CONF_DIR / "task" / f"{spec}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
            raise ConfigError(f"make_task(spec='{spec}'): no packaged task of that name; choose from "
                              f"{', '.join(names)} or pass a mapping with kind, prompt, metric and labels")
        task = _task_from_mapping(spec, dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True)))
    elif isinstance(spec, Mapping | DictConfig):
        values = dict(OmegaConf.to_container(OmegaConf.create(dict(spec)), resolve=True))
        values.setdefault("source", dict(_IN_MEMORY))
        task = _task_from_mapping(str(name or values.pop("name", None) or "task"), values)
    else:
        raise ConfigError(f"make_task(spec=...): expected a task name or a mapping, got {type(spec).__name__}")
    if examples is not None:
        to_examples(task, examples)
    return task


def _task_from_mapping(name: str, values: dict[str, Any]) -> TaskSpec:
    problems = validate_task_config(name, OmegaConf.create(values))
    if problems:
        raise ConfigError(problems)
    return task_spec_from_config(name, values)


def to_examples(task: TaskSpec, examples: Any, arg: str = "examples") -> list[Example]:
    """Rows (a list of dicts with the prompt's fields and ``target``, or a ``datasets.Dataset``) as Examples."""
    if not isinstance(task, TaskSpec):
        raise ConfigError(f"task: expected a TaskSpec from taskneurons.make_task(...), got {type(task).__name__}")
    if isinstance(examples, str | bytes | Mapping) or not isinstance(examples, Iterable):
        raise ConfigError(f"{arg}: expected a list of dicts or a datasets.Dataset, got {type(examples).__name__}")
    out, problems = [], []
    for i, row in enumerate(examples):
        if isinstance(row, Example):
            out.append(row)
            continue
        row = dict(row) if isinstance(row, Mapping) else row
        if isinstance(row, dict):
            row.setdefault("id", f"{task.name}-{i}")
        ex, err = normalize_row(row, task, f"{arg}[{i}]")
        if err:
            problems.append(err)
        else:
            out.append(ex)
    if problems:
        raise ConfigError(problems[:5] + ([f"… and {len(problems) - 5} more rows"] if len(problems) > 5 else []))
    if not out:
        raise ConfigError(f"{arg} is empty: give at least one row with the fields {task.prompt_fields} and 'target'")
    return out


# --- scores and sets -----------------------------------------------------------------------------


@dataclass
class NeuronScores:
    """Relevance and mean activation of every unit of every pool, with what they were computed on."""

    scores: dict[Key, torch.Tensor]
    means: dict[Key, torch.Tensor]
    pool_sizes: dict[Key, int]
    meta: dict[str, Any] = field(default_factory=dict)
    roles: dict[Key, tuple[str, ...]] = field(default_factory=dict)  # each pool's matrix roles (W1 "in", W2 "out")


def score_neurons(model: Any, tokenizer: Any, task: TaskSpec, examples: Any,
                  config: NeuronConfig | None = None, max_prompt_tokens: int = MAX_PROMPT_TOKENS,
                  max_target_tokens: int = MAX_TARGET_TOKENS, **options: Any) -> NeuronScores:
    """Gradient attribution |dL/dω · ω| of every FFN neuron on ``examples`` of ``task``.

    ``config`` (a :class:`NeuronConfig`) and ``options`` (its fields, e.g. ``definition="intermediate"``)
    say how; the model's own weights are left untouched.
    """
    cfg = (config or NeuronConfig()).replace(**options) if options else (config or NeuronConfig())
    if not isinstance(cfg, NeuronConfig):
        raise ConfigError(f"config: expected a taskneurons.NeuronConfig, got {type(cfg).__name__}")
    cfg.check()
    _check_model(model)
    pad_id, eos_id = _check_tokenizer(tokenizer)
    rows = to_examples(task, examples)
    pools = neuron_pools(model, cfg.definition)
    chosen = sample_examples(rows, cfg.max_examples, cfg.seed, task.name, "attribution-train")
    encoded = [encode_example(tokenizer, task, e, int(max_prompt_tokens), int(max_target_tokens)) for e in chosen]
    loader = DataLoader(encoded, batch_size=cfg.batch_size, shuffle=False,
                        collate_fn=lambda b: collate_sft(b, pad_id, eos_id))
    scores, means = attribute(model, loader, pools, cfg.reduction, cfg.token_scope, cfg.micro_batch_size)
    meta = {"model": model_name(model), "task": task.name, "definition": cfg.definition, "scope": cfg.scope,
            "proportion": cfg.proportion, "reduction": cfg.reduction, "token_scope": cfg.token_scope,
            "split": "train", "max_examples": cfg.max_examples, "seed": cfg.seed, "matrices": cfg.matrices,
            "attribution_examples": len(chosen), "kind": "task"}
    roles = {p.key: tuple(sorted({m.role for m in (*p.rows, *p.cols)})) for p in pools}
    return NeuronScores(scores, means, {p.key: p.size for p in pools}, meta, roles)


def select(scores: NeuronScores, proportion: float | None = None, scope: str | None = None) -> NeuronSet:
    """The top ``proportion`` of units by score (per (layer, matrix) pool, or ``scope="global"``).

    Defaults: the proportion and scope of the config the scores were computed with.
    """
    if not isinstance(scores, NeuronScores):
        raise ConfigError(f"scores: expected the NeuronScores of taskneurons.score_neurons, got {type(scores).__name__}")
    proportion = scores.meta.get("proportion", 0.1) if proportion is None else proportion
    scope = scores.meta.get("scope", "per_module") if scope is None else scope
    problems = check_proportion(proportion, "proportion")
    if scope not in SCOPES:
        problems.append(f"scope='{scope}' must be one of {', '.join(SCOPES)}")
    if problems:
        raise ConfigError(problems)
    meta = {**scores.meta, "proportion": float(proportion), "scope": scope}
    nset = NeuronSet(select_top(scores.scores, scores.pool_sizes, float(proportion), scope), dict(scores.pool_sizes),
                     meta, scores.scores, scores.means)
    matrices = meta.get("matrices", "all")
    if matrices == "all":
        return nset
    # neurons.matrices: keep the pools whose matrices all have the chosen role (W1 "in", W2 "out")
    role = {"W1": "in", "W2": "out"}[matrices]
    empty = torch.empty(0, dtype=torch.long)
    nset.indices = {k: (v if scores.roles.get(k) == (role,) else empty) for k, v in nset.indices.items()}
    return nset


def random_like(nset: NeuronSet, seed: int = 0) -> NeuronSet:
    """A random control set: as many units as ``nset`` in every pool, reproducible from ``seed``."""
    _check_set(nset)
    meta = {**nset.meta, "kind": "random", "control_draw_seed": int(seed)}
    return NeuronSet(_random_indices(nset.counts(), nset.pool_sizes, int(seed)), dict(nset.pool_sizes), meta)


def _check_set(nset: Any, arg: str = "nset") -> None:
    if not isinstance(nset, NeuronSet):
        raise ConfigError(f"{arg}: expected a taskneurons.NeuronSet (from select, NeuronSet.load or from_lape), "
                          f"got {type(nset).__name__}")


def pools_for(model: Any, nset: NeuronSet, arg: str = "nset") -> list[Pool]:
    """The model's pools under the set's definition, after checking that the set belongs to this model."""
    _check_set(nset, arg)
    definition = nset.meta.get("definition")
    if definition not in DEFINITIONS:
        raise ConfigError(f"{arg}.meta['definition']={definition!r} must be one of {', '.join(DEFINITIONS)}")
    pools = neuron_pools(model, definition)
    sizes = {p.key: p.size for p in pools}
    recorded, here = nset.meta.get("model"), model_name(model)
    if nset.pool_sizes != sizes:
        other = [d for d in DEFINITIONS if d != definition and nset.pool_sizes == {p.key: p.size for p in _pools(model, d)}]
        if other:  # this model's pools, but under the other definition: the set's metadata and indices disagree
            raise ConfigError(f"{arg}.meta['definition']='{definition}' but its pools are this model's '{other[0]}' pools; "
                              f"fix {arg}.meta['definition'] or use the set it was selected as")
        raise ConfigError(f"{arg} is for model '{recorded}' (definition '{definition}'), whose FFN has other shapes "
                          f"than this model's ('{here}'); score the neurons on this model")
    if recorded is not None and recorded != here:
        raise ConfigError(f"{arg} was identified on model '{recorded}', not '{here}'; score the neurons on this "
                          f"model, or, if it is a fine-tuned copy of '{recorded}', set {arg}.meta['model'] = '{here}'")
    return pools


# --- interventions -------------------------------------------------------------------------------


@contextmanager
def deactivated(model: Any, nset: NeuronSet, path: str = "weights", replacement: str = "zero") -> Iterator[Any]:
    """Switch the set's neurons off inside the ``with`` block; the model is restored bit-exactly after.

    ``path="weights"`` zeroes their parameters (inference costs what it did before); ``path="hooks"``
    overwrites their activations with ``replacement`` (``zero`` or ``mean``, the attribution's mean).
    """
    if path not in PATHS:
        raise ConfigError(f"path='{path}' must be one of {', '.join(PATHS)}")
    if path == "weights" and replacement != "zero":
        raise ConfigError(f"replacement='{replacement}' needs path='hooks' (the weights path zeroes parameters)")
    if replacement not in masking.REPLACEMENTS:
        raise ConfigError(f"replacement='{replacement}' must be one of {', '.join(masking.REPLACEMENTS)}")
    if replacement == "mean" and not nset.means:
        raise ConfigError("replacement='mean' needs the set's mean activations: select it from score_neurons' scores")
    pools = pools_for(model, nset)
    ctx = masking.deactivated(pools, nset) if path == "weights" else masking.hook_replaced(pools, nset, replacement)
    with ctx:
        yield model


def attach_deltas(model: Any, nset: NeuronSet) -> NeuronDeltas:
    """Neuron-only fine-tuning from a plain PyTorch loop: freeze ``model``, add trainable fp32 deltas for the
    set's neurons to its forward pass. Optimise ``deltas.parameters()``; ``deltas.merge()`` folds them into
    the weights (then the model is an ordinary HF model again); ``deltas.detach()`` drops them."""
    pools = pools_for(model, nset)
    for p in model.parameters():
        p.requires_grad_(False)
    deltas = NeuronDeltas(pools, nset)
    deltas.attach()
    _ATTACHED.setdefault(model, weakref.WeakSet()).add(deltas)
    return deltas


def finetuning_callback(model: Any, nset: NeuronSet) -> NeuronFinetuning:
    """Neuron-only fine-tuning under Lightning: a callback for a LightningModule whose ``.model`` is ``model``
    (e.g. ``taskneurons.lit.module.CausalLMModule``); it freezes the base, trains the deltas, merges at the end."""
    return NeuronFinetuning(pools_for(model, nset), nset)


def deactivation_callback(model: Any, nset: NeuronSet, path: str = "weights",
                          replacement: str = "zero") -> masking.DeactivateNeurons:
    """Under Lightning: the set is off during test and validation loops, restored after."""
    if path not in PATHS:
        raise ConfigError(f"path='{path}' must be one of {', '.join(PATHS)}")
    return masking.DeactivateNeurons(pools_for(model, nset), nset, replacement, path)


def _unmerged(model: Any) -> bool:
    return any(d._handles for d in _ATTACHED.get(model, ()))


def import_lape(masks: Any, model: Any, names: list[str] | None = None) -> list[NeuronSet]:
    """LAPE activation masks (a path or the loaded list, see docs/api.md) as ``intermediate`` NeuronSets of
    ``model`` (which gives the layer count and FFN sizes the masks are checked against)."""
    from taskneurons.neurons.lape import from_lape

    sizes = [p.size for p in neuron_pools(model, "intermediate")]
    return from_lape(masks, sizes, model_name(model), names)


def export_lape(sets: NeuronSet | list[NeuronSet], path: str | Path) -> Path:
    """Write ``intermediate`` NeuronSets as one LAPE mask file (``torch.save`` of [set][layer] LongTensors)."""
    from taskneurons.neurons.lape import save_lape

    sets = [sets] if isinstance(sets, NeuronSet) else list(sets)
    for i, s in enumerate(sets):
        _check_set(s, f"sets[{i}]")
    return save_lape(sets, path)


# --- evaluation ----------------------------------------------------------------------------------


def evaluate_task(model: Any, tokenizer: Any, task: TaskSpec, examples: Any, batch_size: int = 16,
                  cls_scorers: tuple[str, ...] = ("loglik",), max_prompt_tokens: int = MAX_PROMPT_TOKENS,
                  max_target_tokens: int = MAX_TARGET_TOKENS, **eval_options: Any) -> dict[str, Any]:
    """The task's score on ``examples`` (no Trainer): accuracy in % for classification (label log-likelihood
    by default; ``cls_scorers=("loglik", "generate")`` adds greedy decoding), ROUGE-L in % for generation.

    ``eval_options`` are keys of ``conf/eval/default.yaml`` (e.g. ``gen_max_new_tokens=20``). The returned
    dict is what metrics.json holds per task (``score``, ``n``, per-scorer accuracies, …).
    """
    from taskneurons.lit.module import CausalLMModule

    _check_model(model)
    _check_tokenizer(tokenizer)
    rows = to_examples(task, examples)
    eval_cfg = OmegaConf.load(CONF_DIR / "eval" / "default.yaml")
    unknown = sorted(set(eval_options) - set(eval_cfg))
    if unknown:
        raise ConfigError(f"unknown evaluation option(s) {', '.join(unknown)}; known: {', '.join(eval_cfg)}")
    scorers = tuple(cls_scorers)
    if not scorers or any(s not in ("loglik", "generate") for s in scorers):
        raise ConfigError(f"cls_scorers={scorers} must name loglik and/or generate")
    eval_cfg = OmegaConf.merge(eval_cfg, {"cls_scorers": list(scorers), "primary_cls_scorer": scorers[0], **eval_options})
    encoded = [encode_example(tokenizer, task, e, int(max_prompt_tokens), int(max_target_tokens)) for e in rows]
    module = CausalLMModule(model, tokenizer, eval_cfg)
    module.set_eval_tasks([task])
    was_training = model.training
    model.eval()
    try:
        module.on_test_epoch_start()
        order = LengthSortedBatches([len(e.prompt_ids) for e in encoded], int(batch_size))
        for i, batch in enumerate(order):
            module.test_step([encoded[j] for j in batch], i)
        module.on_test_epoch_end()
    finally:
        model.train(was_training)
    result = dict(module.results[task.name])
    result["samples"] = module.samples()[task.name]
    return result


# --- export --------------------------------------------------------------------------------------


def export_hf(model: Any, tokenizer: Any, folder: str | Path, push_to_hub: str | None = None,
              private: bool = True) -> Path:
    """Write ``model`` and ``tokenizer`` as a standard Hugging Face folder (safetensors, config, tokenizer)
    that ``AutoModelForCausalLM.from_pretrained(folder)`` loads with the same logits.

    Neuron deltas must be merged first (``deltas.merge()``): hooks are not part of a saved model.
    ``push_to_hub="owner/name"`` also uploads it (needs network and a login).
    """
    _check_model(model)
    if not hasattr(model, "save_pretrained") or not hasattr(tokenizer, "save_pretrained"):
        raise ConfigError("export_hf: model and tokenizer must be Hugging Face objects (with save_pretrained)")
    if _unmerged(model):
        raise ConfigError("export_hf: the model has neuron deltas attached and not merged; call deltas.merge() "
                          "first (hooks are not saved with a model)")
    return save_hf_folder(model, tokenizer, folder, {"source_model": model_name(model)}, push_to_hub, private)


def export_continual(run_dir: str | Path, folder: str | Path, stage: int | None = None, task: str | None = None,
                     verify: bool = False, push_to_hub: str | None = None, private: bool = True) -> dict[str, Any]:
    """Write the model of a continual run after ``stage`` (1-based; default the last finished) as a standard
    Hugging Face folder, and return what was written (``taskneurons_export.json``'s record).

    ``run_dir``: the run's folder (``metrics.json`` beside its config). NCFT, SeqFT, MIGU and MTL weights as
    trained; SeqLoRA and O-LoRA adapters merged; W-NCFT needs ``task`` (its rows are weighted per task).
    ``verify=True`` re-scores the export on the run's own test examples and adds ``verify``: per task the
    run's score and the export's, and their mean gold-label log-likelihoods. Per-Task FT keeps no weights
    (ConfigError). Every check runs before the model loads.
    """
    from taskneurons.continual.export import open_continual_run, stage_model
    from taskneurons.continual.export import verify as verify_export

    if not isinstance(run_dir, str | Path) or not isinstance(folder, str | Path):
        raise ConfigError("export_continual(run_dir, folder): both are paths (str or pathlib.Path)")
    run = open_continual_run(run_dir)
    exported = stage_model(run, stage, task)
    record = dict(exported.provenance)
    if verify:
        record["verify"] = verify_export(run, exported)
    save_hf_folder(exported.model, exported.tok, folder, record, push_to_hub, private)
    return {**record, "folder": str(folder)}


__all__ = [
    "NeuronConfig", "NeuronScores", "attach_deltas", "deactivated", "deactivation_callback", "evaluate_task",
    "export_continual", "export_hf", "export_lape", "finetuning_callback", "import_lape", "load_model", "make_task", "model_name", "neuron_pools", "pools_for",
    "random_like", "score_neurons", "select", "to_examples",
]
