"""Training that survives a kill: addressable batches and checkpoints of the trainable state.

The training data order is a pure function of (seed, global batch index): a seeded shuffle per epoch.
A checkpoint holds the trainable parameters, the optimizer state, the RNG state and the batches done;
resuming loads them and continues from the next batch, so the result equals an uninterrupted run.

A stop signal during training (``runtime/signals.py``) is acted on at the end of the current batch: a
checkpoint is saved then, not at the next ``checkpoint_every``, and ``Interrupted`` ends the fit. Mid
gradient accumulation the checkpoint is the last optimizer step (parameters and optimizer state have
not changed since; its RNG state and loss count are kept at every step for this).
"""

from __future__ import annotations

import signal
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from taskneurons.data.sampling import StepBatchSampler  # noqa: F401  (moved to the data layer; kept importable here)
from taskneurons.runtime.signals import STOP, Interrupted


def trainable_state(module: pl.LightningModule) -> dict[str, torch.Tensor]:
    """The trainable parameters, sharing their storage: for a checkpoint written at once (a full model's
    copy would cost its whole size in memory for nothing)."""
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def load_trainable(module: pl.LightningModule, params: dict[str, torch.Tensor]) -> None:
    own = dict(module.named_parameters())
    missing = set(params) - set(own)
    if missing:
        raise RuntimeError(f"checkpoint does not match this model/neuron set (unknown parameters {sorted(missing)[:3]})")
    with torch.no_grad():
        for n, v in params.items():
            own[n].copy_(v)


class ResumeCheckpoint(pl.Callback):
    """Saves the trainable state every ``every`` batches (at optimizer-step boundaries), at the end, and
    at once on a stop signal; restores a given checkpoint when training starts."""

    def __init__(self, state: Any, every: int, start: int, total: int, accumulate: int, recorder: Any,
                 payload: dict | None = None):
        self.state, self.every, self.start, self.total, self.accumulate = state, every, start, total, accumulate
        self.recorder, self.payload = recorder, payload
        self.saved_at = start  # batches done in the newest checkpoint on disk
        self._step: tuple[int, torch.Tensor, int] | None = None  # (batches done, RNG, losses) at the last step
        self._deferring = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.payload is not None:
            load_trainable(pl_module, self.payload["params"])
            trainer.optimizers[0].load_state_dict(self.payload["optimizer"])
            torch.set_rng_state(self.payload["rng"])
            self.recorder.losses = list(self.payload["losses"])
            self.payload = None  # loaded into the model and optimizer: not kept for the rest of the fit
        self._step = (self.start, torch.get_rng_state(), len(self.recorder.losses))
        self._deferring = True
        STOP.defer()  # a signal now waits for the end of the batch (see on_train_batch_end)

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, done: int) -> None:
        self._write(trainer, pl_module, done, torch.get_rng_state(), list(self.recorder.losses))

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, done: int, rng: torch.Tensor,
               losses: list[float]) -> None:
        self.state.put_tensors("train_checkpoint", {
            "params": trainable_state(pl_module), "optimizer": trainer.optimizers[0].state_dict(),
            "rng": rng, "batches_done": done, "losses": losses,
        })
        self.saved_at = done

    def save_last_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Checkpoint the last optimizer step now (unless it is on disk already)."""
        if self._step is None or self._step[0] == self.saved_at:
            return
        done, rng, n_losses = self._step
        self._write(trainer, pl_module, done, rng, list(self.recorder.losses[:n_losses]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        done = self.start + batch_idx + 1
        if done % self.accumulate == 0 or done == self.total:  # an optimizer step happened in this batch
            self._step = (done, torch.get_rng_state(), len(self.recorder.losses))
            if done % self.every == 0 or done == self.total:
                self.save(trainer, pl_module, done)
        if (STOP.requested or trainer.received_sigterm) and done < self.total:
            self.save_last_step(trainer, pl_module)
            self._stop_deferring()
            if not STOP.requested:  # Lightning saw SIGTERM before our handler did
                STOP.signum = signal.SIGTERM
            STOP.raise_now()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_deferring()
        STOP.check()  # a signal during the last batch: training is saved complete, stop before what follows

    def _stop_deferring(self) -> None:
        if self._deferring:
            self._deferring = False
            STOP.undefer()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._step is None:
            return  # training had not started
        if isinstance(exception, (SIGTERMException, Interrupted)):
            # raised between batches (Lightning's own SIGTERM check, or ours above): a consistent point
            self.save_last_step(trainer, pl_module)
        self._stop_deferring()
        self._step = None
