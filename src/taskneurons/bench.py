"""`make bench`: speed and memory as ratios against a baseline measured in the same run.

Each benchmark writes outputs/bench/<name>.json. Not a test: numbers are reported, not asserted; the
targets from DESIGN.md are written beside them with a pass/fail flag so regressions are visible.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from taskneurons import PROJECT_ROOT
from taskneurons.data.encoding import collate_sft, encode_example, pad
from taskneurons.data.loading import load_tasks
from taskneurons.data.tasks import task_spec_from_config
from taskneurons.eval.scoring import label_loglik
from taskneurons.models.loading import load_model_and_tokenizer
from taskneurons.models.loss import target_only_loss
from taskneurons.neurons.attribution import attribute
from taskneurons.neurons.masking import deactivated
from taskneurons.neurons.neuronset import NeuronSet, random_like, select_top
from taskneurons.neurons.pools import neuron_pools
from taskneurons.neurons.sparse_finetune import NeuronDeltas
from taskneurons.runtime.atomic import atomic_write_json

OUT = PROJECT_ROOT / "outputs" / "bench"
MID_LLAMA = dict(config=dict(model_type="llama", hidden_size=768, intermediate_size=3072, num_hidden_layers=6,
                             num_attention_heads=12, num_key_value_heads=4, tie_word_embeddings=False))


def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load_models(which: list[str]) -> dict[str, tuple[Any, Any]]:
    """SmolLM2, and a random-init Llama about 3x its FFN width that shares its real tokenizer (so label
    strings are 1-2 tokens, as with any real model, not the bytes of the test tokenizer)."""
    smol = load_model_and_tokenizer(OmegaConf.load(PROJECT_ROOT / "conf" / "model" / "smollm2_135m.yaml"))
    models = {}
    for name in which:
        if name == "smollm2_135m":
            models[name] = smol
        else:
            tok = smol[1]
            config = AutoConfig.for_model(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **MID_LLAMA["config"])
            torch.manual_seed(0)
            models[name] = (AutoModelForCausalLM.from_config(config).eval(), tok)
    return models


def starter_batches(tok, task: str, n: int, batch_size: int, max_tokens: int):
    tcfg = OmegaConf.load(PROJECT_ROOT / "conf" / "task" / f"{task}.yaml")
    spec = task_spec_from_config(task, tcfg)
    data = load_tasks([spec], None, 0, n, 0, splits=("test",))[task]
    enc = [encode_example(tok, spec, ex, max_tokens, 16) for ex in data.test]
    prompts = [e.prompt_ids for e in enc]
    labels = [tok(spec.target_prefix + lab, add_special_tokens=False).input_ids for lab in spec.labels]
    return [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)], labels


@torch.no_grad()
def bench_loglik(models: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Label log-likelihood scoring vs one plain forward over the same prompt batches (target <= 1.2)."""
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

            t_plain, t_scored = timed(plain), timed(scored)
            rows[f"{mname}/{task}"] = {
                "labels": len(labels), "label_tokens": [len(x) for x in labels], "prompts": sum(len(b) for b in batches),
                "plain_forward_s": round(t_plain, 4), "loglik_s": round(t_scored, 4),
                "ratio": round(t_scored / t_plain, 3), "target": 1.2, "meets_target": t_scored / t_plain <= 1.2,
            }
    return rows


def train_batches(tok, n_batches: int = 3, batch_size: int = 8, max_tokens: int = 64) -> list[dict]:
    """Real Rotten Tomatoes training examples as SFT batches (8 x <=64 tokens, as in DEVELOPERS.md)."""
    tcfg = OmegaConf.load(PROJECT_ROOT / "conf" / "task" / "rotten_tomatoes.yaml")
    spec = task_spec_from_config("rotten_tomatoes", tcfg)
    data = load_tasks([spec], None, n_batches * batch_size, 1, 0)["rotten_tomatoes"]
    enc = [encode_example(tok, spec, ex, max_tokens - 4, 4) for ex in data.train]
    return [collate_sft(enc[i : i + batch_size], tok.pad_token_id, tok.eos_token_id) for i in range(0, len(enc), batch_size)]


