"""The artefact contract, the one writer of every paper table and figure (report, analyze, continual):
``outputs/results/<artefact>/<scale>/`` holds table.md, result.json and PNGs.

result.json = {artefact, scale, title, tables: {name: {columns, rows}}, paper: {...} or {trends: [...]},
figures, commands, caps, git_sha, code_hash, model, seeds} (+ ``cells``: the numbers behind each table
cell, keyed by stable names, ``notes``, and ``body_md``: a builder's own markdown in place of the plain
tables). table.md has one layout: title, provenance, body, the paper's numbers, notes, figures, commands,
caps. ``make report`` reads these files and nothing else; one whose ``code_hash`` is not this code's is
rebuilt. The paper's numbers are read here too (``paper_numbers``), once for every builder.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from taskneurons import EXPERIMENTS_DIR
from taskneurons.runtime.atomic import atomic_write_json, atomic_write_text
from taskneurons.runtime.code_hash import code_hash
from taskneurons.runtime.metadata import git_state

SCALES = ("tiny", "small", "paper")
log = logging.getLogger(__name__)


@functools.cache
def _paper_numbers() -> dict[str, Any]:
    return yaml.safe_load((EXPERIMENTS_DIR / "paper_numbers.yaml").read_text()) or {}


def paper_numbers(key: str | None = None) -> dict[str, Any]:
    """experiments/paper_numbers.yaml (the paper's reported numbers and stated trends), or its ``key`` part."""
    data = _paper_numbers()
    return data if key is None else (data.get(key) or {})


def output_root() -> Path:
    """Where runs and results go: $TASKNEURONS_OUTPUT (as in conf/paths) or outputs/."""
    return Path(os.environ.get("TASKNEURONS_OUTPUT") or "outputs")


def results_dir(artefact: str, scale: str, root: Path | None = None) -> Path:
    return Path(root or output_root()) / "results" / artefact / scale


def fmt(v: Any, digits: int | None = None) -> str:
    """A table cell: '-' for no value, floats to ``digits`` places when given."""
    if v is None:
        return "-"
    if digits is not None and isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def md_table(table: dict[str, Any], digits: int | None = None) -> str:
    """A ``{columns, rows}`` table as markdown (the one formatter of every artefact and report page)."""
    cols = table["columns"]
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v, digits) for v in row) + " |" for row in table["rows"]]
    return "\n".join(lines)


def render_md(result: dict[str, Any]) -> str:
    """An artefact's ``table.md``: its title, then :func:`render_body` with figures beside the file."""
    return "\n".join([f"# {result['title']} ({result['scale']} scale)", "", *render_body(result), ""])


def render_body(result: dict[str, Any], level: int = 2, figure_dir: Path | str = "") -> list[str]:
    """The one layout of an artefact below its title: provenance, tables (or the builder's own markdown), the
    paper's numbers, notes, figures, commands and caps. ``table.md`` uses it at heading ``level`` 2; the report
    README (report/collect.py) nests it one level deeper, with figure paths relative to the README."""
    h = "#" * level
    out = [f"model `{result.get('model')}`, seeds {result.get('seeds')}, git `{result.get('git_sha')}`", ""]
    if result.get("body_md"):
        out += [result["body_md"], ""]
    else:
        for name, table in ordered_tables(result):
            out += [f"{h} {name}", "", md_table(table), ""]
    paper = result.get("paper") or {}
    for name, table in (paper.get("tables") or {}).items():
        model = f" (model {paper['model']})" if paper.get("model") else ""
        out += [f"{h} paper: {name}{model}", "", md_table(table), ""]
    out += [f"- paper: {t}" for t in paper.get("trends", [])]
    if result.get("notes"):
        out += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    for fig in result.get("figures", []):
        out += ["", f"![{fig}]({Path(figure_dir) / fig if str(figure_dir) else fig})"]
    out += ["", "Commands:", "", "```bash", *result.get("commands", []), "```", "",
            "Caps: " + ", ".join(f"`{k}={v}`" for k, v in (result.get("caps") or {}).items())]
    return out


def ordered_tables(result: dict[str, Any]) -> list[tuple[str, dict]]:
    """Tables in the order the builder gave them (JSON keys are written sorted)."""
    order = [n for n in result.get("table_order", []) if n in result["tables"]]
    return [(n, result["tables"][n]) for n in order + sorted(set(result["tables"]) - set(order))]


def write_result(result: dict[str, Any], out_dir: Path, logger_cfg: Any = None) -> Path:
    """Fill the common fields and write result.json + table.md atomically; returns result.json's path.
    With a W&B ``logger_cfg`` (conf/logger/wandb.yaml) the tables and figures also go to a W&B run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.setdefault("git_sha", git_state().get("sha"))
    result.setdefault("code_hash", code_hash())  # report/collect.py rebuilds an artefact built by other code
    result.setdefault("figures", [])
    result.setdefault("commands", [])
    result.setdefault("table_order", list(result["tables"]))
    atomic_write_text(out_dir / "table.md", render_md(result))
    atomic_write_json(out_dir / "result.json", result)
    log_to_wandb(out_dir, result, logger_cfg)
    return out_dir / "result.json"


def log_to_wandb(out_dir: Path, result: dict[str, Any], logger_cfg: Any) -> None:
    """Tables and images in a W&B run (offline by default); never costs the result."""
    if logger_cfg is None or logger_cfg.get("type") != "wandb":
        return
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project=logger_cfg.get("project") or "taskneurons",
                         mode=os.environ.get("WANDB_MODE", logger_cfg.get("mode")), dir=str(out_dir),
                         job_type="report", group=f"{result['artefact']}_{result['scale']}",
                         name=f"{result['artefact']}-{result['scale']}",
                         config={k: result.get(k) for k in ("caps", "commands", "model", "seeds", "git_sha", "code_hash")},
                         reinit=True)
        payload: dict[str, Any] = {}
        for name, t in result["tables"].items():
            payload[f"{result['artefact']}/{name}"] = wandb.Table(columns=[str(c) for c in t["columns"]],
                                                                  data=[list(r) for r in t["rows"]])
        for fig in result.get("figures", []):
            payload[f"{result['artefact']}/{Path(fig).stem}"] = wandb.Image(str(out_dir / fig))
        run.log(payload)
        run.finish()
    except Exception as e:  # W&B failing must not fail the artefact
        log.warning("W&B logging of %s skipped: %s", result["artefact"], e)


def this_command() -> str:
    return "python -m taskneurons.report " + " ".join(shlex.quote(a) for a in sys.argv[1:])
