"""Two runs or sweeps side by side: ``python -m taskneurons.report compare RUN_A RUN_B``.

Each side's runs are split into cells (a task's score under one condition: original, a deactivated set,
after training on given tasks ...). A cell's runs are its seeds; runs of different models or caps in one
cell are refused. For each cell both sides have: A and B with intervals, and B - A with its interval —
paired over the same test examples when both sides are one run on the same examples (with the paired
test's p), else bootstrap (one run each) or Welch's t (seeds).

When both sides are one run on the same examples, each condition's *effect* (its cell minus the same task's
``original`` / ``before`` cell) is compared too: B's effect - A's effect per example, with its paired interval
and p, and the share of examples whose outcome is the same on both sides. This is how a change of dtype
(``model.dtype=float32`` vs ``auto``) or of code is checked for changing what an experiment concludes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats as sps

from taskneurons.report import stats
from taskneurons.report.runs import Run, check_same_caps, load_runs


def run_cells(run: Run) -> dict[str, dict]:
    """Every (condition, task) score of one run as its per_example record."""
    m = run.metrics
    out: dict[str, dict] = {}
    if m.get("job") == "train":
        cond = f"after train_tasks={','.join(m.get('train_tasks', []))} {m.get('neurons')}"
        for t, r in (m.get("before") or {}).items():
            out[f"before/{t}"] = r.get("per_example")
        for t, r in m.get("tasks", {}).items():
            out[f"{cond}/{t}"] = r.get("per_example")
        return {k: v for k, v in out.items() if v}
    for t, r in (m.get("tasks") or {}).items():
        out[f"original/{t}"] = r.get("per_example")
    for kind, per_src in (m.get("deactivation") or {}).items():
        for src, per_t in per_src.items():
            for t, r in per_t.items():
                key = f"deactivate_{kind}/{t}" if src == t and m.get("source") == "same" else f"deactivate_{kind} of {src}/{t}"
                out[key] = r.get("per_example")
    return {k: v for k, v in out.items() if v}


def side(path: Path) -> dict[str, list[tuple[Run, dict]]]:
    cells: dict[str, list[tuple[Run, dict]]] = {}
    for run in load_runs(path):
        for key, rec in run_cells(run).items():
            cells.setdefault(key, []).append((run, rec))
    for entries in cells.values():
        check_same_caps([r for r, _ in entries])
    return cells


def _diff(a: list[tuple[Run, dict]], b: list[tuple[Run, dict]]) -> tuple[stats.Estimate, float | None, str]:
    if len(a) == 1 and len(b) == 1:
        x, y = stats.align(b[0][1], a[0][1])
        if len(x) == len(a[0][1]["ids"]) == len(b[0][1]["ids"]):
            return stats.paired_diff_ci(x, y), stats.paired_test(x, y)["p"], "paired"
        xa, xb = np.asarray(a[0][1]["scores"], float), np.asarray(b[0][1]["scores"], float)
        rng = np.random.default_rng(0)
        d = (xb[rng.integers(0, xb.size, (stats.N_BOOT, xb.size))].mean(1)
             - xa[rng.integers(0, xa.size, (stats.N_BOOT, xa.size))].mean(1))
        lo, hi = np.quantile(d, [0.025, 0.975])
        return stats.Estimate(float(xb.mean() - xa.mean()), float(lo), float(hi), int(xa.size + xb.size),
                              "bootstrap, unpaired"), None, "unpaired"
    ma = [float(np.mean(r["scores"])) for _, r in a]
    mb = [float(np.mean(r["scores"])) for _, r in b]
    if len(ma) < 2 or len(mb) < 2:
        # one side is a single run: combine the two sides' own intervals (independent, normal approximation)
        ea = stats.cell_estimate([r["scores"] for _, r in a])
        eb = stats.cell_estimate([r["scores"] for _, r in b])
        d = eb.mean - ea.mean
        half = float(np.hypot((ea.hi - ea.lo) / 2, (eb.hi - eb.lo) / 2))
        return stats.Estimate(d, d - half, d + half, len(ma) + len(mb), "combined intervals, unpaired"), None, "unpaired"
    res = sps.ttest_ind(mb, ma, equal_var=False)
    ci = res.confidence_interval(0.95)
    return (stats.Estimate(float(np.mean(mb) - np.mean(ma)), float(ci.low), float(ci.high), len(ma) + len(mb),
                           "Welch t over seeds"), float(res.pvalue), "seeds")


def compare(path_a: Path, path_b: Path) -> dict[str, Any]:
    a, b = side(path_a), side(path_b)
    common = [k for k in a if k in b]
    rows = []
    for key in common:
        ea = stats.cell_estimate([r["scores"] for _, r in a[key]])
        eb = stats.cell_estimate([r["scores"] for _, r in b[key]])
        d, p, how = _diff(a[key], b[key])
        rows.append({"cell": key, "a": ea.as_dict(), "b": eb.as_dict(), "diff": d.as_dict(), "p": p, "how": how,
                     "fmt": [key, ea.fmt(), eb.fmt(), d.fmt(), stats.fmt_p(p), how]})
    only = {"a": [k for k in a if k not in b], "b": [k for k in b if k not in a]}
    return {"a": str(path_a), "b": str(path_b), "rows": rows, "only": only, "effects": effects(a, b, common)}


def _reference_cell(key: str, cells: dict) -> str | None:
    cond, _, task = key.rpartition("/")
    for ref in ("original", "before"):
        if cond != ref and f"{ref}/{task}" in cells:
            return f"{ref}/{task}"
    return None


def _paired(rec: dict, ids: list) -> np.ndarray:
    by_id = dict(zip(rec["ids"], rec["scores"], strict=True))
    return np.asarray([by_id[i] for i in ids], dtype=float)


def effects(a: dict, b: dict, common: list[str]) -> list[dict[str, Any]]:
    """Per condition: A's and B's effect (cell - reference) and B - A over the same examples (one run a side)."""
    rows = []
    for key in common:
        ref = _reference_cell(key, a)
        if ref is None or ref not in b or len(a[key]) != 1 or len(b[key]) != 1 or len(a[ref]) != 1 or len(b[ref]) != 1:
            continue
        recs = [a[key][0][1], a[ref][0][1], b[key][0][1], b[ref][0][1]]
        ids = [i for i in recs[0]["ids"] if all(i in set(r["ids"]) for r in recs[1:])]
        if not ids:
            continue
        ca, ra, cb, rb = (_paired(r, ids) for r in recs)
        ea, eb = ca - ra, cb - rb
        d = stats.paired_diff_ci(eb, ea)
        p = stats.paired_test(eb, ea)["p"]
        agree = float(np.mean(ca == cb)) * 100
        est_a, est_b = stats.bootstrap_ci(ea), stats.bootstrap_ci(eb)
        rows.append({"effect": f"{key} - {ref.partition('/')[0]}", "n": len(ids), "a": est_a.as_dict(),
                     "b": est_b.as_dict(), "diff": d.as_dict(), "p": p, "same_outcome_pct": round(agree, 1),
                     "fmt": [f"{key} - {ref.partition('/')[0]}", est_a.fmt(), est_b.fmt(), d.fmt(), stats.fmt_p(p),
                             f"{agree:.1f}"]})
    return rows


def print_compare(result: dict[str, Any]) -> None:
    table = Table(title=f"A = {result['a']}\nB = {result['b']}")
    for c in ("cell", "A (95 % CI)", "B (95 % CI)", "B - A (95 % CI)", "p", "how"):
        table.add_column(c, justify="left" if c in ("cell", "how") else "right")
    for r in result["rows"]:
        table.add_row(*[str(x) for x in r["fmt"]])
    console = Console(width=170)
    console.print(table)
    for s in ("a", "b"):
        if result["only"][s]:
            console.print(f"only in {s.upper()}: {', '.join(result['only'][s])}")
    if not result["rows"]:
        console.print("no cell in common (different tasks or conditions)")
    if result.get("effects"):
        eff = Table(title="effects (cell - reference), paired over the same examples")
        for c in ("effect", "A (95 % CI)", "B (95 % CI)", "B - A (95 % CI)", "p", "same outcome %"):
            eff.add_column(c, justify="left" if c == "effect" else "right")
        for r in result["effects"]:
            eff.add_row(*[str(x) for x in r["fmt"]])
        console.print(eff)
