"""Finished runs of a sweep (or one run) as the report reads them: metrics, resolved config, seed.

A stable sweep directory (``outputs/multiruns/<artefact>_<scale>/``) keeps every job it ever ran; the
report takes the requested seeds, the newest run of each cell, and refuses (one line, exit 2) a cell
whose runs disagree on the model or the caps: such numbers must not be averaged together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from taskneurons.errors import ConfigError
from taskneurons.runtime.atomic import read_json_with_checksum

# what makes two runs comparable: the model and every cap on data, neurons, training and scoring
CAP_KEYS = (
    "model.name", "model.hf_id", "data.max_train", "data.max_test", "data.max_prompt_tokens", "data.max_target_tokens",
    "eval.cls_scorers", "eval.primary_cls_scorer", "eval.gen_max_new_tokens", "neurons.proportion",
    "neurons.max_examples", "neurons.definition", "neurons.matrices", "neurons.scope", "neurons.control_seeds",
    "optim.lr", "optim.max_steps", "intervention.name", "intervention.path", "tasks",
)


@dataclass
class Run:
    dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    mtime: float

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", self.metrics.get("seed", 0)))

    def get(self, dotted: str) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        if dotted == "tasks" and isinstance(node, dict):
            return sorted(node)
        return node

    def caps(self, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        out = {k: self.get(k) for k in CAP_KEYS if k not in exclude}
        if out.get("model.hf_id") and "/seed" in str(out["model.hf_id"]):
            out["model.hf_id"] = str(out["model.hf_id"]).rsplit("/seed", 1)[0]  # one fine-tuned model per seed
        return out


def load_run(d: Path) -> Run:
    path = d / "metrics.json"
    try:
        metrics = read_json_with_checksum(path)
    except ValueError as e:
        raise ConfigError(f"{e}; rerun that job (the sweep redoes only what is missing)") from None
    cfg_path = d / "config.yaml"
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    return Run(d, metrics, config or {}, path.stat().st_mtime)


def load_runs(path: Path) -> list[Run]:
    """One run directory, or every finished job of a sweep directory (any depth)."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        return [load_run(path)]
    dirs = sorted({p.parent for p in path.rglob("metrics.json")}) if path.is_dir() else []
    if not dirs:
        raise ConfigError(f"no finished run (metrics.json) under {path}: run the experiment first")
    return [load_run(d) for d in dirs]


def select(runs: list[Run], seeds: list[int] | None, cell_of, exclude_caps: tuple[str, ...] = (),
           what: str = "runs") -> list[Run]:
    """The requested seeds, the newest run per (cell, seed); every kept run must share model and caps."""
    if seeds:
        runs = [r for r in runs if r.seed in seeds]
    newest: dict[tuple, Run] = {}
    for r in runs:
        key = (cell_of(r), r.seed)
        if key[0] is None:
            continue
        if key not in newest or r.mtime > newest[key].mtime:
            newest[key] = r
    kept = list(newest.values())
    if not kept:
        raise ConfigError(f"no finished {what} for seeds {seeds} found: run the experiment first")
    check_same_caps(kept, exclude_caps)
    return sorted(kept, key=lambda r: (str(cell_of(r)), r.seed))


def check_same_caps(runs: list[Run], exclude: tuple[str, ...] = ()) -> None:
    ref = runs[0].caps(exclude)
    for r in runs[1:]:
        caps = r.caps(exclude)
        diff = [k for k in ref if ref[k] != caps[k]]
        if diff:
            k = diff[0]
            raise ConfigError(
                f"runs of different models or caps in one table: {k}={ref[k]!r} in {runs[0].dir} but {caps[k]!r} in {r.dir}; "
                "rerun them with the same settings or report them separately")
