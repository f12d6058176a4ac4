"""Results as a printed table and as summary numbers."""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

from rich.console import Console
from rich.table import Table


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Average score over classification tasks and over generation tasks (the paper's Avg columns)."""
    out: dict[str, float] = {}
    for kind, key in (("classification", "avg_cls"), ("generation", "avg_gen")):
        scores = [r["score"] for r in results.values() if r["kind"] == kind]
        if scores:
            out[key] = round(mean(scores), 2)
    return out


def print_results_path(console: Console, run_dir: Path) -> None:
    """The run's metrics.json, printed literally: sweep folders hold lists ("task=[a,b]") that rich would
    otherwise read as markup and drop."""
    console.print(f"results: {run_dir / 'metrics.json'}", markup=False, soft_wrap=True)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


WARN = "⚠"  # beside a task whose run has warnings (metrics.json "warnings": diverged, collapsed, constant)


def print_results(results: dict[str, dict[str, Any]], title: str, run_dir: Path | None = None,
                  flagged: Any = ()) -> None:
    """``flagged``: tasks whose scores come from a run with warnings, marked ⚠ (the lines follow the table)."""
    table = Table(title=title)
    cols = [
        ("task", None), ("kind", "kind"), ("n", "n"), ("acc loglik", "accuracy_loglik"),
        ("acc generate", "accuracy_generate"), ("majority", "majority_baseline"), ("chance", "chance"),
        ("ROUGE-L", "rougeL"), ("s loglik", "seconds_loglik"), ("s generate", "seconds_generate"),
    ]
    for name, _ in cols:
        table.add_column(name, justify="left" if name in ("task", "kind") else "right")
    for task, r in results.items():
        table.add_row(f"{task} {WARN}" if task in flagged else task, *[_fmt(r.get(k)) for _, k in cols[1:]])
    console = Console(width=140)
    console.print(table)
    summary = summarize(results)
    if summary:
        console.print("  ".join(f"{k}={v:.1f}" for k, v in summary.items()))
    if flagged:
        console.print(f"{WARN} this run has warnings (below, and under \"warnings\" in metrics.json): its scores may not "
                      "reflect a trained model", markup=False)
    if run_dir is not None:
        print_results_path(console, run_dir)


def print_change_table(metrics: dict[str, Any], run_dir: Path | None = None) -> None:
    """Original vs deactivated scores per task (paper Table 1 layout), and the change matrix if any."""
    console = Console(width=160)
    rows = metrics.get("table")
    if rows:
        cols = list(next(iter(rows.values())))
        table = Table(title="deactivation: each task with its own set (or its random control) switched off")
        table.add_column("task")
        for c in cols:
            table.add_column(c, justify="right")
        for t, r in rows.items():
            table.add_row(t, *[_fmt(r.get(c)) for c in cols])
        avg = {c: mean(r[c] for r in rows.values() if c in r) for c in cols}
        table.add_row("avg", *[_fmt(avg[c]) for c in cols])
        console.print(table)
    if metrics.get("source") == "matrix" and metrics.get("change"):
        for kind, mat in metrics["change"].items():
            console.print(matrix_table(mat, f"score change, rows = whose {kind} neurons are off, columns = evaluated task",
                                       "off \\ eval", "{:+.1f}"))
    if run_dir is not None:
        print_results_path(console, run_dir)


def matrix_table(mat: dict[str, dict[str, float]], title: str, corner: str, fmt: str) -> Table:
    """A task x task table (rows and columns in the order of ``mat``)."""
    tasks = list(mat)
    table = Table(title=title)
    table.add_column(corner)
    for c in tasks:
        table.add_column(c, justify="right")
    for i in tasks:
        table.add_row(i, *[fmt.format(mat[i][j]) for j in tasks])
    return table
