"""Resolve ``model.dtype`` (and, for full fine-tuning, ``trainer.precision``) once per job, before the
job's config key is computed: the resolved dtype is part of the result's identity (a bf16 result is
never reused for an fp32 request), printed once, and recorded in ``run_meta.json``."""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import open_dict

from taskneurons.errors import ConfigError
from taskneurons.models.precision import DTYPE_CHOICES, PrecisionPlan, precision_plan


def what_trains(cfg: Any) -> str:
    """none | neurons | lora | full, as the job's intervention or continual method says (`trains:`)."""
    if str(cfg.get("job")) == "continual":
        return str(cfg.continual.method.get("trains", "full"))
    if str(cfg.get("job")) == "train":
        return str(cfg.intervention.get("trains", "full"))
    return "none"


def apply_precision(cfg: Any, announce: bool = True) -> PrecisionPlan | None:
    """Write the resolved dtype into ``cfg.model.dtype`` (and ``cfg.trainer.precision`` where the recipe
    sets it); None when the config has no model."""
    if cfg.get("model") is None or cfg.model.get("dtype") is None:
        return None
    requested = str(cfg.model.dtype)
    if requested not in DTYPE_CHOICES:
        raise ConfigError(f"model.dtype='{requested}' is not one of {', '.join(DTYPE_CHOICES)} "
                          "(auto: bf16 where the device computes it fast, fp32 elsewhere)")
    accelerator = cfg.get("trainer", {}).get("accelerator", "auto") if cfg.get("trainer") is not None else "auto"
    plan = precision_plan(requested, accelerator, what_trains(cfg))
    with open_dict(cfg):
        cfg.model.dtype = plan.weights.dtype
        cfg.model.dtype_requested = requested
        if plan.trainer_precision is not None and cfg.get("trainer") is not None:
            cfg.trainer.precision = plan.trainer_precision
    if announce:
        announce_precision(plan.as_dict())
    return plan


def announce_precision(info: dict | None) -> None:
    """The one ``precision:`` line on stderr (rank 0), when ``auto`` or fp16 resolved to something else or the
    recipe sets trainer.precision. Entry points call it just before the model loads, after every check, so that
    a bad config still prints exactly one ``error:`` line."""
    if not info or (info["requested"] == info["resolved"] and not info.get("trainer_precision")):
        return
    from taskneurons.runtime.distributed import is_global_zero

    if is_global_zero():
        extra = f", trainer.precision={info['trainer_precision']}" if info.get("trainer_precision") else ""
        print(f"precision: model.dtype={info['requested']} -> {info['resolved']}{extra} ({info['why']}); "
              f"{info['recipe']}; model.dtype=float32 forces fp32", file=sys.stderr, flush=True)
