"""A sweep's finished jobs as the analyses read them: through report/runs.py (one loader, one error
policy), the newest job of each cell (its overrides less the seed) per seed, and every kept job on the same
model and caps (a job left in a stable sweep folder by an older grid is refused, not averaged in)."""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

import yaml

from taskneurons.errors import ConfigError
from taskneurons.report.runs import Run, load_runs, select

# caps that differ between the jobs of one analysis sweep by design (its grid)
GRID_KEYS = ("neurons.proportion", "neurons.control_seeds", "tasks", "intervention.name", "intervention.path")


def cell_of(run: Run) -> tuple[str, ...] | str:
    """A job's cell: its command-line overrides less the seed (Hydra's record of them)."""
    path = run.dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return str(run.dir)  # no record: the job is its own cell
    overrides = yaml.safe_load(path.read_text()) or []
    return tuple(sorted(o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(("seed", "hydra."))))


def load_jobs(sweep_dir: str | Path | None, what: str,
              seeds: list[int] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(job dir, metrics) of the newest finished job per cell and seed (``seeds``: only those); a damaged
    metrics.json, an empty sweep or jobs of other models or caps are a ConfigError."""
    if not sweep_dir:
        raise ConfigError(f"analyze.sweep_dir is required for {what} (the multirun directory of its sweep)")
    root = Path(sweep_dir)
    if not root.is_dir():
        raise ConfigError(f"analyze.sweep_dir={root} does not exist; run the sweep first (make {what})")
    try:
        runs = load_runs(root)
    except ConfigError as e:
        raise ConfigError(f"{e} (make {what})") from None
    kept = select(runs, seeds, cell_of, exclude_caps=GRID_KEYS, what=f"jobs of {what} under {root}")
    return [(r.dir, r.metrics) for r in sorted(kept, key=lambda r: str(r.dir))]


def mean_or_none(values: list[float]) -> float | None:
    return round(mean(values), 2) if values else None


def task_mean(metrics: dict[str, Any], tasks: list[str]) -> float | None:
    scores = [metrics["tasks"][t]["score"] for t in tasks if t in metrics.get("tasks", {})]
    return round(mean(scores), 2) if len(scores) == len(tasks) and scores else None
