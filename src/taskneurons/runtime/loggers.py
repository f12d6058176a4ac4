"""Experiment loggers from conf/logger: W&B (offline by default), CSV, or none.

W&B must never cost a result: if it cannot start (no network in online mode, no account), the run
falls back to the CSV logger and says so once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

log = logging.getLogger(__name__)
LOGGER_TYPES = ("wandb", "csv", "none")


def build_logger(cfg: Any, run_dir: Path, run_config: dict[str, Any]) -> Logger | None:
    kind = cfg.logger.type
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    lc = cfg.logger
    os.environ.setdefault("WANDB_MODE", lc.mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        logger = WandbLogger(
            project=lc.project,
            entity=lc.get("entity") or None,
            name=lc.get("name") or None,
            group=lc.get("group") or None,
            job_type=lc.get("job_type") or None,
            tags=list(lc.get("tags") or []),
            save_dir=str(run_dir),
            config=run_config,
        )
        # WandbLogger always passes anonymous=None, which wandb >= 0.19 answers with a deprecation warning
        # on every run; the setting does nothing, so it is not passed at all
        logger._wandb_init.pop("anonymous", None)
        _ = logger.experiment  # start now, so a failure falls back here rather than mid-run
        return logger
    except Exception as e:  # W&B failing must not fail the run
        log.warning("W&B could not start (%s); logging to CSV in %s instead", e, run_dir)
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")


def log_results_table(logger: Logger | None, results: dict[str, dict[str, Any]], key: str = "results") -> None:
    """A task x metric table in the W&B run (its summary holds the flat numbers)."""
    if not isinstance(logger, WandbLogger):
        return
    # per-example scores stay in metrics.json; the table holds one value per cell
    columns = sorted({k for r in results.values() for k in r if k != "per_example"})
    rows = [[name] + [r.get(c) for c in columns] for name, r in results.items()]
    logger.log_table(key=key, columns=["task", *columns], data=rows)


def finish(logger: Logger | None) -> None:
    if isinstance(logger, WandbLogger):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def to_container(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def log_image(logger: Logger | None, key: str, path: Path) -> None:
    if isinstance(logger, WandbLogger):
        logger.log_image(key=key, images=[str(path)])
