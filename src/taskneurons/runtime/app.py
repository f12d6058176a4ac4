"""What every entry point does around its job: errors as one line, run files, resume, sweeps.

- Bad config/data (ConfigError) -> ``error: ...`` on one line, exit code 2, nothing written that looks
  like a result. A job that cannot fit in memory (ResourceError, before the model loads) is the same; a
  NaN/inf in training, evaluation or attribution (NumericalError) too, with exit code 3
  (docs/reliability-numerics.md). In a multirun the error is raised instead, so Hydra records the job as failed and the
  sweep goes on with the other jobs (sweep summary: ``runtime/sweep.py``).
- A finished job's metrics are kept under a key of its resolved config and the code's source hash
  (``runtime/resume.py``): the same command run again returns them at once; a killed job resumes from
  its finished steps; an edit to the code, committed or not, computes anew.
- Failing to write (disk full, read-only folder) -> a clear one-line error; files are written
  atomically, so nothing that was complete before is damaged.
- A stop signal (SIGTERM, SIGINT, SIGUSR1; ``runtime/signals.py``) -> what is finished stays in the job
  state (training saves a checkpoint at once), one line says so, exit code 128 + signal; in a sweep the
  job is recorded as ``interrupted``. ``preemption=slurm_requeue`` also requeues the SLURM job.
- Two processes with the same configuration: the second waits for the first and reuses its result.
"""

from __future__ import annotations

import errno
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from taskneurons.errors import ConfigError
from taskneurons.runtime.atomic import (
    atomic_write_json,
    atomic_write_text,
    cleanup_temp_files,
    write_json_with_checksum,
)
from taskneurons.runtime.dirnames import register_resolvers
from taskneurons.runtime.distributed import is_global_zero, rank_zero_key
from taskneurons.runtime.metadata import run_metadata
from taskneurons.runtime.precision import apply_precision
from taskneurons.runtime.resume import JobState, config_key
from taskneurons.runtime.signals import STOP, STOP_SIGNALS, Interrupted, as_signal, maybe_requeue, signal_name

log = logging.getLogger("taskneurons")
register_resolvers()  # before any entry point's config is composed (sweep folder names use them)


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
        # model.dtype=auto -> the dtype this device computes fast: resolved first, so it is part of the key
        plan = apply_precision(cfg, announce=False)  # announced by open_session, before the model loads
        if plan is not None:
            meta["precision"] = plan.as_dict()
        resolved = OmegaConf.to_yaml(cfg, resolve=True)
        key = rank_zero_key(config_key(cfg))
    except ConfigError as e:
        return _fail(e)
    except Exception as e:  # an interpolation that cannot resolve is a config error too
        return _fail(ConfigError(f"config does not resolve: {e}"))
    meta["config_key"] = key
    try:
        signals, requeue = preemption_settings(cfg)
    except ConfigError as e:
        return _fail(e)
    STOP.install(signals)
    state = None
    try:
        STOP.check()  # a signal that arrived between two jobs of this sweep stops this one before it starts
        state = JobState(Path(cfg.paths.output_root), str(cfg.job), key, enabled=bool(cfg.get("resume", True)))
        cached = state.get("final")
        if cached is None and not is_global_zero():
            # rank > 0 of a distributed job (runtime/distributed.py): rank 0 holds the lock and writes every file
            return job(cfg, out, meta, state)
        if cached is None:
            with state.lock():  # another process running this configuration: wait, then reuse its result
                cached = state.get("final")
                if cached is None:
                    metrics = job(cfg, out, meta, state)
                    state.put("final", metrics)
        if cached is not None:
            log.info("this configuration already finished (state %s): reusing its result", state.dir)
            metrics = {**cached, "reused_from_state": str(state.dir)}
            if on_reuse is not None:
                on_reuse(metrics, out)
        # Written last: a metrics.json beside config.yaml means a complete result.
        atomic_write_text(out / "config.yaml", resolved)
        atomic_write_json(out / "run_meta.json", meta)
        write_json_with_checksum(out / "metrics.json", metrics)
    except (Interrupted, SIGTERMException) as e:
        # Lightning stops its loops on SIGTERM with SIGTERMException (a SystemExit with code 0)
        return _interrupted(getattr(e, "signum", signal.SIGTERM), out, state, requeue)
    except ConfigError as e:
        return _fail(e)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT):
            cleanup_temp_files(out)
            return _fail(ConfigError(f"cannot write {e.filename or 'results'}: {e.strerror} "
                                     "(disk full or read-only? free space or set paths.output_root / hydra.run.dir)"))
        raise
    finally:
        if in_multirun():
            STOP.between_jobs()  # restored by SweepSummary.on_multirun_end
        else:
            STOP.restore()
        release_job_memory()
    return metrics


def release_job_memory() -> None:
    """Free what the job allocated before the next job of a sweep loads its own model. A model held in a
    reference cycle (Lightning's trainer and module refer to each other) is otherwise freed only when Python's
    cyclic GC happens to run: measured on tiny Llama, 2 of 3 sweep jobs' models were still alive."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def preemption_settings(cfg: Any) -> tuple[list[Any], Any]:
    """The signals to handle and the requeue environment (``preemption.requeue``, a ``_target_``)."""
    pc = cfg.get("preemption") or {}
    try:
        signals = [as_signal(s) for s in pc.get("signals", STOP_SIGNALS)]
    except ValueError as e:
        raise ConfigError(f"preemption.signals: {e}; use names such as SIGTERM, SIGINT, SIGUSR1") from None
    requeue = None
    if pc.get("requeue"):
        try:
            requeue = instantiate(pc.requeue)
            signals.append(as_signal(getattr(requeue, "requeue_signal", None) or signal.SIGUSR1))
        except Exception as e:
            raise ConfigError(f"preemption.requeue cannot be built ({e}); see conf/preemption/slurm_requeue.yaml") from None
    return list(dict.fromkeys(signals)), requeue


def _interrupted(signum: int, out: Path, state: JobState | None, requeue: Any) -> None:
    """Record the interruption, requeue if configured, exit 128 + signal (a sweep stops here too)."""
    STOP.stopping()
    name = signal_name(signum)
    where = f" (kept in {state.dir})" if state is not None and state.enabled else ""
    if in_multirun():
        from taskneurons.runtime.sweep import record_interrupted

        record_interrupted(out, name)
    requeued = maybe_requeue(requeue, signum)
    then = "the requeued job resumes" if requeued else "run the same command again to resume"
    print(f"error: interrupted by {name}: the finished steps (and a training checkpoint at the signal) are saved"
          f"{where}; {then}",
          file=sys.stderr, flush=True)
    sys.exit(128 + int(signum))


def _fail(error: ConfigError) -> None:
    if in_multirun():
        raise error  # Hydra marks this job failed and runs the rest of the sweep
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(getattr(error, "exit_code", 2))
