"""A Lightning Trainer from conf/trainer."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf

from taskneurons.runtime.quiet import quiet_libraries


def build_trainer(cfg: Any, logger: Any, **overrides: Any) -> pl.Trainer:
    quiet_libraries()
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update(overrides)
    return pl.Trainer(logger=logger if logger is not None else False, **kwargs)
