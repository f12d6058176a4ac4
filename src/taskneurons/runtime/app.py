"""What every entry point does around its job: errors as one line, run files, resume, sweeps.

- Bad config/data (ConfigError) -> ``error: ...`` on one line, exit code 2, nothing written that looks
  like a result. In a multirun the error is raised instead, so Hydra records the job as failed and the
  sweep goes on with the other jobs (sweep summary: ``runtime/sweep.py``).
- A finished job's metrics are kept under a key of its resolved config (``runtime/resume.py``): the
  same command run again returns them at once; a killed job resumes from its finished steps.
- Failing to write (disk full, read-only folder) -> a clear one-line error; files are written
  atomically, so nothing that was complete before is damaged.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from taskneurons.errors import ConfigError
from taskneurons.runtime.atomic import (
    atomic_write_json,
    atomic_write_text,
    cleanup_temp_files,
    write_json_with_checksum,
)
from taskneurons.runtime.metadata import run_metadata
from taskneurons.runtime.resume import JobState, config_key

log = logging.getLogger("taskneurons")


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called as a library, outside Hydra
        return Path.cwd()


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def run_entry(cfg: Any, job: Callable[[Any, Path, dict, JobState], dict],
              on_reuse: Callable[[dict, Path], None] | None = None) -> dict | None:
    """Run ``job(cfg, run_dir, meta, state)`` with the guarantees above."""
    out = run_dir()
    meta = run_metadata(int(cfg.seed), str(cfg.job))
    try:
        resolved = OmegaConf.to_yaml(cfg, resolve=True)
        key = config_key(cfg)
    except Exception as e:  # an interpolation that cannot resolve is a config error too
        return _fail(ConfigError(f"config does not resolve: {e}"))
    meta["config_key"] = key
    try:
        state = JobState(Path(cfg.paths.output_root), str(cfg.job), key, enabled=bool(cfg.get("resume", True)))
        cached = state.get("final")
        if cached is not None:
            log.info("this configuration already finished (state %s): reusing its result", state.dir)
            metrics = {**cached, "reused_from_state": str(state.dir)}
            if on_reuse is not None:
                on_reuse(metrics, out)
        else:
            metrics = job(cfg, out, meta, state)
            state.put("final", metrics)
        # Written last: a metrics.json beside config.yaml means a complete result.
        atomic_write_text(out / "config.yaml", resolved)
        atomic_write_json(out / "run_meta.json", meta)
        write_json_with_checksum(out / "metrics.json", metrics)
    except ConfigError as e:
        return _fail(e)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT):
            cleanup_temp_files(out)
            return _fail(ConfigError(f"cannot write {e.filename or 'results'}: {e.strerror} "
                                     "(disk full or read-only? free space or set paths.output_root / hydra.run.dir)"))
        raise
    return metrics


def _fail(error: ConfigError) -> None:
    if in_multirun():
        raise error  # Hydra marks this job failed and runs the rest of the sweep
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)
