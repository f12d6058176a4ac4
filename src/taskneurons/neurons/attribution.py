"""Gradient attribution of FFN neurons: R_u = |dL/dω_u · ω_u| per token, reduced over target tokens.

No weight gradient is ever computed: all parameters are frozen and the graph starts at the input
embeddings' output, so backward only propagates activation gradients (about one forward's cost,
against two for a fine-tuning backward). Scores accumulate in fp32 on the model's device.

Reductions (per batch, then summed over batches):
- ``mean``: mean over in-scope tokens of |g·a| (NA-MNMT; the paper's cited implementation);
- ``sum``: sum over in-scope tokens of |g·a|;
- ``abs_sum``: |Σ_t g·a| per example, summed over examples (the first-order loss change of zeroing the
  unit at every in-scope position).
Token scope: ``target`` (positions whose next token is a target token; prompt and padding excluded)
or ``all`` (every non-padding position).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch

from taskneurons.data.encoding import IGNORE_INDEX
from taskneurons.errors import NumericalError
from taskneurons.models.loss import target_only_loss
from taskneurons.neurons.pools import Key, Pool

REDUCTIONS = ("mean", "sum", "abs_sum")
TOKEN_SCOPES = ("target", "all")


def scope_mask(batch: dict[str, torch.Tensor], token_scope: str) -> torch.Tensor:
    """[B, T] bool: positions whose activations are scored."""
    if token_scope == "all":
        return batch["attention_mask"].bool()
    mask = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    mask[:, :-1] = batch["labels"][:, 1:] != IGNORE_INDEX
    return mask


class _Recorder:
    """Hooks that score every pool's units on one batch at a time.

    Only the in-scope positions are kept: the forward hook copies the activation rows at those positions
    (for target-token scope a few tokens out of each prompt) and the gradient hook multiplies them with
    the gradient rows at the same positions. The hook closures never reference the activation tensor
    itself: a tensor whose grad_fn holds a closure that holds the tensor is a cycle through C++ that
    Python's garbage collector cannot see, and every activation of every batch would stay alive.
    """

    def __init__(self, pools: list[Pool], reduction: str, device: torch.device):
        self.pools = pools
        self.reduction = reduction
        self.scores = {p.key: torch.zeros(p.size, dtype=torch.float32, device=device) for p in pools}
        self.act_sum = {p.key: torch.zeros(p.size, dtype=torch.float32, device=device) for p in pools}
        self.n_tokens = 0
        self.handles: list = []
        self._rows: tuple[torch.Tensor, torch.Tensor] | None = None  # (example, position) of in-scope tokens
        self._n_examples = 0
        self._denominator = 1  # the mean's token count: the whole logical batch's, also when micro-batched
        self._selected: dict[Key, torch.Tensor] = {}  # in-scope activation rows of the current batch

    @property
    def mask(self) -> torch.Tensor | None:
        return None if self._rows is None else self._mask

    @mask.setter
    def mask(self, mask: torch.Tensor) -> None:
        """[B, T] bool mask of the positions scored in the next forward/backward."""
        self._mask = mask
        self._rows = mask.nonzero(as_tuple=True)  # indexing by (example, position) never copies the whole tensor
        self._n_examples = mask.shape[0]
        self._denominator = max(int(mask.sum()), 1)
        self._selected.clear()

    def set_denominator(self, n_tokens: int) -> None:
        """A micro-batch's |g·a| are summed and divided by the token count of its whole batch."""
        self._denominator = max(int(n_tokens), 1)

    def _capture(self, key: Key, act: torch.Tensor) -> None:
        rows = self._rows
        with torch.no_grad():
            picked = act.detach()[rows].float()  # [N, U]
            self.act_sum[key] += picked.sum(0)
        self._selected[key] = picked
        if act.requires_grad:
            act.register_hook(partial(self._on_grad, key))

    def _on_grad(self, key: Key, grad: torch.Tensor) -> None:
        with torch.no_grad():
            picked = self._selected.pop(key)
            ga = grad[self._rows].float().mul_(picked)  # [N, U]
            if self.reduction == "abs_sum":
                per_example = ga.new_zeros(self._n_examples, ga.shape[1]).index_add_(0, self._rows[0], ga)
                self.scores[key] += per_example.abs_().sum(0)
            elif ga.shape[0]:
                total = ga.abs_().sum(0)
                self.scores[key] += total / self._denominator if self.reduction == "mean" else total

    def attach(self, model: torch.nn.Module) -> None:
        self.attach_pools()
        # the graph must start somewhere: make the embedding output a leaf that requires grad
        emb = model.get_input_embeddings()
        self.handles.append(emb.register_forward_hook(lambda m, i, o: o.detach().requires_grad_(True)))

    def attach_pools(self) -> None:
        for p in self.pools:
            if p.act_side == "output":
                h = p.act.module.register_forward_hook(lambda m, i, o, key=p.key: self._capture(key, o))
            else:
                h = p.act.module.register_forward_pre_hook(lambda m, i, key=p.key: self._capture(key, i[0]))
            self.handles.append(h)

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def split_batch(batch: dict[str, torch.Tensor], size: int | None) -> list[dict[str, torch.Tensor]]:
    """Rows [i, i + size) of a batch, each cut to its own last non-padding column (batches are right-padded)."""
    n = batch["input_ids"].shape[0]
    if not size or size >= n:
        return [batch]
    out = []
    for i in range(0, n, size):
        micro = {k: v[i : i + size] for k, v in batch.items()}
        length = int(micro["attention_mask"].any(0).nonzero().max()) + 1
        out.append({k: v[:, :length] for k, v in micro.items()})
    return out


