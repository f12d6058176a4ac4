"""Continual-learning reports: Table 5 (CL per method x order) and Fig. 4 (FG retention per stage) from a
sweep, with the paper's numbers beside ours (one run's accuracy heatmap: ``continual/heatmap.py``).

``python -m taskneurons.report table5|fig4 <sweep dir> --scale tiny|small|paper [--seeds 1,2]`` (also as
``python -m taskneurons.report.continual``)
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

from taskneurons.continual.metrics import fg_retention  # noqa: E402
from taskneurons.errors import ConfigError  # noqa: E402
from taskneurons.report.artefacts import md_table, paper_numbers, results_dir, write_result  # noqa: E402
from taskneurons.report.runs import load_runs as runs_of  # noqa: E402
from taskneurons.report.runs import select  # noqa: E402
from taskneurons.runtime.figures import save_figure  # noqa: E402

METHOD_ORDER = ["seqft", "seqlora", "olora", "migu", "ncft", "wncft", "pertask", "mtl"]
LABEL = {"seqft": "SeqFT", "seqlora": "SeqLoRA", "olora": "O-LoRA", "ncft": "NCFT", "wncft": "W-NCFT",
         "pertask": "Per-Task FT", "mtl": "MTL", "epi": "EPI", "migu": "MIGU"}
STD, LONG = ["order1", "order2", "order3"], ["order4", "order5", "order6"]
# caps that differ between the runs of one Table 5 / Fig. 4 sweep by design (the tasks follow the order)
CONTINUAL_VARIES = ("tasks",)


def load_runs(sweep: Path, seeds: list[int] | None = None) -> list[dict]:
    """The finished continual runs of a sweep (report/runs.py: one loader, one error policy), the newest per
    (method, order, seed); runs of other models or caps in one table are refused."""
    finished = [r for r in runs_of(sweep) if r.metrics.get("job") == "continual" and r.metrics.get("complete")]
    if not finished:
        raise ConfigError(f"no finished continual runs (metrics.json) under {sweep}; run the sweep first")
    kept = select(finished, seeds, lambda r: (r.metrics["method"], r.metrics["order_name"]),
                  exclude_caps=CONTINUAL_VARIES, what="continual runs")
    return [r.metrics for r in kept]


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
            raise ConfigError(f"FG needs the pertask run of {order} (A_i), seed {seed}; "
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


def write_artefact(artefact: str, scale: str, title: str, tables: dict, paper: dict, figures: list[str], out: Path,
                   runs: list[dict], commands: list[str]) -> Path:
    """Table 5 / Fig. 4 through the one artefact writer (report/artefacts.py)."""
    seeds = sorted({int(m["seed"]) for m in runs})
    result = {"artefact": artefact, "scale": scale, "title": title, "tables": tables, "paper": paper,
              "figures": figures, "commands": commands, "model": runs[0]["model"], "seeds": seeds,
              "caps": {"model": runs[0]["model"], "runs": len(runs), "seeds": seeds}}
    write_result(result, out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m taskneurons.report.continual", description=__doc__)
    ap.add_argument("kind", choices=["table5", "fig4"])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--scale", default="small")
    ap.add_argument("--order", default=None, help="fig4: the order to plot (default: the longest present)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--command", action="append", default=[], help="the command line(s) that made the sweep")
    ap.add_argument("--seeds", default=None, help="the seeds to use, e.g. 1,2,3 (default: every seed found)")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        _write(args, argv, seeds)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def _write(args: argparse.Namespace, argv: list[str] | None, seeds: list[int] | None) -> None:
    runs = load_runs(args.sweep_dir, seeds)
    out = args.out or results_dir(args.kind, args.scale)  # under $TASKNEURONS_OUTPUT like the runs
    commands = [*args.command, " ".join(["python -m taskneurons.report", *(argv or sys.argv[1:])])]
    if args.kind == "table5":
        ours = table5(runs)
        bwt = {"columns": ["method", "order", "cl", "bwt", "avg_forgetting"],
               "rows": [[LABEL.get(m["method"], m["method"]), m["order_name"], m["summary"].get("cl"),
                         m["summary"].get("bwt"), m["summary"].get("avg_forgetting")] for m in runs]}
        write_artefact("table5", args.scale, "Table 5: CL average accuracy after the last task", {"cl": ours, "bwt": bwt},
                       {"tables": {"cl": paper_table5()}}, [], out, runs, commands)
        print(md_table(ours, 1))
    else:
        curves, order = fg_curves(runs, args.order)
        png = save_fg_plot(curves, order, out / "fig4.png", f"FG retention per stage, {order} ({runs[0]['model']})")
        n = max(len(v) for v in curves.values())
        table = {"columns": ["method", *[f"stage{i + 1}" for i in range(n)]],
                 "rows": [[LABEL.get(k, k), *v] for k, v in curves.items()]}
        write_artefact("fig4", args.scale, f"Fig. 4: FG retention per stage ({order})", {"fg": table},
                       {"trends": paper_numbers()["fig4"]["trends"]}, [png.name], out, runs, commands)
        print(md_table(table, 1))
    print(f"wrote {out}/table.md and result.json")


if __name__ == "__main__":
    main()
