"""Switching neurons off at inference.

Weight path (default): zero the neurons' parameters (weight rows, bias entries, and for the
intermediate definition the down-projection columns) in place, and restore the saved values exactly
on exit. Inference then costs exactly what it did before.
Hook path: overwrite the activations with ``zero`` or the unit's ``mean`` activation (from the
attribution pass). For ``zero`` the two paths give the same logits (tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch

from taskneurons.neurons.neuronset import NeuronSet
from taskneurons.neurons.pools import Pool

REPLACEMENTS = ("zero", "mean")


def _targets(pools: list[Pool], nset: NeuronSet):
    """(unit-first parameter view, the set's units) for every parameter slice the set's neurons own."""
    for pool in pools:
        idx = nset.indices.get(pool.key)
        if idx is None or idx.numel() == 0:
            continue
        for up in pool.unit_params():
            view = up.tensor()
            yield view, idx.to(view.device)


@contextmanager
@torch.no_grad()
def deactivated(pools: list[Pool], nset: NeuronSet) -> Iterator[None]:
    """Zero the set's parameters for the duration; bit-exact restore afterwards (even on error)."""
    saved = []
    for view, idx in _targets(pools, nset):
        saved.append((view, idx, view.index_select(0, idx).clone()))
        view.index_fill_(0, idx, 0)
    try:
        yield
    finally:
        with torch.no_grad():
            for view, idx, values in saved:
                view.index_copy_(0, idx, values)


@contextmanager
def hook_replaced(pools: list[Pool], nset: NeuronSet, replacement: str = "zero") -> Iterator[None]:
    """Overwrite the set's activations in the forward pass with zero or the unit's mean activation."""
    if replacement not in REPLACEMENTS:
        raise ValueError(f"intervention.replacement='{replacement}' must be one of {', '.join(REPLACEMENTS)}")
    if replacement == "mean" and not nset.means:
        raise ValueError("mean replacement needs mean activations: identify the set again (they are saved with it)")
    handles = []
    for pool in pools:
        idx = nset.indices.get(pool.key)
        if idx is None or idx.numel() == 0:
            continue
        value = nset.means[pool.key][idx] if replacement == "mean" else None

        def overwrite(t: torch.Tensor, idx=idx, value=value) -> torch.Tensor:
            t = t.clone()
            i = idx.to(t.device)
            if value is None:
                t[..., i] = 0
            else:
                t[..., i] = value.to(t.device, t.dtype)
            return t

        if pool.act_side == "output":
            handles.append(pool.act.module.register_forward_hook(lambda m, i, o, f=overwrite: f(o)))
        else:
            handles.append(pool.act.module.register_forward_pre_hook(lambda m, i, f=overwrite: (f(i[0]), *i[1:])))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class DeactivateNeurons(pl.Callback):
    """Lightning callback: the set is off during test/validation/predict loops, restored after."""

    def __init__(self, pools: list[Pool], nset: NeuronSet, replacement: str = "zero", path: str = "weights"):
        self.pools, self.nset, self.replacement, self.path = pools, nset, replacement, path
        self._ctx = None

    def _on(self) -> None:
        ctx = deactivated(self.pools, self.nset) if self.path == "weights" else hook_replaced(self.pools, self.nset, self.replacement)
        ctx.__enter__()
        self._ctx = ctx

    def _off(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def on_test_start(self, trainer, pl_module) -> None:
        self._on()

    def on_test_end(self, trainer, pl_module) -> None:
        self._off()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._on()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._off()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._off()
