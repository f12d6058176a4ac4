"""A sweep's finished jobs: their metrics.json (checksummed) and the config each ran with."""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

from taskneurons.errors import ConfigError
from taskneurons.runtime.atomic import read_json_with_checksum


def load_jobs(sweep_dir: str | Path | None, what: str) -> list[tuple[Path, dict[str, Any]]]:
    """(job dir, metrics) of every finished job; a damaged metrics.json or an empty sweep is a ConfigError."""
    if not sweep_dir:
        raise ConfigError(f"analyze.sweep_dir is required for {what} (the multirun directory of its sweep)")
    root = Path(sweep_dir)
    if not root.is_dir():
        raise ConfigError(f"analyze.sweep_dir={root} does not exist; run the sweep first (make {what})")
    jobs, problems = [], []
    for path in sorted(root.glob("*/metrics.json")):
        try:
            jobs.append((path.parent, read_json_with_checksum(path)))
        except ValueError as e:
            problems.append(f"{e}; rerun the sweep (it redoes only that job)")
    if problems:
        raise ConfigError(problems)
    if not jobs:
        raise ConfigError(f"no finished jobs (*/metrics.json) under {root}; run the sweep first (make {what})")
    return jobs


def mean_or_none(values: list[float]) -> float | None:
    return round(mean(values), 2) if values else None


def task_mean(metrics: dict[str, Any], tasks: list[str]) -> float | None:
    scores = [metrics["tasks"][t]["score"] for t in tasks if t in metrics.get("tasks", {})]
    return round(mean(scores), 2) if len(scores) == len(tasks) and scores else None
