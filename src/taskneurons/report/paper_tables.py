"""Tables 1, 2 and Fig. 5 from their sweeps, with intervals, paired tests and the paper beside ours.

Every cell is a ``stats.Estimate`` (one run: bootstrap over its test examples; several seeds: t over
the seeds). Every task-vs-random pair gets a paired sign-flip test over the same test examples,
pooled over seeds. Each builder returns the result.json of the artefact contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from taskneurons.report import stats
from taskneurons.report.artefacts import paper_numbers
from taskneurons.report.heatmap import save_change_heatmaps
from taskneurons.report.runs import Run, load_runs, select

Records = list[dict]  # one per_example record per seed


def _scores(recs: Records) -> list[list[float]]:
    return [list(r["scores"]) for r in recs]


def cell(recs: Records) -> stats.Estimate:
    return stats.cell_estimate(_scores(recs))


def avg_cell(per_task: list[Records]) -> stats.Estimate:
    return stats.mean_of_means([_scores(r) for r in per_task])


def paired_effect(a: Records, b: Records) -> tuple[stats.Estimate, dict]:
    """mean(a - b) over the same examples: interval (bootstrap, or t over seeds) and the pooled paired test."""
    xs, ys, per_seed = [], [], []
    for ra, rb in zip(a, b, strict=True):
        x, y = stats.align(ra, rb)
        xs += x
        ys += y
        per_seed.append(float(np.mean(np.subtract(x, y))) if x else 0.0)
    est = stats.paired_diff_ci(xs, ys) if len(a) == 1 else stats.t_interval(per_seed)
    return est, stats.paired_test(xs, ys)


def _fmt_test(est: stats.Estimate, test: dict) -> str:
    return f"{est.fmt()} (p={stats.fmt_p(test['p'])})"


def _caps(run: Run, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in run.caps(exclude).items() if v is not None}


def _paper_side(key: str, rows: dict[str, str], tasks: list[str], ours: dict[str, dict[str, stats.Estimate]]
                ) -> tuple[dict, dict, list[str]]:
    """The paper's rows on our tasks, and the gap (ours - paper) where the task is the same."""
    paper = paper_numbers(key)
    prow = paper.get("rows", {})
    shared = [t for t in tasks if any(t in prow.get(r, {}) for r in rows)]
    columns = ["method", *tasks]
    ptable = {"columns": columns, "rows": [[label, *[prow.get(r, {}).get(t) for t in tasks]] for r, label in rows.items()]}
    gap = {"columns": columns, "rows": [
        [label, *[(f"{ours[r][t].mean - prow[r][t]:+.1f}" if t in prow.get(r, {}) else None) for t in tasks]]
        for r, label in rows.items()]}
    notes = [] if shared else [f"none of our tasks {tasks} is in the paper's table; its own tasks are listed in the paper table"]
    if not shared and prow:
        ptasks = list(next(iter(prow.values())))
        ptable = {"columns": ["method", *ptasks], "rows": [[label, *[prow.get(r, {}).get(t) for t in ptasks]] for r, label in rows.items()]}
    return {"model": paper.get("model"), "tables": {f"paper {key}": ptable}}, gap, notes


# --- Table 1 --------------------------------------------------------------------------------------

T1_ROWS = {"original": "Original", "deactivate_random": "Deactivate-Random", "deactivate_task": "Deactivate-Task"}


