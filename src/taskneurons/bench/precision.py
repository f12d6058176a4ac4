"""bf16 against fp32 on SmolLM2: the same work in both dtypes, timed in interleaved pairs in one process.

Each row is ``bf16 seconds / fp32 seconds`` (lower is better) for the recipe ``model.dtype=auto`` gives on
this machine: label scoring and greedy generation with bf16 weights (log-softmax and sums in fp32),
attribution with bf16 compute and fp32 accumulation, a neuron-only step (frozen bf16 base, fp32 delta rows
and AdamW state) and a full fine-tuning step (fp32 master weights and optimizer state, bf16 autocast), each
against the same work in fp32. Peak RSS of a whole zero-shot evaluation is measured per process.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from taskneurons.bench.fixtures import run_worker, starter_batches, train_batches
from taskneurons.bench.timing import paired_ratio
from taskneurons.eval.scoring import greedy_generate, label_loglik
from taskneurons.models.loss import target_only_loss
from taskneurons.neurons.attribution import attribute
from taskneurons.neurons.neuronset import NeuronSet, select_top
from taskneurons.neurons.pools import neuron_pools
from taskneurons.neurons.sparse_finetune import NeuronDeltas

TARGETS = {"label_scoring": 0.30, "generation": 0.45, "attribution": 0.45, "neuron_step": 0.50,
           "full_step": 0.70, "peak_rss": 0.8}


@torch.no_grad()
def _label_scoring(models: dict[str, Any], tok: Any) -> dict[str, Any]:
    rows = {}
    for task in ("rotten_tomatoes", "bbc_topic"):
        batches, labels = starter_batches(tok, task, 64, 16, 128)

        def score(model, batches=batches, labels=labels):
            for b in batches:
                label_loglik(model, b, labels, tok.pad_token_id)

        rows[task] = paired_ratio(lambda: score(models["float32"]), lambda: score(models["bfloat16"]),
                                  target=TARGETS["label_scoring"], min_pairs=4, max_pairs=8)
    return rows


@torch.no_grad()
def _generation(models: dict[str, Any], tok: Any) -> dict[str, Any]:
    batches, _ = starter_batches(tok, "bbc_title", 32, 16, 128)
    eos = [tok.eos_token_id]

    def generate(model):
        for b in batches:
            greedy_generate(model, b, 24, tok.pad_token_id, eos)

    return paired_ratio(lambda: generate(models["float32"]), lambda: generate(models["bfloat16"]),
                        target=TARGETS["generation"], min_pairs=3, max_pairs=6)


def _attribution(models: dict[str, Any], tok: Any) -> dict[str, Any]:
    batches = train_batches(tok)
    pools = {k: neuron_pools(m) for k, m in models.items()}
    return paired_ratio(lambda: attribute(models["float32"], batches, pools["float32"]),
                        lambda: attribute(models["bfloat16"], batches, pools["bfloat16"]),
                        target=TARGETS["attribution"], min_pairs=4, max_pairs=8)


def _neuron_step(models: dict[str, Any], tok: Any) -> dict[str, Any]:
    batches = train_batches(tok)
    sides = {}
    for name, model in models.items():
        pools = neuron_pools(model)
        sizes = {p.key: p.size for p in pools}
        scores, _ = attribute(model, batches[:1], pools)
        deltas = NeuronDeltas(pools, NeuronSet(select_top(scores, sizes, 0.1), sizes, {"definition": "output_units"}))
        sides[name] = (model, deltas, torch.optim.AdamW(list(deltas.parameters()), lr=1e-5, weight_decay=0.01))

    def steps(name):
        model, deltas, opt = sides[name]
        for p in model.parameters():
            p.requires_grad_(False)
        model.train()
        deltas.attach()
        try:
            for b in batches:
                opt.zero_grad(set_to_none=True)
                target_only_loss(model, b).backward()
                opt.step()
        finally:
            deltas.detach()
            model.eval()

    return paired_ratio(lambda: steps("float32"), lambda: steps("bfloat16"), target=TARGETS["neuron_step"],
                        min_pairs=4, max_pairs=8)


def _full_step(fp32_model: Any, tok: Any) -> dict[str, Any]:
    """Both sides train fp32 weights (their own copies); the candidate computes under bf16 autocast."""
    batches = train_batches(tok)
    sides = {}
    for name in ("fp32", "bf16_mixed"):
        model = copy.deepcopy(fp32_model).train()
        for p in model.parameters():
            p.requires_grad_(True)
        sides[name] = (model, torch.optim.AdamW(list(model.parameters()), lr=1e-5, weight_decay=0.01))

    def steps(name):
        model, opt = sides[name]
        for b in batches:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16_mixed"):
                loss = target_only_loss(model, b)
            loss.backward()
            opt.step()

    row = paired_ratio(lambda: steps("fp32"), lambda: steps("bf16_mixed"), target=TARGETS["full_step"],
                       min_pairs=3, max_pairs=6)
    sides.clear()  # free both copies before the next benchmark
    return row


def _peak_rss() -> dict[str, Any]:
    """Zero-shot evaluation of the starter tasks (the demo's caps), a fresh process per dtype."""
    tasks = ["rotten_tomatoes", "bbc_topic", "bbc_title"]
    runs = {dt: run_worker("--task-worker", "evaluate", *tasks, "--dtype", dt) for dt in ("float32", "auto")}
    ratio = runs["auto"]["peak_rss_mb"] / runs["float32"]["peak_rss_mb"]
    return {"runs": runs, "ratio": round(ratio, 3), "target": TARGETS["peak_rss"],
            "verdict": "ok" if ratio <= TARGETS["peak_rss"] else "missed"}


def bench_precision(models: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """bf16 / fp32 for every path (SmolLM2 in fp32 from ``models``; its bf16 copy made here)."""
    fp32_model, tok = models["smollm2_135m_fp32"]
    pair = {"float32": fp32_model.eval(), "bfloat16": copy.deepcopy(fp32_model).to(torch.bfloat16).eval()}
    rows: dict[str, Any] = {
        "label_scoring": _label_scoring(pair, tok),
        "generation": _generation(pair, tok),
        "attribution": _attribution(pair, tok),
        "neuron_step": _neuron_step(pair, tok),
    }
    del pair["bfloat16"]
    rows["full_step"] = _full_step(fp32_model, tok)
    rows["peak_rss"] = _peak_rss()
    return rows
