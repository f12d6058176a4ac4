"""MIGU (Du et al., EMNLP 2024 Findings; wenyudu/MIGU): full fine-tuning in which, at every optimizer step,
each linear layer of the transformer blocks (attention and FFN) updates only its output rows whose L1
output magnitude over the step's batch is above the ``quantile`` of that layer's rows.

The *update* of the other rows is exactly zero, not only their gradient: AdamW would still move them
through its moments and its weight decay. So before ``optimizer.step`` their weight/bias rows and their
rows of every parameter-shaped optimizer state (exp_avg, exp_avg_sq) are saved, and written back after
the step (rows of a state the step created are set to the zeros it started from). The per-parameter
step counter is shared by the whole tensor and is left as it is. Other parameters (norms, embeddings,
the LM head) train as in SeqFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from taskneurons.models.ffn import arch_spec


@dataclass(frozen=True)
class MaskedLinear:
    name: str
    module: nn.Module
    unit_dim: int  # the weight's output-unit dimension: 0 for nn.Linear, 1 for HF Conv1D ([in, out])


def block_linears(model: nn.Module) -> list[MaskedLinear]:
    """Every linear map inside the model's transformer blocks (attention and FFN), with its output dim."""
    blocks = attrgetter(arch_spec(model.config.model_type).layers)(model)
    out = []
    for i, block in enumerate(blocks):
        for name, m in block.named_modules():
            if isinstance(m, nn.Linear):
                out.append(MaskedLinear(f"{i}.{name}", m, 0))
            elif type(m).__name__ == "Conv1D":  # GPT-2 stores weight [in, out]
                out.append(MaskedLinear(f"{i}.{name}", m, 1))
    return out


def frozen_rows(magnitude: torch.Tensor, quantile: float) -> torch.Tensor:
    """Ids of the rows that must not move: magnitude not above the layer's ``quantile``."""
    threshold = torch.quantile(magnitude.double(), quantile)
    return (magnitude.double() <= threshold).nonzero().flatten()


def _sum_over_ranks(magnitude: dict[str, torch.Tensor]) -> None:
    """Under trainer=ddp each rank saw its share of the batch: every rank must choose the same rows."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for name in sorted(magnitude):  # the same order on every rank
        dist.all_reduce(magnitude[name])


class MIGUMasking(pl.Callback):
    """Accumulates each layer's per-row |output| over the training forwards of a step; around the
    optimizer step, keeps the unselected rows (parameters and optimizer state) exactly as they were."""

    def __init__(self, layers: list[MaskedLinear], quantile: float):
        self.layers, self.quantile = layers, float(quantile)
        self.magnitude: dict[str, torch.Tensor] = {}
        self.last_frozen: dict[str, torch.Tensor] = {}  # the rows held at the latest step (for tests / logs)
        self._saved: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, dict[str, Any]]] = []
        self._handles: list = []

    def attach(self) -> None:
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(
                lambda m, i, o, name=layer.name: self._record(name, o)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _record(self, name: str, out: torch.Tensor) -> None:
        if not (torch.is_grad_enabled() and out.requires_grad):
            return  # evaluation and attribution forwards choose nothing
        with torch.no_grad():
            mag = out.detach().abs().float().reshape(-1, out.shape[-1]).sum(0)
            self.magnitude[name] = self.magnitude[name] + mag if name in self.magnitude else mag

    def hold(self, optimizer: torch.optim.Optimizer) -> None:
        """Before the step: zero the unselected rows' gradients (as MIGU) and save their rows and state."""
        opt = getattr(optimizer, "optimizer", optimizer)  # Lightning's wrapper
        self._saved = []
        _sum_over_ranks(self.magnitude)
        for layer in self.layers:
            if layer.name not in self.magnitude:
                continue
            idx = frozen_rows(self.magnitude[layer.name], self.quantile)
            self.last_frozen[layer.name] = idx.cpu()
            m = layer.module
            for param, dim in ((m.weight, layer.unit_dim), (getattr(m, "bias", None), 0)):
                if param is None or not param.requires_grad:
                    continue
                i = idx.to(param.device)
                if param.grad is not None:
                    param.grad.index_fill_(dim, i, 0)
                state = {k: v.index_select(dim, i).clone() for k, v in opt.state.get(param, {}).items()
                         if torch.is_tensor(v) and v.shape == param.shape}
                self._saved.append((param, dim, i, param.detach().index_select(dim, i).clone(), state))
        self.magnitude = {}

    @torch.no_grad()
    def release(self, optimizer: torch.optim.Optimizer) -> None:
        """After the step: the saved rows written back, parameters and state alike."""
        opt = getattr(optimizer, "optimizer", optimizer)
        for param, dim, i, values, state in self._saved:
            param.data.index_copy_(dim, i, values)
            for k, v in opt.state.get(param, {}).items():
                if torch.is_tensor(v) and v.shape == param.shape:
                    if k in state:
                        v.index_copy_(dim, i, state[k])
                    else:  # created by this step from zeros
                        v.index_fill_(dim, i, 0)
        self._saved = []

    # --- Lightning hooks ------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        self.attach()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.detach()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.detach()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.hold(optimizer)
        self._optimizer = optimizer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._saved:  # a step happened in this batch (the last of an accumulation window)
            self.release(self._optimizer)
