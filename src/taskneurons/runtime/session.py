"""The shared first half of every entry point: validate everything, load data, then the model."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from taskneurons.data.hub_access import dataset_problems
from taskneurons.data.loading import TaskData, load_tasks
from taskneurons.data.tasks import TaskSpec
from taskneurons.errors import ConfigError
from taskneurons.models.loading import hub_model_problems, load_model_and_tokenizer
from taskneurons.runtime.loggers import build_logger, to_container
from taskneurons.runtime.memory_check import check_memory
from taskneurons.runtime.precision import announce_precision
from taskneurons.runtime.validation import checked_task_specs


@dataclass
class Session:
    cfg: Any
    out: Path
    meta: dict
    specs: list[TaskSpec]
    data: dict[str, TaskData]
    model: Any = None
    tok: Any = None
    logger: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return str(self.cfg.model.name)

    def spec(self, name: str) -> TaskSpec:
        return next(s for s in self.specs if s.name == name)


def open_session(
    cfg: Any,
    out: Path,
    meta: dict,
    *,
    splits: tuple[str, ...] = ("train", "test"),
    need_train: Collection[str] = (),
    problems: list[str] | None = None,
) -> Session:
    """Validate config and data (every problem in one ConfigError), then load the model and logger."""
    try:
        specs = checked_task_specs(cfg)
    except ConfigError as e:
        raise ConfigError((problems or []) + e.problems) from None
    if problems:
        raise ConfigError(problems)
    # hub datasets and models this machine cannot get (offline, no network, gated): before any other work
    problems = dataset_problems(specs) + hub_model_problems(cfg.model)
    if problems:
        raise ConfigError(problems)
    estimate = check_memory(cfg)  # a job that cannot fit stops here, before data and model load
    if estimate is not None:
        meta["memory_estimate"] = {"phase": estimate.phase, "total_bytes": estimate.total, "parts": estimate.parts}
    max_train = cfg.data.max_train if "train" in splits else 0
    data = load_tasks(specs, cfg.paths.data_dir, max_train=max_train, max_test=cfg.data.max_test,
                      seed=int(cfg.data.sample_seed), splits=splits, need_train=need_train)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    announce_precision(meta.get("precision"))
    model, tok = load_model_and_tokenizer(cfg.model, cfg.paths.model_cache)
    logger = build_logger(cfg, out, {**to_container(cfg), "run_meta": meta})
    return Session(cfg, out, meta, specs, data, model, tok, logger)
