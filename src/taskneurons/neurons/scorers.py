"""Neuron scorers (``neurons.method``): every one returns ``(scores, means)`` keyed by pool, fp32 on the CPU,
so selection, NeuronSet, deactivation and neuron-only training take any of them.

- ``grad_x_act``: the paper's |dL/da · a| (``attribution.attribute``, unchanged);
- ``activation``: mean |a| over the in-scope tokens;
- ``integrated_gradients``: every FFN unit scaled together by α_k = k/S (k = 1..S, zero baseline);
  per token ig_u = mean_k a_u(α_k) · dL/dz_u(α_k) with z_u = α_k a_u, reduced like attribution's
  reductions (|ig| per token for mean/sum, |Σ_t ig| per example for abs_sum);
- ``exact_ablation``: L(unit off) − L(base), the SFT loss (mean over the target tokens of all
  attribution examples) with the unit zeroed at every position; NaN for units not in the seeded sample;
- ``random``: seeded uniform scores;
- ``lape``: LAPE (Tang et al. 2024) across the run's tasks, see :func:`lape_scores`.

``means`` is always the mean activation over the in-scope tokens (what mean replacement uses).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from taskneurons.data.encoding import IGNORE_INDEX
from taskneurons.models.loss import target_token_losses
from taskneurons.neurons.attribution import REDUCTIONS, TOKEN_SCOPES, attribute, scope_mask
from taskneurons.neurons.pools import Key, Pool

Scores = dict[Key, torch.Tensor]
ABLATION_ROWS = 64  # rows per ablation forward: a batch replicated once per unit switched off in it


@dataclass
class ScoringInput:
    """Everything a scorer may read; each scorer uses what it needs."""

    model: torch.nn.Module
    batches: list[dict[str, torch.Tensor]]
    pools: list[Pool]
    reduction: str = "mean"
    token_scope: str = "target"
    micro_batch_size: int | None = None
    ig_steps: int = 8
    ablation_sample: int | None = None
    seed: int = 0
    task: str = ""
    peer_batches: dict[str, list[dict[str, torch.Tensor]]] = field(default_factory=dict)  # lape: every task's
    lape_filter_rate: float = 0.95
    lape_activation_bar_ratio: float = 0.95
    attribute_fn: Callable = attribute  # grad_x_act under trainer=ddp: attribute_on_ranks


# --- shared machinery ---------------------------------------------------------------------------------------


@contextmanager
def _frozen_eval(model: torch.nn.Module) -> Iterator[torch.device]:
    """No parameter gradient, no dropout; the model's flags restored afterwards."""
    was_training = model.training
    frozen = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(frozen[n])
        model.train(was_training)


def _hook(pool: Pool, fn: Callable[[torch.Tensor], torch.Tensor | None]):
    """Call ``fn(activation)`` at the pool's activation site; a returned tensor replaces the activation."""
    if pool.act_side == "output":
        return pool.act.module.register_forward_hook(lambda m, i, o: fn(o))

    def pre(m, i):
        out = fn(i[0])
        return None if out is None else (out, *i[1:])

    return pool.act.module.register_forward_pre_hook(pre)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _reduce(tokens: torch.Tensor, rows: torch.Tensor, n_examples: int, reduction: str, denominator: int) -> torch.Tensor:
    """A batch's per-token signed attributions [N, U] reduced like ``attribution``'s reductions."""
    if reduction == "abs_sum":
        return tokens.new_zeros(n_examples, tokens.shape[1]).index_add_(0, rows, tokens).abs_().sum(0)
    total = tokens.abs().sum(0)
    return total / max(denominator, 1) if reduction == "mean" else total


