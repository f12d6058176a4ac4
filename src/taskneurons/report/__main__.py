"""Reports: ``python -m taskneurons.report <command> ...``.

- ``table5 | fig4 SWEEP --scale S [--seeds 1,2,3]``: the continual-learning artefacts (report/continual.py).
- ``fig2 | fig6 | table8 | table9 | fig3 | table4 [key=value ...]``: the analyses' artefacts, through the analyze
  Hydra app (``python -m taskneurons.analyze <command> analyze.artefact=<name> key=value ...``).
- ``table1 | table2 | fig5 SWEEP --scale S --seeds 1,2,3``: the artefact from its sweep, mean ± 95 % CI per
  cell and paired tests, written to ``outputs/results/<artefact>/<scale>/`` (table.md, result.json, PNGs).
  ``table2 SWEEP`` without ``--scale`` prints the plain table and writes ``SWEEP/table2.json`` (as before).
- ``compare RUN_A RUN_B``: two runs or sweeps side by side, B - A with its interval (and p when paired).
- ``all --scale S [--seeds N] [--only a,b]``: ``make report``: every artefact, run where missing, one README.
- ``verdicts --scale S``: the claim registry's verdicts from the artefacts that exist (no run), printed and
  written to ``outputs/report/verdicts.json`` (``all`` puts the same table at the top of the report).
- ``methods --scale tiny|small [key=value ...]``: ``make methods``: the neuron scorers against exact ablation
  (analyze/methods_report.py), written to ``outputs/results/methods/<scale>/``.

Bad input (unknown artefact, SEEDS=0, runs of different models or caps in one cell) is one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean

from rich.console import Console
from rich.table import Table

from taskneurons.errors import ConfigError
from taskneurons.report.artefacts import paper_numbers
from taskneurons.report.heatmap import save_change_heatmaps
from taskneurons.report.tables import WARN
from taskneurons.runtime.atomic import atomic_write_json


def load_runs(sweep: Path) -> list[dict]:
    """Every finished job of the sweep (report/runs.py: a damaged metrics.json is a ConfigError naming it)."""
    from taskneurons.report.runs import load_runs as runs_of

    return [r.metrics for r in runs_of(sweep)]


def table2(sweep: Path, paper_key: str | None) -> dict:
    rows: dict[str, dict[str, float]] = {}
    # Fig. 5 (fine-tuning panel): change of every task after training task i's (or random) neurons
    change: dict[str, dict[str, dict[str, float]]] = {}
    warned: dict[tuple[str, str], list[str]] = {}
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
        if m.get("warnings"):  # diverged, collapsed or constant (lit/divergence.py): marked beside the cell
            warned[(task, f"train_{m['neurons']}")] = sorted({w["code"] for w in m["warnings"]})
    paper = paper_numbers(paper_key) if paper_key else {}
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
            cells.append((f"{row[c]:.1f}" + (f" {WARN}" if (task, c) in warned else "")) if c in row else "-")
            if paper:
                v = paper["rows"].get(c, {}).get(task)
                cells.append("-" if v is None else f"{v:.1f}")
        table.add_row(task, *cells)
    avg = {c: round(mean(r[c] for r in rows.values() if c in r), 2) for c in cols if any(c in r for r in rows.values())}
    table.add_row("avg", *[x for c in cols for x in ([f"{avg[c]:.1f}" if c in avg else "-"] + (["" ] if paper else []))])
    Console(width=160).print(table)
    for (task, c), codes in warned.items():
        print(f"{WARN} {task}/{c}: the run has warnings {codes} (metrics.json \"warnings\")")
    result = {"rows": rows, "avg": avg, "paper": paper_key, "finetune_change": change,
              "warnings": {f"{task}/{c}": codes for (task, c), codes in warned.items()}}
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


def _seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds={text!r} must be a comma-separated list of integers, e.g. 1,2,3") from None
    if not seeds:
        raise ConfigError(f"--seeds={text!r} is empty: SEEDS must be >= 1")
    return seeds


def artefact(kind: str, args: argparse.Namespace) -> None:
    from taskneurons.report import paper_tables
    from taskneurons.report.artefacts import SCALES, results_dir, this_command, write_result

    if args.scale not in SCALES:
        raise ConfigError(f"--scale={args.scale} must be one of {', '.join(SCALES)}")
    seeds = _seeds(args.seeds)
    name = args.name or kind
    out_dir = results_dir(name, args.scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "table1":
        result = paper_tables.table1(args.sweep_dir, args.scale, seeds, args.paper or "table1", args.variant or "")
    elif kind == "table2":
        result = paper_tables.table2(args.sweep_dir, args.scale, seeds, args.paper or "table2", out_dir)
    else:
        result = paper_tables.fig5(args.sweep_dir, args.scale, seeds, out_dir)
    result["artefact"] = name
    result["commands"] = [*(args.command or []), this_command()]
    path = write_result(result, out_dir)
    print((out_dir / "table.md").read_text())  # plain: markdown brackets are not rich markup
    print(f"result: {path}")


def report_all(args: argparse.Namespace) -> None:
    from taskneurons.report import collect

    entries = collect.check_request(collect.load_artefacts(), args.scale,
                                    [x for x in (args.only or "").split(",") if x] or None, int(args.seeds))
    status = collect.run_missing(entries, args.scale, int(args.seeds), collect.make_targets(), run=not args.no_run)
    readme = collect.write_readme(status, args.scale, collect.load_artefacts())
    wandb_dir = None if args.no_wandb else collect.log_report_run(status, args.scale, readme)
    for n, st in status.items():
        print(f"  {n:10s} {st['status']}")
    print(f"report: {readme}" + (f"  (W&B run: {wandb_dir})" if wandb_dir else ""))
    if any(st["status"].startswith("failed") for st in status.values()):
        sys.exit(1)


def analysis_command(artefact: str) -> str | None:
    """The ``python -m taskneurons.analyze`` command that builds ``artefact`` (fig2 -> proportions, ...)."""
    from taskneurons.analyze.jobs import ARTEFACTS

    return next((cmd for cmd, names in ARTEFACTS.items() if artefact in names), None)


def main(argv: list[str] | None = None) -> None:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if args_in[:1] and args_in[0] in ("table5", "fig4"):  # one CLI: the continual artefacts have their own parser
        from taskneurons.report.continual import main as continual_main

        return continual_main(args_in)
    command = analysis_command(args_in[0]) if args_in[:1] else None
    if command is not None:  # the analyses' artefacts: the analyze Hydra app, its overrides as given
        import runpy

        # run as __main__, as `python -m taskneurons.analyze` is: Hydra finds conf/ beside that file
        sys.argv = ["python -m taskneurons.analyze", command, f"analyze.artefact={args_in[0]}", *args_in[1:]]
        runpy.run_module("taskneurons.analyze", run_name="__main__", alter_sys=True)
        return None
    ap = argparse.ArgumentParser(prog="python -m taskneurons.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True)
    for kind in ("table1", "table2", "fig5"):
        p = sub.add_parser(kind, help=f"{kind} from its sweep directory")
        p.add_argument("sweep_dir", type=Path)
        p.add_argument("--paper", default=None, help="paper table beside ours (table1|table6, table2|table7)")
        p.add_argument("--scale", default=None, help="tiny|small|paper: write outputs/results/<artefact>/<scale>/")
        p.add_argument("--seeds", default=None, help="the seeds to use, e.g. 1,2,3 (default: every seed found)")
        p.add_argument("--name", default=None, help="artefact name (default: the command), e.g. table6")
        p.add_argument("--variant", default=None, help="what was deactivated (table1): multitask | zeroshot")
        p.add_argument("--command", action="append", help="the command line that made the sweep (recorded)")
    p = sub.add_parser("compare", help="two runs or sweeps side by side")
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    p = sub.add_parser("methods", help="make methods: the neuron scorers against exact ablation")
    p.add_argument("--scale", required=True, help="tiny | small")
    p.add_argument("--command", action="append", help="the command line that made it (recorded)")
    p.add_argument("--eval-examples", type=int, default=None, help="test examples per task (default: the scale's)")
    p.add_argument("--draws", type=int, default=None, help="random sets per point (default 3; at least 3)")
    p.add_argument("overrides", nargs="*", help="identify-config overrides, e.g. neurons.max_examples=32")
    p = sub.add_parser("verdicts", help="the claims' verdicts from the artefacts at one scale (runs nothing)")
    p.add_argument("--scale", required=True)
    p = sub.add_parser("all", help="make report: every artefact at one scale")
    p.add_argument("--scale", required=True)
    p.add_argument("--seeds", default="1")
    p.add_argument("--only", default=None, help="comma-separated artefact names")
    p.add_argument("--no-run", action="store_true", help="only gather what exists")
    p.add_argument("--no-wandb", action="store_true")
    from taskneurons.analyze.jobs import ARTEFACTS

    for command, names in ARTEFACTS.items():
        for name in names:
            sub.add_parser(name, help=f"{name} through python -m taskneurons.analyze {command} [key=value ...]")
    sub.add_parser("table5", help="Table 5 from a continual sweep: table5 SWEEP --scale S [--seeds ...]")
    sub.add_parser("fig4", help="Fig. 4 from a continual sweep: fig4 SWEEP --scale S [--order O] [--seeds ...]")
    args = ap.parse_args(argv)
    try:
        if args.kind == "compare":
            from taskneurons.report.compare import compare, print_compare

            result = compare(args.run_a, args.run_b)
            print_compare(result)
            if args.json:
                atomic_write_json(args.json, result)
        elif args.kind == "all":
            if not str(args.seeds).isdigit():
                raise ConfigError(f"SEEDS={args.seeds} must be a whole number >= 1")
            report_all(args)
        elif args.kind == "verdicts":
            from taskneurons.report.artefacts import SCALES, output_root
            from taskneurons.report.collect import verdict_section

            if args.scale not in SCALES:
                raise ConfigError(f"--scale={args.scale} must be one of {', '.join(SCALES)}")
            print("\n".join(verdict_section(args.scale, output_root() / "report")))
            print(f"verdicts: {output_root() / 'report' / 'verdicts.json'}")
        elif args.kind == "methods":
            from taskneurons.analyze.methods_report import write_methods

            if args.draws is not None and args.draws < 3:
                raise ConfigError(f"--draws={args.draws} must be >= 3 (the random sets' interval is over draws)")
            if args.eval_examples is not None and args.eval_examples < 1:
                raise ConfigError(f"--eval-examples={args.eval_examples} must be >= 1")
            path = write_methods(args.scale, list(args.overrides), args.command,
                                 eval_examples=args.eval_examples, draws=args.draws)
            print(path.with_name("table.md").read_text())
            print(f"result: {path}")
        elif args.kind == "table2" and args.scale is None:
            table2(args.sweep_dir, args.paper)
        else:
            artefact(args.kind, args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
