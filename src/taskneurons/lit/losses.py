"""The training losses of a fit, kept per batch: the first and last few are reported, the whole curve is kept
in the run's metrics (``training.losses``), and ``tail_decline`` says whether it had flattened out — the
premise "training converged" of the claim registry (report/measures.py)."""

from __future__ import annotations

from statistics import mean

import numpy as np
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

    def curve(self) -> list[float]:
        """Every batch's loss, in order (4 decimals: the metrics file stays small)."""
        return [round(x, 4) for x in self.losses]


def tail_decline(losses: list[float], fraction: float = 0.2, min_batches: int = 5) -> float | None:
    """How much the loss was still falling at the end: over the last ``fraction`` of the batches, the fall of
    the least-squares line from the window's first batch to its last, relative to the window's mean loss
    (0.1 = the fitted loss fell by 10 % of its level within the window; negative = it rose). A line, not
    first-minus-last, because single batches are noisy. None when the window has fewer than ``min_batches``
    finite losses: too short a run to tell."""
    n = int(len(losses) * fraction + 1e-9)  # whole batches of the window, never more than the fraction
    tail = np.asarray(losses[len(losses) - n:], dtype=float)
    tail = tail[np.isfinite(tail)]
    if len(tail) < min_batches or not tail.mean():
        return None
    slope = np.polyfit(np.arange(len(tail), dtype=float), tail, 1)[0]
    return round(float(-slope * (len(tail) - 1) / abs(tail.mean())), 4)
