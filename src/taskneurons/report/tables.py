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


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def print_results(results: dict[str, dict[str, Any]], title: str, run_dir: Path | None = None) -> None:
    table = Table(title=title)
    cols = [
        ("task", None), ("kind", "kind"), ("n", "n"), ("acc loglik", "accuracy_loglik"),
        ("acc generate", "accuracy_generate"), ("majority", "majority_baseline"), ("chance", "chance"),
        ("ROUGE-L", "rougeL"), ("s loglik", "seconds_loglik"), ("s generate", "seconds_generate"),
    ]
    for name, _ in cols:
        table.add_column(name, justify="left" if name in ("task", "kind") else "right")
    for task, r in results.items():
        table.add_row(task, *[_fmt(r.get(k)) for _, k in cols[1:]])
    console = Console(width=140)
    console.print(table)
    summary = summarize(results)
    if summary:
        console.print("  ".join(f"{k}={v:.1f}" for k, v in summary.items()))
    if run_dir is not None:
        console.print(f"results: {run_dir / 'metrics.json'}")
