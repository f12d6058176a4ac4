"""The scorers (``neurons.method``) against exact ablation, on one model and its tasks (``make methods``).

Per task and scorer: (1) Spearman of the scores with the exact ablation ΔL on the units exact ablation
scored (every unit, or a seeded sample), with a bootstrap interval over those units; (2) ablation curves:
accuracy and gold-label log-probability on the task's test examples with the scorer's top p % switched
off (per (layer, matrix)) vs random sets of the same counts (``draws`` of them); (3) specificity: the
own task's accuracy drop minus the mean drop of the other tasks, with a bootstrap interval over test
examples; (4) cost: seconds and peak memory of the scorer relative to grad_x_act on the same examples.
"""

from __future__ import annotations

import gc
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats as sps

from taskneurons.data.encoding import encode_prompt, encode_target
from taskneurons.data.examples import sample_examples
from taskneurons.eval.scoring import label_loglik
from taskneurons.neurons.masking import deactivated
from taskneurons.neurons.neuronset import NeuronSet, random_like, select_top
from taskneurons.neurons.pools import Key, Pool
from taskneurons.neurons.scorers import ScoringInput, score
from taskneurons.report.stats import bootstrap_ci, t_interval

COMPARED = ("grad_x_act", "activation", "integrated_gradients", "random", "lape")
TRUTH = "exact_ablation"


@dataclass
class EvalSet:
    """A classification task's test prompts, gold label indices and label token ids."""

    prompts: list[list[int]]
    gold: list[int]
    label_ids: list[list[int]]


def eval_set(tok, td: Any, n: int, seed: int, max_prompt_tokens: int) -> EvalSet:
    spec = td.spec
    chosen = sample_examples(td.test, n, seed, spec.name, "methods-eval")
    return EvalSet([encode_prompt(tok, spec, e.fields, max_prompt_tokens) for e in chosen],
                   [spec.labels.index(e.target) for e in chosen],
                   [encode_target(tok, spec, lab, 64) for lab in spec.labels])


def evaluate(model: torch.nn.Module, es: EvalSet, pad_id: int, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per example: correct (0/1, label log-likelihood argmax) and log p(gold label | prompt)."""
    correct, gold_lp = [], []
    for i in range(0, len(es.prompts), batch_size):
        s = label_loglik(model, es.prompts[i : i + batch_size], es.label_ids, pad_id).float().cpu()
        g = torch.tensor(es.gold[i : i + batch_size])
        correct += (s.argmax(-1) == g).tolist()
        gold_lp += s[torch.arange(len(g)), g].tolist()
    return np.asarray(correct, dtype=float), np.asarray(gold_lp, dtype=float)


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float]:
    """(result, seconds, peak MB above the start): CUDA allocator peak on a GPU, VmHWM (RSS) on the CPU."""
    from taskneurons.runtime.rss import reset_peak_rss, status_mb
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        reset_peak_rss()
        base = status_mb("VmRSS")  # after the reset, so that the peak is never below it
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = status_mb("VmHWM") - base
    return out, time.perf_counter() - t0, float(peak)


def _flat(scores: dict[Key, torch.Tensor], keys: list[Key]) -> np.ndarray:
    return torch.cat([scores[k].double().flatten() for k in keys]).numpy()


def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Spearman's ρ of x and y and a percentile bootstrap interval over the (x, y) pairs. NaN in x (a
    unit the scorer left unscored, e.g. LAPE's units of other tasks) ranks below every scored unit."""
    x = np.where(np.isnan(x), np.nanmin(x) - 1 if np.isfinite(x).any() else 0.0, x)
    if np.unique(x).size < 2 or np.unique(y).size < 2:  # e.g. no sampled unit is a LAPE unit of the task
        return {"rho": None, "lo": None, "hi": None, "n_units": int(x.size)}
    rho = float(sps.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.ConstantInputWarning)  # a resample can be constant: left out
        for _ in range(n_boot):
            i = rng.integers(0, x.size, x.size)
            r = sps.spearmanr(x[i], y[i]).statistic
            if np.isfinite(r):
                boots.append(r)
    a = (1 - level) / 2
    lo, hi = (np.quantile(boots, [a, 1 - a]) if boots else (np.nan, np.nan))
    return {"rho": round(rho, 4), "lo": round(float(lo), 4), "hi": round(float(hi), 4), "n_units": int(x.size)}


def _drop_ci(base: dict[str, np.ndarray], off: dict[str, np.ndarray], own: str, n_boot: int = 1000,
             seed: int = 0) -> dict:
    """Own task's accuracy drop minus the mean drop of the others (points), bootstrap over test examples."""
    rng = np.random.default_rng(seed)
    diff = {t: 100 * (base[t] - off[t]) for t in base}
    others = [t for t in diff if t != own]

    def spec(d: dict[str, np.ndarray]) -> float:
        return float(d[own].mean() - np.mean([d[t].mean() for t in others]))

    boots = [spec({t: v[rng.integers(0, v.size, v.size)] for t, v in diff.items()}) for _ in range(n_boot)]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"specificity": round(spec(diff), 3), "lo": round(float(lo), 3), "hi": round(float(hi), 3),
            "own_drop": round(float(diff[own].mean()), 3),
            "other_drop": round(float(np.mean([diff[t].mean() for t in others])), 3)}