def activation_pass(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], pools: list[Pool],
                    token_scope: str, stat: Callable[[torch.Tensor], torch.Tensor] = torch.abs) -> tuple[Scores, Scores]:
    """(mean of ``stat(a)``, mean of a) per unit over the in-scope tokens: forward passes only."""
    with _frozen_eval(model) as device, torch.no_grad():
        sums = {p.key: torch.zeros(p.size, dtype=torch.float32, device=device) for p in pools}
        act_sum = {p.key: torch.zeros(p.size, dtype=torch.float32, device=device) for p in pools}
        n, rows = 0, None

        def grab(key: Key, act: torch.Tensor) -> None:
            picked = act[rows].float()
            sums[key] += stat(picked).sum(0)
            act_sum[key] += picked.sum(0)

        handles = [_hook(p, lambda a, key=p.key: grab(key, a)) for p in pools]
        try:
            for batch in batches:
                batch = _to(batch, device)
                mask = scope_mask(batch, token_scope)
                rows, n = mask.nonzero(as_tuple=True), n + int(mask.sum())
                model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        finally:
            for h in handles:
                h.remove()
    n = max(n, 1)
    return {k: (v / n).cpu() for k, v in sums.items()}, {k: (v / n).cpu() for k, v in act_sum.items()}


# --- the scorers --------------------------------------------------------------------------------------------


def grad_x_act(inp: ScoringInput) -> tuple[Scores, Scores]:
    return inp.attribute_fn(inp.model, inp.batches, inp.pools, inp.reduction, inp.token_scope,
                            micro_batch_size=inp.micro_batch_size)


def activation(inp: ScoringInput) -> tuple[Scores, Scores]:
    return activation_pass(inp.model, inp.batches, inp.pools, inp.token_scope)


def ig_token_attributions(model: torch.nn.Module, batch: dict[str, torch.Tensor], pools: list[Pool], steps: int,
                          token_scope: str) -> tuple[dict[Key, torch.Tensor], torch.Tensor]:
    """Per in-scope token signed IG of every unit [N, U], and the example of each token.

    All pools are scaled by α at once (every position), so Σ over units and over every position of
    the signed IG → L(1) − L(0) (completeness on the path α ↦ L(α), L(0) = every FFN unit off) as the
    steps grow: dL/dα = Σ_u a_u(α) · dL/dz_u(α). a_u(α) is the unit's activation before its own
    scaling on that path (a unit downstream of another pool sees scaled inputs).
    """
    mask = scope_mask(batch, token_scope)
    rows = mask.nonzero(as_tuple=True)
    acc = {p.key: torch.zeros(len(rows[0]), p.size, dtype=torch.float32, device=batch["input_ids"].device)
           for p in pools}
    alpha = [0.0]

    def scale(key: Key, act: torch.Tensor) -> torch.Tensor:
        picked = act.detach()[rows].float()
        z = act * alpha[0]

        def on_grad(g: torch.Tensor, key=key, picked=picked) -> None:
            acc[key].add_(g[rows].float() * picked, alpha=1.0 / steps)

        z.register_hook(on_grad)
        return z

    handles = [_hook(p, lambda a, key=p.key: scale(key, a)) for p in pools]
    # the graph starts at the embedding output (parameters are frozen), as in attribution
    handles.append(model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.detach().requires_grad_(True)))
    try:
        for k in range(1, steps + 1):
            alpha[0] = k / steps
            with torch.enable_grad():
                losses, _ = target_token_losses(model, batch)
                if losses.numel():
                    losses.mean().backward()
    finally:
        for h in handles:
            h.remove()
    return acc, rows[0]


def integrated_gradients(inp: ScoringInput) -> tuple[Scores, Scores]:
    if inp.reduction not in REDUCTIONS or inp.token_scope not in TOKEN_SCOPES:
        raise ValueError(f"reduction {inp.reduction} / token_scope {inp.token_scope} unknown")
    with _frozen_eval(inp.model) as device:
        scores = {p.key: torch.zeros(p.size, dtype=torch.float32, device=device) for p in inp.pools}
        for batch in inp.batches:
            batch = _to(batch, device)
            targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            if targets == 0:
                continue
            tokens, rows = ig_token_attributions(inp.model, batch, inp.pools, int(inp.ig_steps), inp.token_scope)
            denominator = int(scope_mask(batch, inp.token_scope).sum())
            for key, t in tokens.items():
                # each batch's loss is the mean over its targets, scores summed over batches (as attribute's)
                scores[key] += _reduce(t, rows, batch["input_ids"].shape[0], inp.reduction, denominator)
    _, means = activation_pass(inp.model, inp.batches, inp.pools, inp.token_scope)
    return {k: v.cpu() for k, v in scores.items()}, means


