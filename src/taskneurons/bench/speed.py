"""Speed benchmarks: each a candidate timed against its baseline in interleaved pairs, same process."""

from __future__ import annotations

from typing import Any

import torch

from taskneurons.bench.fixtures import starter_batches, train_batches
from taskneurons.bench.timing import paired_ratio
from taskneurons.data.encoding import pad
from taskneurons.eval.scoring import label_loglik
from taskneurons.models.loss import target_only_loss
from taskneurons.neurons.attribution import attribute
from taskneurons.neurons.masking import deactivated
from taskneurons.neurons.neuronset import NeuronSet, random_like
from taskneurons.neurons.pools import neuron_pools


@torch.no_grad()
def bench_loglik(models: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Label log-likelihood scoring vs one plain forward over the same prompt batches (target <= 0.8)."""
    rows = {}
    for mname, (model, tok) in models.items():
        for task in ("rotten_tomatoes", "bbc_topic"):
            batches, labels = starter_batches(tok, task, 64, 16, 128)

            def plain(batches=batches, tok=tok, model=model):
                for b in batches:
                    ids, mask = pad(b, tok.pad_token_id, "left")
                    model(input_ids=ids, attention_mask=mask)

            def scored(batches=batches, tok=tok, model=model, labels=labels):
                for b in batches:
                    label_loglik(model, b, labels, tok.pad_token_id)

            rows[f"{mname}/{task}"] = {
                "labels": len(labels), "label_tokens": [len(x) for x in labels], "prompts": sum(len(b) for b in batches),
                **paired_ratio(plain, scored, target=0.8),
            }
    return rows


def bench_identify(models: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Attribution vs the fair fine-tuning forward+backward on the same batches (target <= 0.75).

    The fair baseline also runs the LM head at target positions only (``target_only_loss``), as
    attribution does; the ratio against the HF loss (head at every position) is kept for reference."""
    rows = {}
    for mname, (model, tok) in models.items():
        batches = train_batches(tok)
        pools = neuron_pools(model)
        params = list(model.parameters())

        def full_fwd_bwd(loss_fn, batches=batches, model=model, params=params):
            for p in params:
                p.requires_grad_(True)
            for b in batches:
                loss_fn(model, b).backward()
                for p in params:
                    p.grad = None

        def attribution(batches=batches, model=model, pools=pools):
            attribute(model, batches, pools)

        model.train(False)
        fair = paired_ratio(lambda: full_fwd_bwd(target_only_loss), attribution, target=0.75)
        hf = paired_ratio(lambda: full_fwd_bwd(lambda m, b: m(**b).loss), attribution, target=0.7, min_pairs=3, max_pairs=3)
        for p in params:
            p.requires_grad_(False)
        rows[mname] = {"batches": f"{len(batches)} x {tuple(batches[0]['input_ids'].shape)}",
                       **fair, "vs_hf_loss_full_ft": hf}
    return rows


@torch.no_grad()
def bench_deactivated_eval(models: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Evaluation (label log-likelihood) with a 10 % neuron set switched off vs unmasked (target <= 1.02)."""
    rows = {}
    for mname, (model, tok) in models.items():
        batches, labels = starter_batches(tok, "rotten_tomatoes", 64, 16, 128)
        pools = neuron_pools(model)
        sizes = {p.key: p.size for p in pools}
        nset = NeuronSet(random_like({k: round(0.1 * n) for k, n in sizes.items()}, sizes, 0), sizes, {"definition": "output_units"})

        def evaluate(batches=batches, labels=labels, tok=tok, model=model):
            for b in batches:
                label_loglik(model, b, labels, tok.pad_token_id)

        def evaluate_deactivated(nset=nset, pools=pools):
            with deactivated(pools, nset):
                evaluate()

        rows[mname] = paired_ratio(evaluate, evaluate_deactivated, target=1.02, min_pairs=6, max_pairs=15)
    return rows


def bench_neuron_ft_speed(models: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Neuron-only fine-tuning at 10 % vs full fine-tuning (AdamW): step time, interleaved (target <= 0.75).

    Both run on one copy of the model: the full step with every parameter trainable, the neuron step with
    the base frozen and the delta rows attached (peak memory is measured per process in memory.py)."""
    import copy

    from taskneurons.neurons.neuronset import select_top
    from taskneurons.neurons.sparse_finetune import NeuronDeltas

    rows = {}
    for mname, (loaded, tok) in models.items():
        model = copy.deepcopy(loaded).train()
        batches = train_batches(tok)
        pools = neuron_pools(model)
        sizes = {p.key: p.size for p in pools}
        scores, _ = attribute(model, batches[:1], pools)
        deltas = NeuronDeltas(pools, NeuronSet(select_top(scores, sizes, 0.1), sizes, {"definition": "output_units"}))
        params = list(model.parameters())
        opt_full = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
        opt_neurons = torch.optim.AdamW(list(deltas.parameters()), lr=1e-5, weight_decay=0.01)

        def steps(opt, batches=batches, model=model):
            for b in batches:
                opt.zero_grad(set_to_none=True)
                target_only_loss(model, b).backward()
                opt.step()

        def full(params=params, opt=opt_full):
            for p in params:
                p.requires_grad_(True)
            steps(opt)

        def neurons(params=params, deltas=deltas, opt=opt_neurons):
            for p in params:
                p.requires_grad_(False)
            deltas.attach()
            try:
                steps(opt)
            finally:
                deltas.detach()

        rows[mname] = {"trainable_params": {"full": sum(p.numel() for p in params), "neurons_10pct": deltas.n_trainable()},
                       **paired_ratio(full, neurons, target=0.75, min_pairs=4, max_pairs=8)}
        del model, opt_full, opt_neurons, deltas
    return rows
