"""Aggregate a sweep's runs into a paper table: ``python -m taskneurons.report table2 <sweep dir>``.

table2: per task, zero-shot vs Train-Random vs Train-Task (each from a train run with eval_before=true
and train_tasks=[task]), with the paper's numbers beside ours where the task is the same.
Writes ``<sweep dir>/table2.json`` and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean

import yaml
from rich.console import Console
from rich.table import Table

from taskneurons import PROJECT_ROOT
from taskneurons.report.heatmap import save_change_heatmaps
from taskneurons.runtime.atomic import atomic_write_json, read_json_with_checksum


def load_runs(sweep: Path) -> list[dict]:
    runs = []
    for path in sorted(sweep.glob("*/metrics.json")):
        try:
            runs.append(read_json_with_checksum(path))
        except ValueError as e:
            raise SystemExit(f"error: {e}; rerun that job (the sweep redoes only what is missing)") from None
    if not runs:
        raise SystemExit(f"error: no */metrics.json under {sweep}: run the sweep first (e.g. make table2)")
    return runs


def table2(sweep: Path, paper_key: str | None) -> dict:
    rows: dict[str, dict[str, float]] = {}
    # Fig. 5 (fine-tuning panel): change of every task after training task i's (or random) neurons
    change: dict[str, dict[str, dict[str, float]]] = {}
    for m in load_runs(sweep):
        if m.get("job") != "train" or len(m.get("train_tasks", [])) != 1:
            continue
        task = m["train_tasks"][0]
        row = rows.setdefault(task, {})
        if m.get("before"):
            row["zero_shot"] = m["before"][task]["score"]
            change.setdefault(m["neurons"], {})[task] = {
                t: round(r["score"] - m["before"][t]["score"], 2) for t, r in m["tasks"].items()}
        row[f"train_{m['neurons']}"] = m["tasks"][task]["score"]
    paper = yaml.safe_load((PROJECT_ROOT / "experiments" / "paper_numbers.yaml").read_text()).get(paper_key or "", {})
    cols = ["zero_shot", "train_random", "train_task"]
    table = Table(title=f"Table 2 layout from {sweep}")
    table.add_column("task")
    for c in cols:
        table.add_column(c, justify="right")
        if paper:
            table.add_column(f"paper {c}", justify="right")
    for task, row in rows.items():
        cells = []
        for c in cols:
            cells.append(f"{row[c]:.1f}" if c in row else "-")
            if paper:
                v = paper["rows"].get(c, {}).get(task)
                cells.append("-" if v is None else f"{v:.1f}")
        table.add_row(task, *cells)
    avg = {c: round(mean(r[c] for r in rows.values() if c in r), 2) for c in cols if any(c in r for r in rows.values())}
    table.add_row("avg", *[x for c in cols for x in ([f"{avg[c]:.1f}" if c in avg else "-"] + (["" ] if paper else []))])
    Console(width=160).print(table)
    result = {"rows": rows, "avg": avg, "paper": paper_key, "finetune_change": change}
    trained = sorted({t for kind in change.values() for t in kind})
    if len(trained) > 1 and all(set(kind) == set(trained) for kind in change.values()):
        evaluated = list(next(iter(next(iter(change.values())).values())))
        square = {k: {i: {j: v[i].get(j) for j in trained} for i in trained} for k, v in change.items()}
        if set(evaluated) >= set(trained):
            png = save_change_heatmaps(square, trained, sweep / "finetune_matrix.png",
                                       title="score change after fine-tuning task i's neurons")
            result["heatmap"] = png.name
            print(f"heatmap: {png}")
    atomic_write_json(sweep / "table2.json", result)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("kind", choices=["table2"])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--paper", default=None, help="paper table to print beside ours (table2 | table7)")
    args = ap.parse_args(argv)
    table2(args.sweep_dir, args.paper)


if __name__ == "__main__":
    main()
