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

    def first(self, n: int = 5) -> float | None:
        return round(mean(self.losses[:n]), 4) if self.losses else None

    def last(self, n: int = 5) -> float | None:
        return round(mean(self.losses[-n:]), 4) if self.losses else None
