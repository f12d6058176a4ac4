"""Continual-learning reports: Table 5 (CL per method x order) and Fig. 4 (FG retention per stage) from a
sweep, with the paper's numbers beside ours (one run's accuracy heatmap: ``continual/heatmap.py``).

``python -m taskneurons.report.continual table5|fig4 <sweep dir> --scale tiny|small|paper``
writes ``outputs/results/<artefact>/<scale>/{table.md,result.json,*.png}`` (the artefact contract).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from taskneurons import EXPERIMENTS_DIR  # noqa: E402
from taskneurons.continual.metrics import fg_retention  # noqa: E402
from taskneurons.report.artefacts import results_dir  # noqa: E402
from taskneurons.runtime.atomic import atomic_write_json, atomic_write_text, read_json_with_checksum  # noqa: E402
from taskneurons.runtime.figures import save_figure  # noqa: E402

METHOD_ORDER = ["seqft", "seqlora", "olora", "migu", "ncft", "wncft", "pertask", "mtl"]
LABEL = {"seqft": "SeqFT", "seqlora": "SeqLoRA", "olora": "O-LoRA", "ncft": "NCFT", "wncft": "W-NCFT",
         "pertask": "Per-Task FT", "mtl": "MTL", "epi": "EPI", "migu": "MIGU"}
STD, LONG = ["order1", "order2", "order3"], ["order4", "order5", "order6"]


def load_runs(sweep: Path) -> list[dict]:
    runs = []
    for p in sorted(sweep.rglob("metrics.json")):
        try:
            m = read_json_with_checksum(p)
        except ValueError as e:
            print(f"warning: skipping {e}", file=sys.stderr)
            continue
        if m.get("job") == "continual" and m.get("complete"):
            runs.append(m)
    if not runs:
        raise SystemExit(f"error: no finished continual runs (*/metrics.json) under {sweep}; run the sweep first")
    return runs


def paper_numbers() -> dict:
    return yaml.safe_load((EXPERIMENTS_DIR / "paper_numbers.yaml").read_text())


def table5(runs: list[dict]) -> dict:
    """CL of the last row per (method, order), the mean over seeds; averages over the orders per benchmark."""
    by_seed: dict[str, dict[str, list[float]]] = {}
    for m in runs:
        by_seed.setdefault(m["method"], {}).setdefault(m["order_name"], []).append(float(m["summary"]["cl"]))
    cl = {k: {o: mean(v) for o, v in d.items()} for k, d in by_seed.items()}
    present = {o for v in cl.values() for o in v}
    orders = [o for o in STD + LONG if o in present] + sorted(present - set(STD + LONG))  # custom orders last
    cols = ["method", *orders, "avg_std", "avg_long8"]
    rows = []
    for method in [x for x in METHOD_ORDER if x in cl] + sorted(set(cl) - set(METHOD_ORDER)):
        v = cl[method]
        std = [v[o] for o in STD if o in v]
        lng = [v[o] for o in LONG if o in v]
        rows.append([LABEL.get(method, method), *[round(v[o], 2) if o in v else None for o in orders],
                     round(mean(std), 2) if std else None, round(mean(lng), 2) if lng else None])
    return {"columns": cols, "rows": rows}


def paper_table5() -> dict:
    p = paper_numbers()["table5"]
    cols = ["method", *STD, "avg_std", *LONG, "avg_long8"]
    return {"columns": cols, "rows": [[LABEL.get(k, k), *[r[c] for c in cols[1:]]] for k, r in p["rows"].items()]}


def fg_curves(runs: list[dict], order: str | None) -> tuple[dict[str, list[float | None]], str]:
    """FG per stage for every method on ``order`` (default: the longest order present), A_i from the
    pertask run of the same seed; the mean over seeds."""
    by_order: dict[str, dict[int, dict[str, dict]]] = {}
    for m in runs:
        by_order.setdefault(m["order_name"], {}).setdefault(int(m["seed"]), {})[m["method"]] = m
    if order is None:
        order = max(by_order, key=lambda o: len(next(iter(next(iter(by_order[o].values())).values()))["order"]))
    per_seed: dict[str, list[list[float | None]]] = {}
    for seed, group in sorted(by_order.get(order, {}).items()):
        if "pertask" not in group:
            raise SystemExit(f"error: FG needs the pertask run of {order} (A_i), seed {seed}; "
                             "add continual/method=pertask to the sweep")
        n = len(group["pertask"]["order"])
        per_task = [group["pertask"]["matrix"][-1][t] for t in range(n)]
        for method in [x for x in METHOD_ORDER if x in group and x != "mtl"]:
            mat = group[method]["matrix"]
            per_seed.setdefault(method, []).append(fg_retention([r[:n] for r in mat], per_task))
    curves = {k: [None if v[0][s] is None else round(mean(x[s] for x in v), 2) for s in range(len(v[0]))]
              for k, v in per_seed.items()}
    return curves, order


def save_fg_plot(curves: dict[str, list[float | None]], order: str, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, ys in curves.items():
        xs = [i + 1 for i, y in enumerate(ys) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], marker="o", label=LABEL.get(method, method))
    ax.set_xlabel(f"stage ({order})")
    ax.set_ylabel("FG retention (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _md(name: str, t: dict) -> str:
    fmt = lambda x: "-" if x is None else (f"{x:.1f}" if isinstance(x, float) else str(x))  # noqa: E731
    lines = [f"**{name}**", "", "| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in t["rows"]]
    return "\n".join(lines) + "\n"


def write_artefact(artefact: str, scale: str, title: str, tables: dict, paper: dict, figures: list[str], out: Path,
                   runs: list[dict], commands: list[str], extra_md: str = "") -> Path:
    from taskneurons.runtime.metadata import git_state

    out.mkdir(parents=True, exist_ok=True)
    caps = {"model": runs[0]["model"], "runs": len(runs), "seeds": sorted({int(m["seed"]) for m in runs})}
    md = [f"# {title} ({scale})", "", *[_md(f"ours: {k}", v) for k, v in tables.items()]]
    md += [_md(f"paper: {k}", v) for k, v in paper.items() if isinstance(v, dict)]
    if paper.get("trends"):
        md += ["**paper (trends)**", "", *[f"- {t}" for t in paper["trends"]], ""]
    md += [extra_md, *[f"![{f}]({f})" for f in figures]]
    atomic_write_text(out / "table.md", "\n".join(md) + "\n")
    atomic_write_json(out / "result.json", {
        "artefact": artefact, "scale": scale, "title": title, "tables": tables, "paper": paper, "figures": figures,
        "commands": commands, "caps": caps, "git_sha": git_state().get("sha"), "model": runs[0]["model"],
        "seeds": caps["seeds"]})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m taskneurons.report.continual", description=__doc__)
    ap.add_argument("kind", choices=["table5", "fig4"])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--scale", default="small")
    ap.add_argument("--order", default=None, help="fig4: the order to plot (default: the longest present)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--command", action="append", default=[], help="the command line(s) that made the sweep")
    args = ap.parse_args(argv)
    runs = load_runs(args.sweep_dir)
    out = args.out or results_dir(args.kind, args.scale)  # under $TASKNEURONS_OUTPUT like the runs
    commands = [*args.command, " ".join(["python -m taskneurons.report.continual", *(argv or sys.argv[1:])])]
    if args.kind == "table5":
        ours = table5(runs)
        bwt = {"columns": ["method", "order", "cl", "bwt", "avg_forgetting"],
               "rows": [[LABEL.get(m["method"], m["method"]), m["order_name"], m["summary"].get("cl"),
                         m["summary"].get("bwt"), m["summary"].get("avg_forgetting")] for m in runs]}
        write_artefact("table5", args.scale, "Table 5: CL average accuracy after the last task", {"cl": ours, "bwt": bwt},
                       {"cl": paper_table5()}, [], out, runs, commands)
        print(_md("ours: CL", ours))
    else:
        curves, order = fg_curves(runs, args.order)
        png = save_fg_plot(curves, order, out / "fig4.png", f"FG retention per stage, {order} ({runs[0]['model']})")
        n = max(len(v) for v in curves.values())
        table = {"columns": ["method", *[f"stage{i + 1}" for i in range(n)]],
                 "rows": [[LABEL.get(k, k), *v] for k, v in curves.items()]}
        write_artefact("fig4", args.scale, f"Fig. 4: FG retention per stage ({order})", {"fg": table},
                       {"trends": paper_numbers()["fig4"]["trends"]}, [png.name], out, runs, commands)
        print(_md("ours: FG", table))
    print(f"wrote {out}/table.md and result.json")


if __name__ == "__main__":
    main()
