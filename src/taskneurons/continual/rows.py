"""Neuron parameters as data: snapshots of the selected rows, writing them back, and W-NCFT's
similarity-weighted rows (PAPER.md §7.2, Eq. 10-12).

A neuron's parameters are named ``"<layer>.<pool>/<matrix>/<w|b|c>"``: ``w`` its weight row (unit axis
0 of ``unit_weight()``), ``b`` its bias entry, ``c`` its column of an "out" matrix (intermediate
definition). A *snapshot* maps each name to ``{"index": unit ids, "values": the units' values with the
unit axis first}``: exactly the parameters a stage changed, so a checkpoint holds only those.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from taskneurons.neurons.neuronset import NeuronSet
from taskneurons.neurons.pools import Pool, key_str

VARIANTS = ("normalized", "literal", "delta")
Rows = dict[str, dict[str, torch.Tensor]]


def unit_tensors(pools: list[Pool]) -> dict[str, torch.Tensor]:
    """Every neuron parameter tensor with its unit axis first (views: writes reach the model), keyed by
    ``Pool.unit_params`` names."""
    return {up.name: up.tensor() for p in pools for up in p.unit_params()}


def _pool_key(name: str) -> str:
    return name.split("/", 1)[0]


@torch.no_grad()
def snapshot(pools: list[Pool], nset: NeuronSet) -> Rows:
    """The current values of ``nset``'s parameters (copies, on the CPU)."""
    idx = {key_str(k): v for k, v in nset.indices.items() if v.numel()}
    out: Rows = {}
    for name, t in unit_tensors(pools).items():
        units = idx.get(_pool_key(name))
        if units is not None:
            out[name] = {"index": units.cpu().clone(), "values": t.index_select(0, units.to(t.device)).detach().cpu().clone()}
    return out


@torch.no_grad()
def write_rows(pools: list[Pool], rows: Rows) -> None:
    tensors = unit_tensors(pools)
    for name, r in rows.items():
        t = tensors[name]
        t.index_copy_(0, r["index"].to(t.device), r["values"].to(device=t.device, dtype=t.dtype))


@torch.no_grad()
def current_rows(pools: list[Pool], rows: Rows) -> Rows:
    """What the model holds now at ``rows``' positions (copies, on the model's device)."""
    tensors = unit_tensors(pools)
    return {n: {"index": r["index"], "values": tensors[n].index_select(0, r["index"].to(tensors[n].device)).clone()}
            for n, r in rows.items()}


@contextmanager
def rows_written(pools: list[Pool], rows: Rows) -> Iterator[None]:
    """Write ``rows`` into the model for the duration of the block, then restore exactly what was there."""
    saved = current_rows(pools, rows)
    write_rows(pools, rows)
    try:
        yield
    finally:
        write_rows(pools, saved)


def similarity_weights(fea_j: torch.Tensor, trained: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 10-11: softmax over k of cos(fea_j, fea_k); no temperature."""
    feats = torch.stack([f.float() for f in trained])
    sims = torch.nn.functional.cosine_similarity(fea_j.float().unsqueeze(0), feats, dim=-1)
    return torch.softmax(sims, dim=0)


@torch.no_grad()
def weighted_rows(after: list[Rows], before: list[Rows], weights: torch.Tensor, variant: str) -> Rows:
    """Eq. 12 for every neuron owned by at least one trained task k (non-task neurons are not touched).

    ``after[k]`` / ``before[k]``: the values of task k's neurons right after / before its stage.
    - normalized: ``Σ_k s_k w^(k) / Σ_k s_k`` over the tasks owning the neuron (NCFT for unshared ones)
    - literal:    ``Σ_k s_k w^(k)`` (the unnormalised Eq. 12)
    - delta:      ``w^(0) + Σ_k s_k (w^(k) - w^(k-1))``, w^(0) the value before the first owner's stage
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown W-NCFT variant '{variant}'; choose one of {', '.join(VARIANTS)}")
    if len(after) != len(weights):
        raise ValueError(f"{len(after)} stages but {len(weights)} weights")
    out: Rows = {}
    for name in sorted({n for a in after for n in a}):
        owners = [k for k in range(len(after)) if name in after[k]]
        union = torch.unique(torch.cat([after[k][name]["index"] for k in owners]))  # sorted
        ref = after[owners[0]][name]["values"]
        if variant == "normalized":
            out[name] = {"index": union, "values": _normalized(after, weights, name, owners, union)}
            continue
        num = torch.zeros((union.numel(), *ref.shape[1:]), dtype=torch.float64)
        base = torch.zeros_like(num)
        filled = torch.zeros(union.numel(), dtype=torch.bool)
        for k in owners:
            pos = torch.searchsorted(union, after[k][name]["index"])
            s = float(weights[k])
            w_after = after[k][name]["values"].double()
            if variant == "delta":
                w_before = before[k][name]["values"].double()
                first = ~filled[pos]  # the first owner (in stage order) supplies w^(0)
                base[pos[first]] = w_before[first]
                filled[pos] = True
                num.index_add_(0, pos, s * (w_after - w_before))
            else:
                num.index_add_(0, pos, s * w_after)
        vals = num if variant == "literal" else base + num
        out[name] = {"index": union, "values": vals.to(ref.dtype)}
    return out


def _normalized(after: list[Rows], weights: torch.Tensor, name: str, owners: list[int],
                union: torch.Tensor) -> torch.Tensor:
    """Normalized Eq. 12 for one tensor. A unit with one owner keeps that owner's values as they are (the
    weighted mean of one value): copied, not computed, so only the shared units cost float64 arithmetic —
    W-NCFT builds these rows for every evaluated task."""
    ref = after[owners[0]][name]["values"]
    positions = [torch.searchsorted(union, after[k][name]["index"]) for k in owners]
    count = torch.zeros(union.numel(), dtype=torch.int64)
    for pos in positions:
        count.index_add_(0, pos, torch.ones_like(pos))
    vals = torch.empty((union.numel(), *ref.shape[1:]), dtype=ref.dtype)
    shared = count > 1
    slot = torch.cumsum(shared.long(), 0) - 1  # a shared unit's row in the float64 accumulators
    n_shared = int(shared.sum())
    num = torch.zeros((n_shared, *ref.shape[1:]), dtype=torch.float64)
    den = torch.zeros(n_shared, dtype=torch.float64)
    for k, pos in zip(owners, positions, strict=True):
        w_after = after[k][name]["values"]
        own = ~shared[pos]
        vals[pos[own]] = w_after[own]
        if n_shared:
            sh = ~own
            s = float(weights[k])
            num.index_add_(0, slot[pos[sh]], s * w_after[sh].double())
            den.index_add_(0, slot[pos[sh]], torch.full((int(sh.sum()),), s, dtype=torch.float64))
    if n_shared:
        vals[shared] = (num / den.view(-1, *([1] * (num.dim() - 1)))).to(ref.dtype)
    return vals


def rows_bytes(rows: Rows) -> int:
    return sum(r["values"].numel() * r["values"].element_size() + r["index"].numel() * 8 for r in rows.values())