def sample_units(pools: list[Pool], n: int | None, seed: int) -> dict[Key, torch.Tensor]:
    """Sorted unit ids per pool: all (``n`` None) or a seeded uniform sample of ``n`` over all units."""
    if n is None:
        return {p.key: torch.arange(p.size) for p in pools}
    total = sum(p.size for p in pools)
    if n > total:
        raise ValueError(f"neurons.ablation_sample={n} exceeds the model's {total} units")
    flat = torch.sort(torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:n]).values
    out, start = {}, 0
    for p in pools:
        out[p.key] = flat[(flat >= start) & (flat < start + p.size)] - start
        start += p.size
    return out


def sft_loss(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean cross-entropy over the target tokens of all batches (fp64 sum)."""
    device = next(model.parameters()).device
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            losses, _ = target_token_losses(model, _to(b, device))
            total, n = total + float(losses.double().sum()), n + losses.numel()
    return total / max(n, 1)


def _ablation_sums(model: torch.nn.Module, batch: dict[str, torch.Tensor], pool: Pool,
                   units: torch.Tensor) -> torch.Tensor:
    """Summed target-token loss of ``batch`` with each of ``units`` off in turn: the batch is replicated
    once per unit and replica j zeroes unit j at every position."""
    b = batch["input_ids"].shape[0]
    c = units.numel()
    rep = {k: v.repeat(c, *([1] * (v.dim() - 1))) for k, v in batch.items()}
    rep_units = units.to(batch["input_ids"].device).repeat_interleave(b)  # [c*b]

    def zero(act: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        act[torch.arange(act.shape[0], device=act.device), ..., rep_units] = 0
        return act

    h = _hook(pool, zero)
    try:
        losses, ex = target_token_losses(model, rep)
    finally:
        h.remove()
    return losses.double().new_zeros(c).index_add_(0, ex // b, losses.double())


def exact_ablation(inp: ScoringInput) -> tuple[Scores, Scores]:
    units = sample_units(inp.pools, inp.ablation_sample, inp.seed)
    with _frozen_eval(inp.model) as device, torch.no_grad():
        batches = [_to(b, device) for b in inp.batches]
        n_targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        base = sft_loss(inp.model, batches)
        scores = {p.key: torch.full((p.size,), float("nan"), dtype=torch.float32) for p in inp.pools}
        for p in inp.pools:
            ids = units[p.key]
            total = torch.zeros(ids.numel(), dtype=torch.float64, device=device)
            for b in batches:
                chunk = max(1, ABLATION_ROWS // b["input_ids"].shape[0])
                for i in range(0, ids.numel(), chunk):
                    total[i : i + chunk] += _ablation_sums(inp.model, b, p, ids[i : i + chunk])
            scores[p.key][ids] = (total / max(n_targets, 1) - base).float().cpu()
    _, means = activation_pass(inp.model, inp.batches, inp.pools, inp.token_scope)
    return scores, means


def _task_seed(seed: int, task: str) -> int:
    return zlib.crc32(f"{int(seed)}|{task}".encode()) & 0x7FFFFFFF


def random_scores(inp: ScoringInput) -> tuple[Scores, Scores]:
    g = torch.Generator().manual_seed(_task_seed(inp.seed, inp.task))
    scores = {p.key: torch.rand(p.size, generator=g) for p in inp.pools}
    _, means = activation_pass(inp.model, inp.batches, inp.pools, inp.token_scope)
    return scores, means


def lape_scores(probs: dict[str, Scores], task: str, filter_rate: float = 0.95,
                activation_bar_ratio: float = 0.95) -> Scores:
    """LAPE on activation probabilities ``probs[task][key][u]`` (fraction of tokens with a_u > 0).

    As in RUCAIBox/Language-Specific-Neurons: the probabilities are normalised over the tasks, the
    entropy H_u of that distribution is taken; a unit counts only if some task's probability exceeds
    the ``filter_rate`` quantile of all probabilities (units × tasks), and it belongs to every task
    whose probability exceeds the ``activation_bar_ratio`` quantile. Score of a unit of ``task``:
    log(T) − H_u (low entropy first); NaN for units that are not ``task``'s (never selected).
    """
    tasks = sorted(probs)
    keys = list(probs[tasks[0]])
    stacked = {k: torch.stack([probs[t][k].float() for t in tasks], -1) for k in keys}  # [U, T]
    flat = torch.cat([v.flatten() for v in stacked.values()])

    def quantile(rate: float) -> float:
        return float(flat.kthvalue(max(1, round(flat.numel() * rate))).values)

    top, bar = quantile(filter_rate), quantile(activation_bar_ratio)
    i = tasks.index(task)
    out = {}
    for k, p in stacked.items():
        norm = p / p.sum(-1, keepdim=True)
        norm = torch.nan_to_num(norm, nan=0.0)
        logs = torch.where(norm > 0, norm.log(), torch.zeros_like(norm))
        entropy = -(norm * logs).sum(-1)
        mine = ((p > top).any(-1)) & (p[:, i] > bar)
        out[k] = torch.where(mine, math.log(len(tasks)) - entropy, torch.full_like(entropy, float("nan")))
    return out


def lape(inp: ScoringInput) -> tuple[Scores, Scores]:
    if len(inp.peer_batches) < 2 or inp.task not in inp.peer_batches:
        raise ValueError(f"neurons.method=lape compares tasks: it needs >= 2 tasks including '{inp.task}', "
                         f"got {sorted(inp.peer_batches)}")
    probs = {t: activation_pass(inp.model, b, inp.pools, inp.token_scope, stat=lambda a: (a > 0).float())[0]
             for t, b in inp.peer_batches.items()}
    _, means = activation_pass(inp.model, inp.batches, inp.pools, inp.token_scope)
    return lape_scores(probs, inp.task, inp.lape_filter_rate, inp.lape_activation_bar_ratio), means


SCORERS: dict[str, Callable[[ScoringInput], tuple[Scores, Scores]]] = {
    "grad_x_act": grad_x_act,
    "activation": activation,
    "integrated_gradients": integrated_gradients,
    "exact_ablation": exact_ablation,
    "random": random_scores,
    "lape": lape,
}
NEEDS_PEERS = ("lape",)


def method_tag(ncfg: Any, peers: list[str] | None = None) -> str:
    """The neuron-store folder suffix of a method and the options its scores depend on ("" for grad_x_act,
    whose folder name predates the methods)."""
    method = str(ncfg.get("method", "grad_x_act"))
    if method == "grad_x_act":
        return ""
    if method == "integrated_gradients":
        return f"-ig{int(ncfg.get('ig_steps', 8))}"
    if method == "exact_ablation":
        n = ncfg.get("ablation_sample")
        return f"-exact_ablation-{'all' if n is None else f'n{int(n)}s{int(ncfg.seed)}'}"
    if method == "random":
        return f"-random-s{int(ncfg.seed)}"
    if method == "lape":
        lcfg = ncfg.get("lape") or {}
        spec = f"{sorted(peers or [])}|{lcfg.get('filter_rate', 0.95)}|{lcfg.get('activation_bar_ratio', 0.95)}"
        return f"-lape-{zlib.crc32(spec.encode()):08x}"
    return f"-{method}"


def score(method: str, inp: ScoringInput) -> tuple[Scores, Scores]:
    if method not in SCORERS:
        raise ValueError(f"neurons.method='{method}' must be one of {', '.join(SCORERS)}")
    return SCORERS[method](inp)
