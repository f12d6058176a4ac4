"""One resumable fit, shared by ``train.py`` and every continual stage: continue from the job state's
``train_checkpoint`` (``lit/resume.py``), or, when a kill came after training had finished, restore the
trained state instead of training again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl

from taskneurons.lit.finite import FiniteGuard
from taskneurons.lit.losses import LossRecorder
from taskneurons.lit.resume import ResumeCheckpoint, load_trainable
from taskneurons.neurons.sparse_finetune import NeuronFinetuning
from taskneurons.runtime.trainer import build_trainer


class ResumableFit:
    """Read the checkpoint first (``start``: the batches it has done; a caller's data may depend on it),
    then ``run`` the rest of the ``n_batches``."""

    def __init__(self, state: Any, n_batches: int, accumulate: int):
        self.state, self.n_batches, self.accumulate = state, n_batches, accumulate
        self.ckpt = state.get_tensors("train_checkpoint")
        self.start = int(self.ckpt["batches_done"]) if self.ckpt else 0

    def run(self, cfg: Any, module: pl.LightningModule, callbacks: list, losses: LossRecorder, logger: Any,
            loader: Callable[[], Any], what: str = "the training data") -> pl.Trainer | None:
        """Fit the remaining batches (``loader()`` gives them); the Trainer, or None when restored. ``what``
        names the data in the one error line of a non-finite loss or gradient (``lit/finite.py``)."""
        if self.start >= self.n_batches:  # killed after training finished: restore the trained state
            restore_trained(module, callbacks, self.ckpt, losses)
            self.ckpt = None
            return None
        saver = ResumeCheckpoint(self.state, int(cfg.checkpoint_every), self.start, self.n_batches, self.accumulate,
                                 losses, self.ckpt)
        self.ckpt = None  # the saver loads it at the start of the fit, then lets it go
        # a nan/inf loss or gradient ends the fit before the optimizer applies it
        guard = FiniteGuard(what, self.start, self.accumulate, saver)
        # one "epoch" = the remaining batches; epochs of the data are inside the batch sampler.
        # trainer=ddp: the fit runs on the ranks the job started (runtime/distributed.py)
        trainer = build_trainer(cfg, logger, distributed=True, batches=self.n_batches - self.start,
                                callbacks=[*callbacks, guard, losses, saver], max_steps=-1, max_epochs=1)
        module.train()
        trainer.fit(module, train_dataloaders=loader())
        return trainer


def restore_trained(module: pl.LightningModule, callbacks: list, ckpt: dict, losses: LossRecorder) -> None:
    for cb in callbacks:
        if isinstance(cb, NeuronFinetuning):
            cb.setup(None, module, "fit")  # creates the deltas the checkpoint holds
    load_trainable(module, ckpt["params"])
    for cb in callbacks:
        if isinstance(cb, NeuronFinetuning):
            cb.on_fit_end(None, module)  # merge, as at the end of a normal fit
    losses.losses = list(ckpt["losses"])
