"""What every entry point does around its job: errors as one line, run files, logger lifecycle."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from taskneurons.errors import ConfigError
from taskneurons.runtime.atomic import atomic_write_json, atomic_write_text
from taskneurons.runtime.metadata import run_metadata

log = logging.getLogger("taskneurons")


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called as a library, outside Hydra
        return Path.cwd()


def run_entry(cfg: Any, job: Callable[[Any, Path, dict], dict]) -> dict:
    """Run ``job(cfg, run_dir, meta)``; a bad config or data file ends the process with one line, exit 2."""
    out = run_dir()
    meta = run_metadata(int(cfg.seed), str(cfg.job))
    try:
        resolved = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception as e:  # an interpolation that cannot resolve is a config error too
        _fail(f"config does not resolve: {e}")
    try:
        metrics = job(cfg, out, meta)
    except ConfigError as e:
        _fail(str(e))
    # Written only on success: a config.yaml beside a metrics.json means a complete result.
    atomic_write_text(out / "config.yaml", resolved)
    atomic_write_json(out / "run_meta.json", meta)
    return metrics


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