def attribute(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    pools: list[Pool],
    reduction: str = "mean",
    token_scope: str = "target",
    micro_batch_size: int | None = None,
) -> tuple[dict[Key, torch.Tensor], dict[Key, torch.Tensor]]:
    """Relevance scores and mean activations of every unit of every pool, in fp32 on the CPU.

    ``micro_batch_size`` splits each batch for the forward/backward (peak memory follows the micro-batch)
    without changing the scores: each micro-batch's loss is weighted by its share of the batch's target
    tokens, so gradients are those of the whole batch, and the mean divides by the whole batch's tokens.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"neurons.reduction='{reduction}' must be one of {', '.join(REDUCTIONS)}")
    if token_scope not in TOKEN_SCOPES:
        raise ValueError(f"neurons.token_scope='{token_scope}' must be one of {', '.join(TOKEN_SCOPES)}")
    device = next(model.parameters()).device
    was_training = model.training
    frozen = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()  # no dropout: scores must be deterministic
    rec = _Recorder(pools, reduction, device)
    rec.attach(model)
    try:
        for b, batch in enumerate(batches, start=1):
            batch = {k: v.to(device) for k, v in batch.items()}
            in_scope = int(scope_mask(batch, token_scope).sum())
            targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            rec.n_tokens += in_scope
            for micro in split_batch(batch, micro_batch_size):
                micro_targets = int((micro["labels"][:, 1:] != IGNORE_INDEX).sum())
                if micro_targets == 0:
                    continue  # no loss, no gradient: nothing to score here
                rec.mask = scope_mask(micro, token_scope)
                rec.set_denominator(in_scope)
                with torch.enable_grad():
                    loss = target_only_loss(model, micro)
                    if not bool(torch.isfinite(loss)):  # its gradients, and so every score, would be nan
                        raise NumericalError(f"attribution batch {b}: the loss is {float(loss)}")
                    (loss * (micro_targets / targets)).backward()
            # one sum per pool: a nan/inf score (overflowing activations x gradients) names its batch
            if rec.scores and not bool(torch.isfinite(torch.stack([s.sum() for s in rec.scores.values()])).all()):
                raise NumericalError(f"attribution batch {b}: relevance scores are not finite (the loss was)")
    finally:
        rec.detach()
        for n, p in model.named_parameters():
            p.requires_grad_(frozen[n])
        model.train(was_training)
    means = {k: (v / max(rec.n_tokens, 1)).cpu() for k, v in rec.act_sum.items()}
    return {k: v.cpu() for k, v in rec.scores.items()}, means