def table1(sweep: Path, scale: str, seeds: list[int] | None, paper_key: str = "table1", variant: str = "") -> dict:
    runs = select(load_runs(sweep), seeds, lambda r: "t1" if r.metrics.get("job") == "evaluate" and r.metrics.get("table")
                  and r.metrics.get("source") == "same" else None, what="Table 1 runs (evaluate, deactivation source=same)")
    tasks = [t for t in runs[0].metrics["table"] if all(t in r.metrics["table"] for r in runs)]
    recs: dict[str, dict[str, Records]] = {row: {t: [] for t in tasks} for row in T1_ROWS}
    draws: dict[str, list[float]] = {t: [] for t in tasks}
    for r in runs:
        m = r.metrics
        for t in tasks:
            recs["original"][t].append(m["tasks"][t]["per_example"])
            for kind in ("task", "random"):
                recs[f"deactivate_{kind}"][t].append(m["deactivation"][kind][t][t]["per_example"])
            draws[t] += m["deactivation"]["random"][t][t].get("draw_scores", [m["deactivation"]["random"][t][t]["score"]])
    est, avg, ours = _estimates(recs, T1_ROWS, tasks)
    pairs = {"task_vs_random": ("deactivate_task", "deactivate_random"), "task_vs_original": ("deactivate_task", "original"),
             "random_vs_original": ("deactivate_random", "original")}
    tests, test_cells = _pair_tests(pairs, recs, tasks)
    paper, gap, notes = _paper_side(paper_key, T1_ROWS, tasks, est)
    prow = paper_numbers(paper_key).get("rows", {})
    effect_rows = []
    for t in tasks:
        e, tst = test_cells["task_vs_random"][t]
        pv = (prow["deactivate_task"][t] - prow["deactivate_random"][t]) if t in prow.get("deactivate_task", {}) else None
        effect_rows.append([t, e.fmt(), stats.fmt_p(tst["p"]), None if pv is None else f"{pv:+.1f}"])
    pt = prow.get("deactivate_task", {})
    paper_avg = (np.mean([pt[t] - prow["deactivate_random"][t] for t in pt]) if pt else None)
    e, tst = test_cells["task_vs_random"]["all"]
    effect_rows.append(["all tasks (pooled)", e.fmt(), stats.fmt_p(tst["p"]), None if paper_avg is None else f"{paper_avg:+.1f} (paper avg)"])
    spread = "; ".join(f"{t}: {min(v):.1f}–{max(v):.1f}" for t, v in draws.items())
    notes = notes + [
        f"intervals: {est['original'][tasks[0]].method} (95 %); p: paired sign-flip test over the same test examples, pooled over seeds",
        f"Deactivate-Random is the mean of neurons.control_seeds draws per (task, seed); scores of single draws: {spread}",
        f"model deactivated: {variant or 'as configured'}",
    ]
    return _result("table1", scale, "Table 1: deactivating task-specific vs random neurons", runs, tasks,
                   {"ours": ours, "task - random (ours vs paper)":
                    {"columns": ["task", "ours Δ (95 % CI)", "p", "paper Δ"], "rows": effect_rows},
                    "paired tests": tests, "gap to the paper (ours - paper)": gap},
                   paper, est, avg, test_cells, notes)


def _pair_tests(pairs: dict[str, tuple[str, str]], recs: dict[str, dict[str, Records]], tasks: list[str]):
    cells: dict[str, dict[str, tuple]] = {}
    rows = []
    for name, (a, b) in pairs.items():
        cells[name] = {t: paired_effect(recs[a][t], recs[b][t]) for t in tasks}
        # all tasks pooled: concatenate each seed's records of every task
        n_seeds = len(recs[a][tasks[0]])
        pa = [{"ids": [f"{t}/{i}" for t in tasks for i in recs[a][t][s]["ids"]],
               "scores": [x for t in tasks for x in recs[a][t][s]["scores"]]} for s in range(n_seeds)]
        pb = [{"ids": [f"{t}/{i}" for t in tasks for i in recs[b][t][s]["ids"]],
               "scores": [x for t in tasks for x in recs[b][t][s]["scores"]]} for s in range(n_seeds)]
        cells[name]["all"] = paired_effect(pa, pb)
        rows.append([name.replace("_", " "), *[_fmt_test(*cells[name][t]) for t in [*tasks, "all"]]])
    return {"columns": ["pair (Δ = first - second)", *tasks, "all (pooled)"], "rows": rows}, cells


def _result(artefact: str, scale: str, title: str, runs: list[Run], tasks: list[str], tables: dict, paper: dict,
            est: dict, avg: dict, test_cells: dict, notes: list[str], exclude_caps: tuple[str, ...] = ()) -> dict:
    cells: dict[str, Any] = {}
    for row, per_task in est.items():
        for t, e in per_task.items():
            cells[f"{artefact}/{row}/{t}"] = e.as_dict()
        if row in avg:
            cells[f"{artefact}/{row}/avg"] = avg[row].as_dict()
    for pair, per_task in test_cells.items():
        for t, (e, tst) in per_task.items():
            cells[f"{artefact}/{pair}/{t}"] = {**e.as_dict(), "p": tst["p"], "test": tst["method"]}
    return {"artefact": artefact, "scale": scale, "title": title, "tables": tables, "paper": paper,
            "cells": cells, "notes": notes, "caps": _caps(runs[0], exclude_caps), "model": runs[0].get("model.name"),
            "seeds": sorted({r.seed for r in runs}), "runs": [str(r.dir) for r in runs], "tasks": tasks}


# --- Table 2 --------------------------------------------------------------------------------------

T2_ROWS = {"zero_shot": "Zero-shot", "train_random": "Train-Random", "train_task": "Train-Task"}