def bench_identify(models: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Attribution pass vs a plain full fine-tuning forward+backward on the same batches (target <= 0.7)."""
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
        t_plain = timed(lambda: full_fwd_bwd(lambda m, b: m(**b).loss))
        t_target = timed(lambda: full_fwd_bwd(target_only_loss))
        t_attr = timed(attribution)
        rows[mname] = {
            "batches": f"{len(batches)} x {tuple(batches[0]['input_ids'].shape)}",
            "full_ft_fwd_bwd_s": round(t_plain, 4), "full_ft_fwd_bwd_target_only_loss_s": round(t_target, 4),
            "attribution_s": round(t_attr, 4), "ratio": round(t_attr / t_plain, 3),
            "ratio_vs_target_only_loss_ft": round(t_attr / t_target, 3), "target": 0.7, "meets_target": t_attr / t_plain <= 0.7,
        }
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

        t_plain, t_off = timed(evaluate, 5), timed(evaluate_deactivated, 5)
        rows[mname] = {"unmasked_s": round(t_plain, 4), "deactivated_s": round(t_off, 4), "ratio": round(t_off / t_plain, 3),
                       "target": 1.02, "meets_target": t_off / t_plain <= 1.02}
    return rows


def bench_neuron_ft(models: dict[str, tuple[Any, Any]], model_names: list[str]) -> dict[str, Any]:
    """Neuron-only fine-tuning at 10 % vs full fine-tuning: step time and peak memory (targets <= 0.75).

    Each mode runs in its own process so that peak RSS is that mode's own."""
    rows = {}
    for mname in model_names:
        res = {mode: _ft_worker_subprocess(mname, mode) for mode in ("full", "neurons")}
        full, neu = res["full"], res["neurons"]
        rows[mname] = {
            "full": full, "neurons_10pct": neu,
            "step_time_ratio": round(neu["step_s"] / full["step_s"], 3),
            "peak_rss_ratio": round(neu["peak_rss_mb"] / full["peak_rss_mb"], 3),
            "peak_extra_ratio": round(neu["peak_extra_mb"] / full["peak_extra_mb"], 3),
            "targets": {"step_time_ratio": 0.75, "peak_rss_ratio": 0.75},
            "meets_target": neu["step_s"] / full["step_s"] <= 0.75 and neu["peak_rss_mb"] / full["peak_rss_mb"] <= 0.75,
        }
    return rows


def _ft_worker_subprocess(model_name: str, mode: str) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "taskneurons.bench", "--ft-worker", mode, "--models", model_name],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS, so the peak is the training's own,
    # not the model loading's (which briefly holds two copies of the weights).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def ft_worker(model_name: str, mode: str) -> dict[str, Any]:
    model, tok = load_models([model_name])[model_name]
    batches = train_batches(tok)
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        params = list(model.parameters())
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        pools = neuron_pools(model)
        scores, _ = attribute(model, batches[:1], pools)
        sizes = {p.key: p.size for p in pools}
        deltas = NeuronDeltas(pools, NeuronSet(select_top(scores, sizes, 0.1), sizes, {"definition": "output_units"}))
        deltas.attach()
        params = list(deltas.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    model.train()
    import gc

    gc.collect()
    base = _status_mb("VmRSS")
    _reset_peak_rss()

    def step():
        for b in batches:
            opt.zero_grad(set_to_none=True)
            target_only_loss(model, b).backward()
            opt.step()

    t = timed(step, 2) / len(batches)
    peak = _status_mb("VmHWM")
    return {"step_s": round(t, 4), "trainable_params": sum(p.numel() for p in params),
            "peak_rss_mb": round(peak, 1), "peak_extra_mb": round(peak - base, 1), "rss_before_training_mb": round(base, 1)}


BENCHES: dict[str, Callable[[dict], dict]] = {
    "loglik": bench_loglik,
    "identify": bench_identify,
    "deactivated_eval": bench_deactivated_eval,
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", default=list(BENCHES), choices=[*BENCHES, "neuron_ft"])
    ap.add_argument("--models", nargs="*", default=["smollm2_135m", "mid_llama"])
    ap.add_argument("--ft-worker", choices=["full", "neurons"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.ft_worker:
        import json

        print(json.dumps(ft_worker(args.models[0], args.ft_worker)))
        return
    models = load_models(args.models)
    for name in [*args.only, "neuron_ft"] if args.only == list(BENCHES) else args.only:
        results = bench_neuron_ft(models, args.models) if name == "neuron_ft" else BENCHES[name](models)
        result = {"benchmark": name, "threads": torch.get_num_threads(), "results": results}
        path = Path(OUT) / f"{name}.json"
        atomic_write_json(path, result)
        for key, row in results.items():
            shown = {k: v for k, v in row.items() if "ratio" in k}
            print(f"{name:16s} {key:30s} {shown} {'ok' if row['meets_target'] else 'MISSED'}")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
