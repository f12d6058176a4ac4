"""The artefact contract: ``outputs/results/<artefact>/<scale>/`` holds table.md, result.json and PNGs.

result.json = {artefact, scale, title, tables: {name: {columns, rows}}, paper: {...} or {trends: [...]},
figures, commands, caps, git_sha, model, seeds} (+ ``cells``: the numbers behind each table cell, keyed
by stable names, and ``notes``). ``make report`` reads these files and nothing else.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from taskneurons.runtime.atomic import atomic_write_json, atomic_write_text
from taskneurons.runtime.code_hash import code_hash
from taskneurons.runtime.metadata import git_state

SCALES = ("tiny", "small", "paper")


def output_root() -> Path:
    """Where runs and results go: $TASKNEURONS_OUTPUT (as in conf/paths) or outputs/."""
    return Path(os.environ.get("TASKNEURONS_OUTPUT") or "outputs")


def results_dir(artefact: str, scale: str, root: Path | None = None) -> Path:
    return Path(root or output_root()) / "results" / artefact / scale


def md_table(table: dict[str, Any]) -> str:
    cols = table["columns"]
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in table["rows"]]
    return "\n".join(lines)


def render_md(result: dict[str, Any]) -> str:
    out = [f"# {result['title']} ({result['scale']} scale)", "",
           f"model `{result.get('model')}`, seeds {result.get('seeds')}, git `{result.get('git_sha')}`", ""]
    for name, table in ordered_tables(result):
        out += [f"## {name}", "", md_table(table), ""]
    paper = result.get("paper") or {}
    if paper.get("tables"):
        for name, table in paper["tables"].items():
            out += [f"## paper: {name}", "", md_table(table), ""]
    for t in paper.get("trends", []):
        out.append(f"- paper: {t}")
    if result.get("notes"):
        out += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    for fig in result.get("figures", []):
        out += ["", f"![{fig}]({fig})"]
    out += ["", "Commands:", "", "```bash", *result.get("commands", []), "```", "",
            "Caps: " + ", ".join(f"`{k}={v}`" for k, v in (result.get("caps") or {}).items()), ""]
    return "\n".join(out)


def ordered_tables(result: dict[str, Any]) -> list[tuple[str, dict]]:
    """Tables in the order the builder gave them (JSON keys are written sorted)."""
    order = [n for n in result.get("table_order", []) if n in result["tables"]]
    return [(n, result["tables"][n]) for n in order + sorted(set(result["tables"]) - set(order))]


def write_result(result: dict[str, Any], out_dir: Path) -> Path:
    """Fill the common fields and write result.json + table.md atomically; returns result.json's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.setdefault("git_sha", git_state().get("sha"))
    result.setdefault("code_hash", code_hash())  # report/collect.py rebuilds an artefact built by other code
    result.setdefault("figures", [])
    result.setdefault("commands", [])
    result.setdefault("table_order", list(result["tables"]))
    atomic_write_text(out_dir / "table.md", render_md(result))
    atomic_write_json(out_dir / "result.json", result)
    return out_dir / "result.json"


def this_command() -> str:
    return "python -m taskneurons.report " + " ".join(shlex.quote(a) for a in sys.argv[1:])
