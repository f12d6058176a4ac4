"""Estimate a job's peak memory from the model's shape alone (no weights loaded): pure functions.

The estimate is the largest of the job's phases (evaluation, attribution, training), each a sum of
named parts in bytes:

- weights: parameters x bytes of the resolved dtype (+ 2 bytes each for bf16 autocast copies when full
  fine-tuning runs under ``bf16-mixed`` with fp32 master weights);
- what trains (``trains``): full -> every parameter; neurons -> ``proportion`` of the FFN parameters (the
  rows of the FFN matrices), held as fp32 deltas beside the frozen base; lora -> the adapters (fp32);
  gradients in the trainable's dtype and AdamW's two moments (2 x the trainable's bytes; fp32 = 8 B);
- activations kept for the backward: batch x sequence x layers x (ACT_HIDDEN x hidden + ACT_INTER x
  intermediate) values, + the attention scores (batch x heads x sequence^2 x layers), + the LM head's
  fp32 logits on target tokens (3 copies: logits, log-softmax, gradient);
- evaluation: one layer's activations at a time (no graph) + the KV cache of every prompt x label;
- the process itself (Python, torch, transformers, Lightning, data): RUNTIME_BYTES.
Measured against VmHWM on SmolLM2-135M (docs/reliability-numerics.md): within the factor the tests state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

GB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ACT_HIDDEN = 16      # values per token per layer of hidden width kept for backward (norms, q/k/v/o, residuals)
ACT_INTER = 4        # values per token per layer of FFN width (gate, up, activation, product)
EVAL_HIDDEN = 8      # a no-grad forward holds about one layer's worth of these at a time
EVAL_INTER = 3
EVAL_LABELS = 2      # label log-likelihood repeats the KV cache per label (most benchmark tasks are binary)
RUNTIME_BYTES = int(0.7 * GB)  # the interpreter and libraries before any model (CPU; on CUDA: context and allocator)


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model: counts from its config, not its weights."""

    params: int
    ffn_params: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_dim: int  # width of one layer's K (= V) projection: kv heads x head dim
    vocab: int


@dataclass(frozen=True)
class JobShape:
    """What the job does, read from its config (``runtime/memory_check.py``)."""

    trains: str = "none"                # none | neurons | lora | full
    dtype: str = "float32"              # the weights' resolved dtype
    mixed_bf16: bool = False            # trainer.precision bf16-mixed (compute and activations in bf16)
    batch: int = 8                      # training batch
    seq: int = 320                      # prompt + target tokens
    target: int = 64                    # target tokens (the LM head runs on these only)
    proportion: float = 0.1             # neuron-only: share of FFN rows trained
    lora_params: int = 0
    attribution: bool = False           # identifies neurons (a backward through frozen weights)
    attribution_batch: int = 4          # neurons.micro_batch_size (or batch_size)
    evaluates: bool = True
    eval_batch: int = 16
    gen_tokens: int = 32
    shards: int = 1                     # FSDP: parameters, gradients and optimizer state split this many ways


@dataclass
class Estimate:
    phase: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in self.parts.items() if v >= GB / 200)
        return f"{self.total / GB:.2f} GB ({self.phase}: {parts})"


def trainable_params(shape: ModelShape, job: JobShape) -> int:
    if job.trains == "full":
        return shape.params
    if job.trains == "neurons":
        return int(math.ceil(job.proportion * shape.ffn_params))
    if job.trains == "lora":
        return job.lora_params
    return 0


def _act_bytes(job: JobShape) -> int:
    return 2 if job.mixed_bf16 else DTYPE_BYTES[job.dtype]


def _graph_bytes(shape: ModelShape, job: JobShape, batch: int) -> int:
    """Activations a backward needs, for ``batch`` sequences of ``job.seq`` tokens."""
    per_token = ACT_HIDDEN * shape.hidden + ACT_INTER * shape.intermediate
    values = batch * job.seq * shape.layers * per_token + batch * shape.heads * job.seq ** 2 * shape.layers
    logits = 3 * 4 * batch * job.target * shape.vocab
    return values * _act_bytes(job) + logits


