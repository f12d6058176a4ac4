"""A Lightning Trainer from conf/trainer."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf

from taskneurons.runtime.quiet import quiet_libraries


def build_trainer(cfg: Any, logger: Any, distributed: bool = False, batches: int | None = None,
                  **overrides: Any) -> pl.Trainer:
    """``distributed=True`` (training, attribution) uses ``trainer.strategy`` (a ``_target_``, e.g.
    conf/trainer/ddp.yaml) over ``trainer.devices``; otherwise the trainer runs on one device (evaluation).
    ``batches``: how many training batches the fit will see; a shorter fit logs at least once (and
    Lightning does not warn, on every short run, that it has fewer batches than the logging interval)."""
    quiet_libraries()
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if batches is not None and "log_every_n_steps" in kwargs:
        kwargs["log_every_n_steps"] = max(1, min(int(kwargs["log_every_n_steps"]), int(batches)))
    strategy = kwargs.pop("strategy", None)
    if distributed and strategy is not None:
        from hydra.utils import instantiate

        kwargs["strategy"] = instantiate(strategy) if isinstance(strategy, dict) else strategy
        kwargs["use_distributed_sampler"] = False  # our batch sampler gives each rank its share of the global batch
    elif strategy is not None:
        from taskneurons.runtime.distributed import this_rank_devices

        kwargs["devices"] = this_rank_devices(kwargs.get("accelerator", "auto"))
    kwargs.update(overrides)
    return pl.Trainer(logger=logger if logger is not None else False, **kwargs)
