"""Stop a fit at the first non-finite training loss or gradient norm, before the optimizer applies it.

The loss is checked before its backward (``on_before_backward``), the gradient norm after it, before the
optimizer step (``on_before_optimizer_step``): the parameters never take a NaN/inf update, so no checkpoint
of a NaN state can be written (``ResumeCheckpoint`` saves at the end of a batch, which is never reached).
The job ends with a ``NumericalError``: one ``error:`` line, exit code 3 (``runtime/app.py``).
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from taskneurons.errors import NumericalError

# Lightning's fp16 loss scaling finds inf gradients on purpose and skips those steps: not a failure there
_SCALED_PRECISIONS = ("16-mixed", "16")


def describe(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class FiniteGuard(pl.Callback):
    """``what`` names the data (e.g. "task(s) sst2"); ``start`` is the first batch of a resumed fit and
    ``saver`` the ResumeCheckpoint whose last save is reported."""

    def __init__(self, what: str, start: int = 0, accumulate: int = 1, saver: Any = None):
        self.what, self.start, self.accumulate, self.saver = what, start, max(int(accumulate), 1), saver
        self._batch = start

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch = self.start + batch_idx + 1  # 1-based: the batch being computed

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NumericalError(self.message(trainer, pl_module, f"training loss is {describe(value)}"))

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if str(trainer.precision) in _SCALED_PRECISIONS:
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float()))
        if not math.isfinite(norm):
            raise NumericalError(self.message(trainer, pl_module, f"gradient norm is {describe(norm)} (the loss was finite)"))

    def message(self, trainer: pl.Trainer, pl_module: pl.LightningModule, what_happened: str) -> str:
        lr = f"{trainer.optimizers[0].param_groups[0]['lr']:g}" if trainer.optimizers else "?"
        dtype = str(next(pl_module.parameters()).dtype).removeprefix("torch.")
        step = (self._batch - 1) // self.accumulate + 1
        kept = ""
        if self.saver is not None and getattr(self.saver, "state", None) is not None:
            done = int(self.saver.saved_at)
            kept = (f"; the last good checkpoint (batch {done}) is kept, nothing of the failed state is saved" if done
                    else "; no checkpoint was saved before it and none of the failed state is")
        return (f"{what_happened} at step {step} (batch {self._batch}) of training on {self.what} "
                f"(optim.lr={lr}, weights {dtype}, trainer.precision={trainer.precision}): usually a learning rate "
                "too high, float16 overflow, or a bad training row (an empty or extreme target); fix: lower optim.lr "
                "(10-100x; 1e-4 or less for full fine-tuning), use model.dtype=bfloat16 or float32 instead of float16, "
                f"or check the task's training data{kept}; no result was written")
