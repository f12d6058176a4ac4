"""Hydra callback: a sweep directory always says which jobs finished, failed or were reused.

Each job writes ``<job dir>/job_status.json`` when it ends (in its own process, whatever the launcher);
the sweep's ``summary.json`` gathers them (``completed``, ``reused``, ``failed``, ``interrupted``),
rewritten after every job and at the end, so it is current even if the sweep itself is killed.
Rerunning the same sweep reuses finished jobs (their results are kept under their config key) and
recomputes only the failed, interrupted or missing ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from taskneurons.runtime.atomic import atomic_write_json
from taskneurons.runtime.signals import STOP

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hc = job_return.hydra_cfg.hydra if job_return.hydra_cfg is not None else None
        if hc is None or hc.mode is None or str(hc.mode) != "RunMode.MULTIRUN":
            return
        job_dir = Path(hc.runtime.output_dir)
        status = "completed"
        error = None
        if job_return.status == JobStatus.FAILED:
            status, error = "failed", f"{type(job_return._return_value).__name__}: {job_return._return_value}"
        elif isinstance(job_return._return_value, dict) and job_return._return_value.get("reused_from_state"):
            status = "reused"
        atomic_write_json(job_dir / "job_status.json", {
            "num": int(hc.job.num), "overrides": list(job_return.overrides or []), "status": status, "error": error,
            "run_dir": str(job_dir), "metrics": str(job_dir / "metrics.json") if status != "failed" else None,
        })
        write_summary(Path(hc.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        STOP.restore()  # run_entry kept the stop-signal handler between the sweep's jobs
        summary = write_summary(Path(config.hydra.sweep.dir))
        failed = [j for j in summary["jobs"] if j["status"] == "failed"]
        if failed:
            log.error("%d of %d jobs failed (see %s/summary.json); rerun the same command to redo only those",
                      len(failed), len(summary["jobs"]), config.hydra.sweep.dir)


def record_interrupted(job_dir: Path, signal_name: str) -> None:
    """A job stopped by a signal never reaches Hydra's on_job_end: record it as ``interrupted`` here."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    atomic_write_json(job_dir / "job_status.json", {
        "num": int(hc.job.num), "overrides": list(hc.overrides.task), "status": "interrupted",
        "error": f"interrupted by {signal_name}; rerun the same command to resume it", "run_dir": str(job_dir),
        "metrics": None,
    })
    write_summary(Path(hc.sweep.dir))


def write_summary(sweep_dir: Path) -> dict[str, Any]:
    jobs = []
    for path in sorted(sweep_dir.glob("*/job_status.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0):
        try:
            jobs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            jobs.append({"run_dir": str(path.parent), "status": "unknown", "error": "job_status.json unreadable"})
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    summary = {"sweep_dir": str(sweep_dir), "counts": counts, "jobs": jobs}
    atomic_write_json(sweep_dir / "summary.json", summary)
    return summary
