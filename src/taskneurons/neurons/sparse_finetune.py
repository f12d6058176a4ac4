"""Neuron-only fine-tuning: trainable delta rows for the selected neurons, the base frozen.

Each selected neuron gets small trainable parameters added on top of the frozen weights through
forward hooks (``y[..., idx] += x @ ΔWᵀ + Δb`` for rows, ``y += x[..., idx] @ ΔWᵀ`` for columns), so
the optimizer (AdamW, weight decay included) only ever sees the deltas: its state is proportional
to the selection and every other parameter stays bit-identical. ``merge`` folds the deltas into the
weights, leaving an ordinary HF model that saves and loads as usual.

The deltas (and so AdamW's moments) are fp32 whatever the model's dtype: a bf16 base computes in bf16 and
the few trainable rows keep full precision (a bf16 parameter would lose most small updates to rounding);
the hooks cast them to the activations' dtype, and ``merge`` rounds them into the weights once.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from taskneurons.neurons.neuronset import NeuronSet
from taskneurons.neurons.pools import Key, Pool, UnitParam, key_str

_MASTER = torch.float32  # the trainable deltas' dtype


class NeuronDeltas(nn.Module):
    def __init__(self, pools: list[Pool], nset: NeuronSet):
        super().__init__()
        self.pools = [p for p in pools if nset.indices.get(p.key) is not None and nset.indices[p.key].numel()]
        self.nset = nset
        self.row_w, self.row_b, self.col_w = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        self._handles: list = []
        # (the unit parameter, its delta's name in row_w / row_b / col_w): Pool.unit_params names what moves
        self._units: list[tuple[UnitParam, str, Key]] = []
        for pool in self.pools:
            idx = nset.indices[pool.key]
            for up in pool.unit_params():
                name, m = self._name(pool, up.matrix), up.matrix
                device = m.weight.device
                if up.kind == "w":
                    self.row_w[name] = nn.Parameter(torch.zeros(idx.numel(), m.in_features, dtype=_MASTER, device=device))
                elif up.kind == "b":
                    self.row_b[name] = nn.Parameter(torch.zeros(idx.numel(), dtype=_MASTER, device=device))
                else:  # a column of the out matrix: stored [out_features, n] as the hook multiplies it
                    self.col_w[name] = nn.Parameter(torch.zeros(m.out_features, idx.numel(), dtype=_MASTER, device=device))
                self._set_index(name, idx.to(device))
                self._units.append((up, name, pool.key))

    def delta_params(self) -> list[tuple[str, nn.Parameter, torch.Tensor, Key]]:
        """``(kind, delta, unit indices, pool key)`` per neuron parameter (kind as in ``UnitParam``: w, b, c);
        a ``"c"`` delta has its units on axis 1, the others on axis 0."""
        return [(up.kind, self._delta(up.kind, name), self._index(name), key) for up, name, key in self._units]

    def _delta(self, kind: str, name: str) -> nn.Parameter:
        return {"w": self.row_w, "b": self.row_b, "c": self.col_w}[kind][name]

    def _set_index(self, name: str, idx: torch.Tensor) -> None:
        # a buffer, so the indices follow the module to the training device
        self.register_buffer(f"index_{name}", idx, persistent=False)

    def _index(self, name: str) -> torch.Tensor:
        return getattr(self, f"index_{name}")

    @staticmethod
    def _name(pool: Pool, m) -> str:
        return f"{key_str(pool.key)}.{m.name}".replace(".", "_")

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def attach(self) -> None:
        """Add the deltas to the model's forward pass (idempotent)."""
        if self._handles:
            return
        for pool in self.pools:
            for m in pool.rows:
                self._handles.append(m.module.register_forward_hook(self._row_hook(self._name(pool, m))))
            for m in pool.cols:
                self._handles.append(m.module.register_forward_hook(self._col_hook(self._name(pool, m))))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _row_hook(self, name: str):
        def hook(module, inputs, out):
            x = inputs[0]
            b = self.row_b.get(name)
            b = None if b is None else b.to(x.dtype)
            delta = nn.functional.linear(x, self.row_w[name].to(x.dtype), b)
            return out.index_add(-1, self._index(name), delta.to(out.dtype))

        return hook

    def _col_hook(self, name: str):
        def hook(module, inputs, out):
            x = inputs[0].index_select(-1, self._index(name))
            return out + nn.functional.linear(x, self.col_w[name].to(x.dtype)).to(out.dtype)

        return hook

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the deltas into the weights and remove the hooks; the deltas are zeroed after."""
        self.detach()
        for up, name, _ in self._units:
            t = up.tensor()
            delta = self._delta(up.kind, name)
            delta = delta.t() if up.kind == "c" else delta  # stored [out, n]; the unit-first view wants [n, out]
            t.index_add_(0, self._index(name), delta.to(t.dtype))
        for p in self.parameters():
            p.zero_()


class NeuronFinetuning(pl.Callback):
    """Lightning callback: freeze the model, train delta rows for ``nset`` only, merge them at the end."""

    def __init__(self, pools: list[Pool], nset: NeuronSet):
        self.pools, self.nset = pools, nset
        self.deltas: NeuronDeltas | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.deltas is not None:
            return
        for p in pl_module.model.parameters():
            p.requires_grad_(False)
        self.deltas = NeuronDeltas(self.pools, self.nset)
        pl_module.neuron_deltas = self.deltas  # a submodule: its parameters are what the optimizer sees
        self.deltas.attach()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.deltas is not None:
            self.deltas.merge()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.deltas is not None:
            self.deltas.detach()
