"""Hydra callback for sweeps under any launcher (basic, joblib, submitit_local, submitit_slurm).

- Before any job starts (in the sweeping process): a SLURM launcher without a partition, or a SLURM
  job with fewer GPUs than ``trainer.devices``, is one ``error: ...`` line (exit 2); joblib jobs whose
  threads add up to more than the CPU cores get a warning with the numbers.
- In each job's own process: torch's thread count is set so that parallel jobs share the cores
  (joblib: ``threads_per_job``, default cores // n_jobs; submitit: ``hydra.launcher.cpus_per_task``).

summary.json, resume and failure isolation need nothing launcher-specific: every job writes its
``job_status.json`` in its own process (``runtime/sweep.py``) and keeps its results under its config key.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def launcher_kind(hydra_cfg: Any) -> str:
    """``basic``, ``joblib``, ``submitit_local``, ``submitit_slurm`` (or the launcher's class name)."""
    target = str(hydra_cfg.launcher.get("_target_", ""))
    for needle, kind in (("JoblibLauncher", "joblib"), ("submitit_launcher.LocalLauncher", "submitit_local"),
                         ("SlurmLauncher", "submitit_slurm"), ("BasicLauncher", "basic")):
        if needle in target:
            return kind
    return target.rsplit(".", 1)[-1] or "basic"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def joblib_workers(n_jobs: Any, cores: int) -> int:
    """Concurrent joblib jobs: n_jobs, with joblib's negative convention (-1 = all cores)."""
    n = int(n_jobs if n_jobs is not None else -1)
    return max(cores + 1 + n, 1) if n < 0 else max(n, 1)


def job_threads(hydra_cfg: Any, threads_per_job: int | None, cores: int | None = None) -> int | None:
    """torch threads for one job of this launcher (None: leave torch's default)."""
    cores = cores or cpu_cores()
    kind = launcher_kind(hydra_cfg)
    if kind == "joblib":
        return int(threads_per_job) if threads_per_job else max(cores // joblib_workers(hydra_cfg.launcher.n_jobs, cores), 1)
    if kind.startswith("submitit"):
        cpus = hydra_cfg.launcher.get("cpus_per_task")
        return int(threads_per_job or cpus) if (threads_per_job or cpus) else None
    return int(threads_per_job) if threads_per_job else None


def launch_problems(config: DictConfig) -> list[str]:
    """What cannot start: checked once, in the sweeping process, before any job."""
    from taskneurons.runtime.distributed import requested_devices

    hc = config.hydra
    p: list[str] = []
    if launcher_kind(hc) == "submitit_slurm":
        lc = hc.launcher
        if not lc.get("partition"):
            p.append("hydra.launcher.partition is not set: pass hydra.launcher.partition=<partition> "
                     "(sinfo lists them) or export SBATCH_PARTITION")
        gpus = lc.get("gpus_per_node")
        trainer = config.get("trainer")
        if gpus and trainer is not None:
            want = requested_devices(trainer.get("devices", 1), int(gpus))
            if want > int(gpus):
                p.append(f"trainer.devices={want} but hydra.launcher.gpus_per_node={gpus}; "
                         f"set hydra.launcher.gpus_per_node={want} (and tasks_per_node={want})")
    return p


def oversubscription(hydra_cfg: Any, threads_per_job: int | None, cores: int | None = None) -> str | None:
    """A warning line when joblib's jobs x threads exceed the cores, else None."""
    cores = cores or cpu_cores()
    if launcher_kind(hydra_cfg) != "joblib":
        return None
    jobs = joblib_workers(hydra_cfg.launcher.n_jobs, cores)
    threads = job_threads(hydra_cfg, threads_per_job, cores) or 1
    if jobs * threads <= cores:
        return None
    return (f"joblib: n_jobs={jobs} x {threads} threads per job = {jobs * threads} threads on {cores} CPU cores; "
            f"jobs will slow each other down (lower hydra.launcher.n_jobs or "
            f"hydra.callbacks.launch_checks.threads_per_job)")


class LaunchChecks(Callback):
    def __init__(self, threads_per_job: int | None = None):
        self.threads_per_job = threads_per_job

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        problems = launch_problems(config)
        if problems:
            print(f"error: {'; '.join(problems)}", file=sys.stderr, flush=True)
            sys.exit(2)
        warning = oversubscription(config.hydra, self.threads_per_job)
        if warning:
            log.warning(warning)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        threads = job_threads(config.hydra, self.threads_per_job)
        if threads:
            import torch

            torch.set_num_threads(threads)
            for k in _THREAD_ENV:  # for libraries that start their pools later
                os.environ[k] = str(threads)
            log.info("%s job: %d torch threads (%d CPU cores)", launcher_kind(config.hydra), threads, cpu_cores())