def _estimates(recs: dict, rows: dict[str, str], tasks: list[str]) -> tuple[dict, dict, dict]:
    """Per-cell estimates (with intervals), per-row averages over tasks, and the printed "ours" table."""
    est = {row: {t: cell(recs[row][t]) for t in tasks} for row in rows}
    avg = {row: avg_cell([recs[row][t] for t in tasks]) for row in rows}
    ours = {"columns": ["method", *tasks, "Avg"],
            "rows": [[label, *[est[row][t].fmt() for t in tasks], avg[row].fmt()] for row, label in rows.items()]}
    return est, avg, ours


def _t2_cell(r: Run):
    m = r.metrics
    if m.get("job") != "train" or len(m.get("train_tasks", [])) != 1 or m.get("neurons") not in ("task", "random"):
        return None
    return (m["train_tasks"][0], m["neurons"])


def table2(sweep: Path, scale: str, seeds: list[int] | None, paper_key: str = "table2", out_dir: Path | None = None) -> dict:
    runs = select(load_runs(sweep), seeds, _t2_cell, exclude_caps=("tasks",),
                  what="Table 2 runs (train, one training task, neurons=task|random)")
    by = {(_t2_cell(r), r.seed): r for r in runs}
    tasks = sorted({c[0] for c, _ in by}, key=[c[0] for c, _ in by].index)
    seed_list = sorted({s for _, s in by})
    missing = [f"{t}/{k}/seed{s}" for t in tasks for k in ("task", "random") for s in seed_list if ((t, k), s) not in by]
    if missing:
        from taskneurons.errors import ConfigError

        raise ConfigError(f"Table 2 cells missing in {sweep}: {', '.join(missing)}; rerun the sweep (make table2) to finish them")
    recs: dict[str, dict[str, Records]] = {row: {t: [] for t in tasks} for row in T2_ROWS}
    change: dict[str, dict[str, dict[str, list[float]]]] = {"task": {}, "random": {}}
    for t in tasks:
        for s in seed_list:
            rt, rr = by[((t, "task"), s)], by[((t, "random"), s)]
            recs["zero_shot"][t].append(rt.metrics["before"][t]["per_example"])
            recs["train_task"][t].append(rt.metrics["tasks"][t]["per_example"])
            recs["train_random"][t].append(rr.metrics["tasks"][t]["per_example"])
            for kind, run in (("task", rt), ("random", rr)):
                row = change[kind].setdefault(t, {})
                for j, res in run.metrics["tasks"].items():
                    row.setdefault(j, []).append(res["score"] - run.metrics["before"][j]["score"])
    est, avg, ours = _estimates(recs, T2_ROWS, tasks)
    # a trained cell whose run finished with warnings (diverged, collapsed, constant prediction) is marked
    warned = {(f"train_{k}", t): [(s, w) for s in seed_list for w in by[((t, k), s)].metrics.get("warnings") or []]
              for t in tasks for k in ("task", "random")}
    warn_notes = mark_warned_cells(ours, list(T2_ROWS), tasks, warned)
    pairs = {"task_vs_random": ("train_task", "train_random"), "task_vs_zero_shot": ("train_task", "zero_shot"),
             "random_vs_zero_shot": ("train_random", "zero_shot")}
    tests, test_cells = _pair_tests(pairs, recs, tasks)
    paper, gap, notes = _paper_side(paper_key, T2_ROWS, tasks, est)
    result = _result("table2", scale, "Table 2: fine-tuning task-specific vs random neurons", runs, tasks,
                     {"ours": ours, "paired tests": tests, "gap to the paper (ours - paper)": gap}, paper, est, avg,
                     test_cells, notes + [f"intervals: {est['zero_shot'][tasks[0]].method} (95 %); p: paired sign-flip test over "
                                          "the same test examples, pooled over seeds; Train-Random: one draw per (task, seed)"]
                     + warn_notes, exclude_caps=("tasks",))
    for (row, t), found in warned.items():
        if found:
            result["cells"][f"table2/{row}/{t}"]["warnings"] = sorted({w["code"] for _, w in found})
    evaluated = sorted(set.intersection(*[set(v) for k in change.values() for v in k.values()])) if tasks else []
    if out_dir is not None and len(tasks) > 1 and set(tasks) <= set(evaluated):
        mean = {k: {i: {j: float(np.mean(change[k][i][j])) for j in tasks} for i in tasks} for k in change}
        save_change_heatmaps(mean, tasks, out_dir / "finetune_matrix.png",
                             title=f"score change after fine-tuning task i's neurons (mean over {len(seed_list)} seed(s))")
        result["figures"] = ["finetune_matrix.png"]
    return result


