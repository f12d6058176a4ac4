"""Attribution split over the ranks of a process group (``identify trainer=ddp``).

Scores are sums over batches (each batch's reduction is local to it), so rank r scores batches
``r, r+W, ...`` with the ordinary ``attribute`` and the ranks all-reduce-sum the scores; the mean
activations are rebuilt from per-rank activation sums and in-scope token counts. Every rank ends with
the scores one process would have computed on all the batches (up to float summation order).
"""

from __future__ import annotations

from typing import Any

import torch

from taskneurons.neurons.attribution import attribute, scope_mask
from taskneurons.neurons.pools import Key, Pool


def attribute_on_ranks(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], pools: list[Pool],
                       reduction: str = "mean", token_scope: str = "target",
                       **options: Any) -> tuple[dict[Key, torch.Tensor], dict[Key, torch.Tensor]]:
    """``attribute`` (same arguments) over all ``batches``, each rank computing its shard; same return
    value on every rank."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return attribute(model, batches, pools, reduction, token_scope, **options)
    rank, world = dist.get_rank(), dist.get_world_size()
    shard = list(batches)[rank::world]
    scores, means = attribute(model, shard, pools, reduction, token_scope, **options)
    n_local = float(sum(int(scope_mask(b, token_scope).sum()) for b in shard))
    keys = list(scores)
    sizes = [scores[k].numel() for k in keys]
    # one all-reduce: [scores..., activation sums..., token count]; on the model's device (nccl needs CUDA)
    device = next(model.parameters()).device if dist.get_backend() == "nccl" else torch.device("cpu")
    flat = torch.cat([*(scores[k].float().flatten() for k in keys), *(means[k].float().flatten() * n_local for k in keys),
                      torch.tensor([n_local])]).to(device)
    dist.all_reduce(flat)
    flat = flat.cpu()
    n_total = max(float(flat[-1]), 1.0)
    parts = list(torch.split(flat[:-1], sizes + sizes))
    out_scores = {k: parts[i].reshape(scores[k].shape) for i, k in enumerate(keys)}
    out_means = {k: (parts[len(keys) + i] / n_total).reshape(means[k].shape) for i, k in enumerate(keys)}
    return out_scores, out_means
