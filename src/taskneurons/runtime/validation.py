"""Checks of a composed config that need no model: every problem, each naming its key.

(Moved here from ``taskneurons.config`` so that runtime/session.py imports downward only;
``taskneurons.config`` re-exports these names.)
"""

from __future__ import annotations

from typing import Any

from taskneurons.data.tasks import CLS_SCORERS, TaskSpec, task_spec_from_config, validate_task_config
from taskneurons.errors import ConfigError
from taskneurons.models.loading import validate_model_config
from taskneurons.runtime.loggers import LOGGER_TYPES


def validate_common(cfg: Any) -> list[str]:
    p: list[str] = []
    p += validate_model_config(cfg.model)
    if cfg.logger.type not in LOGGER_TYPES:
        p.append(f"logger.type='{cfg.logger.type}' must be one of {', '.join(LOGGER_TYPES)}")
    ev = cfg.get("eval")
    if ev is not None:
        bad = [s for s in ev.cls_scorers if s not in CLS_SCORERS]
        if bad or not ev.cls_scorers:
            p.append(f"eval.cls_scorers={list(ev.cls_scorers)} must be a non-empty subset of {list(CLS_SCORERS)}")
        elif ev.primary_cls_scorer not in ev.cls_scorers:
            p.append(f"eval.primary_cls_scorer='{ev.primary_cls_scorer}' must be one of eval.cls_scorers {list(ev.cls_scorers)}")
        if ev.loglik_norm not in ("sum", "mean"):
            p.append(f"eval.loglik_norm='{ev.loglik_norm}' must be sum or mean")
        if ev.match not in ("exact", "prefix"):
            p.append(f"eval.match='{ev.match}' must be exact or prefix")
        for k in ("cls_max_new_tokens", "gen_max_new_tokens"):
            if int(ev[k]) < 1:
                p.append(f"eval.{k}={ev[k]} must be >= 1")
    d = cfg.data
    for k in ("max_prompt_tokens", "max_target_tokens", "batch_size", "eval_batch_size"):
        if int(d[k]) < 1:
            p.append(f"data.{k}={d[k]} must be >= 1")
    return p


def build_task_specs(cfg: Any) -> tuple[list[TaskSpec], list[str]]:
    tasks = cfg.get("tasks") or {}
    if not tasks:
        return [], ["no tasks selected: choose benchmark=<starter|generalization12|cl_standard|cl_long8> or task=<name>"]
    problems: list[str] = []
    specs = []
    for name, tcfg in tasks.items():
        errs = validate_task_config(name, tcfg)
        problems += errs
        if not errs:
            specs.append(task_spec_from_config(name, tcfg))
    return specs, problems


def checked_task_specs(cfg: Any) -> list[TaskSpec]:
    """Validate the whole config; raise one ConfigError listing every problem."""
    specs, problems = build_task_specs(cfg)
    problems = validate_common(cfg) + problems
    if problems:
        raise ConfigError(problems)
    return specs