def mark_warned_cells(table: dict, row_keys: list[str], tasks: list[str],
                      warned: dict[tuple[str, str], list[tuple[int, dict]]]) -> list[str]:
    """Append ⚠ to the cells of ``table`` (rows in ``row_keys`` order, a label column first) whose runs have
    warnings; returns one note per warning (the footnote)."""
    from taskneurons.report.tables import WARN

    notes = []
    for i, row in enumerate(row_keys):
        for j, t in enumerate(tasks):
            found = warned.get((row, t)) or []
            if found:
                table["rows"][i][j + 1] = f"{table['rows'][i][j + 1]} {WARN}"
                notes += [f"{WARN} {row}/{t} (seed {seed}): [{w['code']}] {w['message']}" for seed, w in found]
    return notes


# --- Fig. 5 ---------------------------------------------------------------------------------------

def _reading(r: Run):
    m = r.metrics
    if m.get("job") != "evaluate" or m.get("source") != "matrix" or not m.get("change"):
        return None
    d = r.get("neurons.definition") or "output_units"
    mat = r.get("neurons.matrices") or "all"
    return d if d == "intermediate" else f"{d}/{mat}"


def fig5(sweep: Path, scale: str, seeds: list[int] | None, out_dir: Path) -> dict:
    runs = select(load_runs(sweep), seeds, _reading, exclude_caps=("neurons.definition", "neurons.matrices"),
                  what="Fig. 5 runs (evaluate, deactivation source=matrix)")
    readings: dict[str, list[Run]] = {}
    for r in runs:
        readings.setdefault(_reading(r), []).append(r)
    rows, figures, cells = [], [], {}
    for reading, rs in readings.items():
        tasks = list(rs[0].metrics["table"])
        kinds = [k for k in ("task", "random") if k in rs[0].metrics["change"]]
        dom: dict[str, stats.Estimate] = {}
        for kind in kinds:
            if len(rs) == 1:
                m = rs[0].metrics
                deact = {i: {j: m["deactivation"][kind][i][j]["per_example"] for j in tasks} for i in tasks}
                dom[kind] = stats.dominance_bootstrap({t: m["tasks"][t]["per_example"] for t in tasks}, deact, tasks)
            else:
                per_seed = [stats.dominance_score(np.array([[r.metrics["change"][kind][i][j] for j in tasks] for i in tasks]))
                            for r in rs]
                dom[kind] = stats.t_interval(per_seed)
            cells[f"fig5/{reading}/dominance_{kind}"] = dom[kind].as_dict()
        mean = {k: {i: {j: float(np.mean([r.metrics["change"][k][i][j] for r in rs])) for j in tasks} for i in tasks} for k in kinds}
        mt = np.array([[mean["task"][i][j] for j in tasks] for i in tasks])
        off = mt[~np.eye(len(tasks), dtype=bool)]
        name = f"fig5_{reading.replace('/', '_')}.png"
        save_change_heatmaps(mean, tasks, out_dir / name,
                             title=f"{reading}: score change after deactivating task i's neurons (mean over {len(rs)} seed(s))")
        figures.append(name)
        rows.append([reading, dom["task"].fmt(), dom["random"].fmt() if "random" in dom else None,
                     f"{np.diag(mt).mean():+.1f}", f"{off.mean():+.1f}" if off.size else None,
                     "yes" if dom["task"].hi is not None and dom["task"].hi < 0 else "no"])
    method = next(iter(cells.values()))["method"] if cells else ""
    return {"artefact": "fig5", "scale": scale, "title": "Fig. 5: task x task deactivation matrix and diagonal dominance",
            "tables": {"diagonal dominance": {"columns": [
                "reading", "dominance, task sets (95 % CI)", "dominance, random sets", "mean diagonal change",
                "mean off-diagonal change", "diagonal dominates (CI < 0)"], "rows": rows}},
            "paper": {"trends": ["Fig. 5 (a, b): deactivating task i's neurons hurts task i most: the diagonal dominates",
                                 "Fig. 5 (c, d): fine-tuning task i's neurons helps task i most, except AmazonFood/SST-2 and E2E/CommonGen"]},
            "figures": figures, "cells": cells,
            "notes": ["dominance = mean diagonal change - mean off-diagonal change (points); for deactivation the "
                      "diagonal dominates when it is negative (a task's own neurons cost it more than other tasks' neurons)",
                      f"intervals: {method} (95 %)",
                      "readings: output_units/all = every output unit of gate/up/down; W1 = gate/up only; "
                      "W2 = down only; intermediate = FFN hidden units (gate/up rows + down column)"],
            "caps": _caps(runs[0], ("neurons.definition", "neurons.matrices")), "model": runs[0].get("model.name"),
            "seeds": sorted({r.seed for r in runs}), "runs": [str(r.dir) for r in runs]}