def compare_methods(model: torch.nn.Module, tok: Any, pools: list[Pool], batches: dict[str, list[dict]],
                    evals: dict[str, EvalSet], *, proportions: tuple[float, ...] = (0.01, 0.03, 0.1),
                    draws: int = 3, ig_steps: int = 8, ablation_sample: int | None = None, seed: int = 0,
                    methods: tuple[str, ...] = COMPARED, n_boot: int = 1000) -> dict[str, Any]:
    """Every number of the methods artefact (see the module docstring), keyed by task and method."""
    device = next(model.parameters()).device
    sizes = {p.key: p.size for p in pools}
    keys = [p.key for p in pools]
    tasks = list(batches)
    pad_id = tok.pad_token_id
    base = {t: evaluate(model, evals[t], pad_id) for t in evals}
    out: dict[str, Any] = {"tasks": tasks, "methods": list(methods), "proportions": list(proportions),
                           "draws": draws, "base": {t: {"accuracy": round(100 * float(a.mean()), 2),
                                                       "gold_logprob": round(float(g.mean()), 4)}
                                                   for t, (a, g) in base.items()},
                           "spearman": {}, "curves": {}, "specificity": {}, "cost": {}}

    def inp(task: str) -> ScoringInput:
        return ScoringInput(model, batches[task], pools, "mean", "target", ig_steps=ig_steps,
                            ablation_sample=ablation_sample, seed=seed, task=task, peer_batches=batches)

    def run_off(nset: NeuronSet) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        with deactivated(pools, nset):
            return {t: evaluate(model, evals[t], pad_id) for t in evals}

    for task in tasks:
        (truth, _), t_sec, t_mem = measure(lambda task=task: score(TRUTH, inp(task)), device)
        scored = ~np.isnan(_flat(truth, keys))
        y = _flat(truth, keys)[scored]
        costs = {TRUTH: (t_sec, t_mem)}
        random_cache: dict[tuple, list] = {}
        out["spearman"][task], out["curves"][task], out["specificity"][task] = {}, {}, {}
        for method in methods:
            (scores, _), sec, mem = measure(lambda method=method, task=task: score(method, inp(task)), device)
            costs[method] = (sec, mem)
            x = _flat(scores, keys)[scored]
            out["spearman"][task][method] = {
                "signed": spearman_ci(x, y, n_boot, seed), "abs": spearman_ci(x, np.abs(y), n_boot, seed)}
            if task not in evals:
                continue  # a generation task: no accuracy curve
            curve = []
            for p in proportions:
                nset = NeuronSet(select_top(scores, sizes, p), sizes, {"task": task})
                off = run_off(nset)
                sig = tuple(sorted(nset.counts().items()))
                if sig not in random_cache:  # random sets depend only on the counts: shared by scorers
                    random_cache[sig] = []
                    for d in range(draws):
                        rseed = zlib.crc32(f"{seed}|{task}|{p}|{d}".encode()) & 0x7FFFFFFF
                        random_cache[sig].append(run_off(NeuronSet(random_like(nset.counts(), sizes, rseed), sizes)))
                rnd = random_cache[sig]
                acc = bootstrap_ci(100 * off[task][0], n_boot=n_boot, seed=seed)
                lp = bootstrap_ci(off[task][1], n_boot=n_boot, seed=seed)
                racc = t_interval([100 * r[task][0].mean() for r in rnd])
                rlp = t_interval([r[task][1].mean() for r in rnd])
                curve.append({"proportion": p, "count": nset.count(), "accuracy": acc.as_dict(),
                              "gold_logprob": lp.as_dict(), "random_accuracy": racc.as_dict(),
                              "random_gold_logprob": rlp.as_dict()})
                if len(evals) > 1:
                    base_acc = {t: v[0] for t, v in base.items()}
                    out["specificity"][task].setdefault(method, {})[str(p)] = _drop_ci(
                        base_acc, {t: v[0] for t, v in off.items()}, task, n_boot, seed)
            out["curves"][task][method] = curve
        ref_sec, ref_mem = costs.get("grad_x_act", (None, None))
        out["cost"][task] = {m: {"seconds": round(s, 3), "peak_mb": round(mb, 1),
                                 "time_vs_grad_x_act": round(s / ref_sec, 2) if ref_sec else None,
                                 "memory_vs_grad_x_act": round(mb / ref_mem, 2) if ref_mem and ref_mem > 0 else None}
                             for m, (s, mb) in costs.items()}
    return out
