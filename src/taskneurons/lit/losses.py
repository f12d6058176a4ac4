"""The training losses of a fit, kept per batch (the first and last few are reported)."""

from __future__ import annotations

from statistics import mean

import pytorch_lightning as pl
import torch


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(torch.as_tensor(loss).detach()))

    def _window(self, n: int) -> int:
        # at most half the run each, so that a short run's first and last means do not cover the same batches
        return max(1, min(n, len(self.losses) // 2))

    def first(self, n: int = 5) -> float | None:
        """Mean loss of the first ``n`` batches (fewer in a run shorter than 2n)."""
        return round(mean(self.losses[: self._window(n)]), 4) if self.losses else None

    def last(self, n: int = 5) -> float | None:
        return round(mean(self.losses[-self._window(n):]), 4) if self.losses else None