def phases(shape: ModelShape, job: JobShape) -> list[Estimate]:
    """Every phase the job runs, each with its parts (bytes)."""
    wb = DTYPE_BYTES[job.dtype]
    weights = shape.params * wb // max(job.shards if job.trains == "full" else 1, 1)
    base = {"weights": weights, "runtime": RUNTIME_BYTES}
    out = []
    if job.evaluates:
        act = job.eval_batch * job.seq * (EVAL_HIDDEN * shape.hidden + EVAL_INTER * shape.intermediate)
        # KV cache: every prompt repeated per label (log-likelihood), or grown by the generated tokens
        kv = 2 * shape.layers * job.eval_batch * max(EVAL_LABELS * job.seq, job.seq + job.gen_tokens) * shape.kv_dim
        out.append(Estimate("evaluation", {**base, "activations": (act + kv) * _act_bytes(job)
                                           + 2 * 4 * job.eval_batch * shape.vocab}))
    if job.attribution:
        out.append(Estimate("attribution", {**base, "activations": _graph_bytes(shape, job, job.attribution_batch)}))
    n = trainable_params(shape, job)
    if n:
        # full fine-tuning trains the weights themselves (in their dtype); deltas and adapters are fp32 copies
        tb = wb if job.trains == "full" else 4
        shards = max(job.shards, 1) if job.trains == "full" else 1
        parts = {**base, "trainable copy": 0 if job.trains == "full" else n * 4,
                 "gradients": n * tb // shards, "optimizer (AdamW)": 2 * n * tb // shards,
                 "activations": _graph_bytes(shape, job, job.batch)}
        if job.trains == "full" and job.mixed_bf16 and wb == 4:
            parts["bf16 autocast copies"] = shape.params * 2 // shards
        out.append(Estimate("training", parts))
    return out or [Estimate("loading", base)]


def peak(shape: ModelShape, job: JobShape) -> Estimate:
    return max(phases(shape, job), key=lambda e: e.total)


def with_changes(job: JobShape, **changes: Any) -> JobShape:
    return replace(job, **changes)


# --- the shape from a config, without weights ---------------------------------------------------------

def shape_of_config(config: Any) -> ModelShape:
    """Counts parameters exactly by building the model on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    from taskneurons.models.ffn import UnsupportedModelError, ffn_matrices

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    try:
        ffn = sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in ffn_matrices(model))
    except UnsupportedModelError:
        ffn = 0
    get = lambda *names, default=0: next((int(getattr(config, n)) for n in names  # noqa: E731
                                          if getattr(config, n, None) is not None), default)
    hidden = get("hidden_size", "n_embd", "d_model")
    heads = get("num_attention_heads", "n_head", "num_heads", default=1)
    kv_heads = get("num_key_value_heads", default=heads)
    return ModelShape(params=params, ffn_params=ffn, hidden=hidden,
                      intermediate=get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
                      layers=get("num_hidden_layers", "n_layer", "num_layers"), heads=heads,
                      kv_dim=kv_heads * (hidden // max(heads, 1)), vocab=get("vocab_size"))


def weights_only_shape(n_bytes: int, bytes_per_param: float) -> ModelShape:
    """A fallback when no config can be read (a packaged GGUF not converted yet): parameters from the
    file size; activations are then left out (they are small beside the weights for these models)."""
    return ModelShape(params=int(n_bytes / bytes_per_param), ffn_params=0, hidden=0, intermediate=0, layers=0,
                      heads=1, kv_dim=0, vocab=0)


def config_json(folder: Path) -> dict | None:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


# bytes per parameter of common GGUF quantisations (block scales included), for the file-size fallback
_GGUF_BYTES = {"Q4_0": 0.5625, "Q4_1": 0.625, "Q5_0": 0.6875, "Q5_1": 0.75, "Q8_0": 1.0625, "F16": 2.0, "F32": 4.0}


def model_shape(cfg: Any, cache_dir: str | Path | None = None) -> tuple[ModelShape | None, str]:
    """(the shape of ``model``'s config, where it was read); None when nothing can be read here."""
    from transformers import AutoConfig

    from taskneurons.models.loading import _gguf_path, converted_folder
    from taskneurons.models.tokenizers import byte_level_tokenizer

    source = cfg.get("source")
    if source == "tiny":
        arch = dict(cfg.config)
        return shape_of_config(AutoConfig.for_model(arch.pop("model_type"), vocab_size=len(byte_level_tokenizer()),
                                                    **arch)), "model.config"
    if source == "hub":
        try:
            config = AutoConfig.from_pretrained(cfg.hf_id, revision=cfg.get("revision") or None,
                                                trust_remote_code=bool(cfg.get("trust_remote_code", False)))
        except (OSError, ValueError):
            return None, f"no config.json for {cfg.hf_id} here"
        return shape_of_config(config), f"{cfg.hf_id} config.json"
    if source == "gguf_package":
        folder = converted_folder(cfg, cache_dir)
        data = config_json(folder)
        if data is not None:
            data.pop("_name_or_path", None)
            return shape_of_config(AutoConfig.for_model(data.pop("model_type"), **data)), str(folder / "config.json")
        gguf = _gguf_path(cfg)
        if gguf is not None:
            quant = next((q for q in _GGUF_BYTES if q in gguf.name.upper()), "Q4_1")
            return weights_only_shape(gguf.stat().st_size, _GGUF_BYTES[quant]), f"{gguf.name} size ({quant})"
    return None, "no model config"
