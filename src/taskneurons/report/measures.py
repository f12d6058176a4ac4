"""Measures and premise checks of the claim registry: each reads one artefact (its result.json, and where
the contrast needs per-example scores, the metrics.json of the runs behind it) and returns a ``Measured``.

Pairing follows report/stats.py: two conditions scored on the same test examples of the same seed are
paired by example id; one seed -> bootstrap interval of the mean difference over examples; several seeds
-> Student's t over the per-seed mean differences; the p-value is the paired sign-flip test pooled over
seeds. A measure that cannot find what it needs raises ``NoData`` naming the artefact and the command.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from statistics import mean

import numpy as np
from scipy import stats as sps

from taskneurons.lit.losses import tail_decline
from taskneurons.report.claims import Claim
from taskneurons.report.paper_tables import paired_effect
from taskneurons.report.runs import Run, load_runs, select
from taskneurons.report.stats import align, t_interval
from taskneurons.report.verdicts import Measured, NoData


class Sources:
    """Where the runs of each artefact live: ``<root>/multiruns/<artefact>_<scale>/`` (the Makefile's layout),
    read as the report reads them (report/runs.py: one loader, one error policy, the newest run per cell)."""

    def __init__(self, root: Path, scale: str):
        self.root, self.scale = Path(root), scale
        self._cache: dict[Path, list[Run]] = {}

    def sweep(self, name: str) -> Path:
        return self.root / "multiruns" / f"{name}_{self.scale}"

    def runs(self, name: str, sub: str = "") -> list[Run]:
        """Every finished run under the sweep (any depth); none -> [] (a damaged one is a ConfigError)."""
        path = self.sweep(name) / sub
        if path not in self._cache:
            found = path.is_dir() and next(path.rglob("metrics.json"), None) is not None
            self._cache[path] = load_runs(path) if found else []
        return self._cache[path]

    def cells(self, name: str, keep: Callable[[dict], bool], cell_of: Callable[[dict], tuple],
              exclude_caps: tuple[str, ...] = (), sub: str = "") -> dict[tuple, dict]:
        """The newest run per (cell, seed) among those ``keep`` accepts, as {(*cell, seed): metrics}; runs of
        one claim must share model and caps (report/runs.py: select), apart from ``exclude_caps``."""
        runs = [r for r in self.runs(name, sub) if keep(r.metrics)]
        if not runs:
            return {}
        return {(*cell_of(r.metrics), r.seed): r.metrics
                for r in select(runs, None, lambda r: cell_of(r.metrics), exclude_caps)}


# --- helpers ------------------------------------------------------------------------------------------


def records(results: dict[str, dict], tasks: list[str]) -> dict[str, list]:
    """The per-example records of several tasks as one record, ids prefixed by the task."""
    ids, scores = [], []
    for t in tasks:
        pe = (results.get(t) or {}).get("per_example")
        if not pe:
            raise NoData(f"task {t} has no per-example scores in its run")
        ids += [f"{t}/{i}" for i in pe["ids"]]
        scores += list(pe["scores"])
    return {"ids": ids, "scores": scores}


def paired(by_seed: dict[int, list[tuple[dict, dict]]], test: str) -> Measured:
    """Mean of a - b over the pairs (a, b) of per-example records, grouped by seed: each seed's pairs joined
    into one record pair, then Table 1's paired effect (report/paper_tables.py: paired_effect)."""
    a_recs, b_recs = [], []
    for _, pairs in sorted(by_seed.items()):
        pairs = [(a, b) for a, b in pairs if align(a, b)[0]]  # a seed with nothing in common adds nothing
        if pairs:  # ids prefixed by the pair, so the examples of two pairs stay apart
            a_recs.append(_joined([a for a, _ in pairs]))
            b_recs.append(_joined([b for _, b in pairs]))
    if not a_recs:
        raise NoData("no test example was scored under both conditions")
    e, tst = paired_effect(a_recs, b_recs)
    if len(a_recs) > 1:
        return Measured(e.mean, e.lo, e.hi, tst["p"], n=e.n, df=e.n - 1,
                        test=f"{test}; t over {e.n} seeds, p pooled over {tst['n']} pairs")
    return Measured(e.mean, e.lo, e.hi, tst["p"], n=tst["n"], test=f"{test}; bootstrap over {tst['n']} paired examples")


def _joined(recs: list[dict]) -> dict[str, list]:
    return {"ids": [f"{k}:{i}" for k, r in enumerate(recs) for i in r["ids"]],
            "scores": [s for r in recs for s in r["scores"]]}


def over_units(values: list[float], test: str) -> Measured:
    """t interval and t-test over independent units (tasks, seeds, profiles, stages)."""
    if not values:
        raise NoData("nothing to average")
    e = t_interval(values)
    if len(values) < 2:
        return Measured(e.mean, n=1, test=test, note="one unit: no interval")
    sd = float(np.std(values, ddof=1))
    p = 1.0 if sd == 0 and e.mean == 0 else (0.0 if sd == 0 else
                                             float(sps.ttest_1samp(values, 0.0).pvalue))
    return Measured(e.mean, e.lo, e.hi, p, n=len(values), df=len(values) - 1, test=test)


def _table(result: dict, name: str) -> dict:
    t = (result.get("tables") or {}).get(name)
    if not t:
        raise NoData(f"{result.get('artefact')} result.json has no table {name!r}")
    return t


# --- measures -----------------------------------------------------------------------------------------

def m_cell(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """A cell of an artefact that already holds its interval and paired test (Table 1, Table 2, Fig. 5)."""
    c = (result.get("cells") or {}).get(args["key"])
    if c is None:
        raise NoData(f"{claim.artefact} result.json has no cell {args['key']}")
    t_seeds = str(c.get("method", "")).startswith("t over")
    return Measured(c["mean"], c.get("lo"), c.get("hi"), c.get("p"), n=int(c.get("n") or 0),
                    df=(int(c["n"]) - 1) if t_seeds else None, test=c.get("test") or c.get("method", ""))


def m_finetune_dominance(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """Fig. 5 (c, d): per trained task and seed, its own change minus the mean change of the other tasks."""
    runs = src.cells("table2", lambda r: r.get("job") == "train" and r.get("neurons") == "task"
                     and len(r.get("train_tasks") or []) == 1 and bool(r.get("before")),
                     lambda r: (r["train_tasks"][0],), exclude_caps=("tasks",))
    units = []
    for (task, _), r in sorted(runs.items()):
        change = {t: r["tasks"][t]["score"] - r["before"][t]["score"] for t in r["tasks"] if t in r["before"]}
        others = [v for t, v in change.items() if t != task]
        if task in change and others:
            units.append(change[task] - mean(others))
    if not units:
        raise NoData("no Table 2 task-set run evaluated another task before and after training (make table2)")
    return over_units(units, f"t over {len(units)} (trained task, seed) units")


def _proportion_runs(src: Sources, name: str, single: bool) -> dict[tuple, dict]:
    return src.cells(name, lambda r: r.get("job") == "train" and r.get("neurons") == "task"
                     and r.get("proportion") is not None and (len(r.get("train_tasks") or []) == 1) == single,
                     lambda r: (tuple(sorted(r["train_tasks"])), float(r["proportion"])),
                     exclude_caps=("neurons.proportion", "tasks"))


def _line_tasks(r: dict, line: str) -> list[str]:
    """ID: the trained tasks; OOD: the other tasks, leaving out CLS-trained -> GEN (the paper: flat)."""
    trained = set(r["train_tasks"])
    if line == "ID":
        return sorted(trained)
    kinds = {r["tasks"][t]["kind"] for t in trained}
    return sorted(t for t, v in r["tasks"].items() if t not in trained
                  and not (kinds == {"classification"} and v["kind"] == "generation"))


def _curve_contrast(src: Sources, name: str, line: str, single: bool,
                    pick: Callable[[list[float], dict[float, dict[int, dict]]], tuple[float, float] | None]) -> Measured:
    cells = _proportion_runs(src, name, single)
    if not cells:
        raise NoData(f"no fine-tuning runs in {src.sweep(name)} (make {name})")
    by_group: dict[tuple, dict[float, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for (group, p, seed), r in cells.items():
        by_group[group][p][seed] = r
    by_seed: dict[int, list[tuple[dict, dict]]] = defaultdict(list)
    used = []
    for group, by_p in by_group.items():
        chosen = pick(sorted(by_p), by_p)
        if chosen is None:
            continue
        hi_p, lo_p = chosen
        for seed in set(by_p[hi_p]) & set(by_p[lo_p]):
            a, b = by_p[hi_p][seed], by_p[lo_p][seed]
            tasks = _line_tasks(a, line)
            if tasks:
                by_seed[seed].append((records(a["tasks"], tasks), records(b["tasks"], tasks)))
                used.append(f"{'+'.join(group)} {hi_p:g} vs {lo_p:g}")
    if not by_seed:
        raise NoData(f"no training group of {name} has both proportions the contrast needs")
    m = paired(by_seed, f"paired over {line} test examples")
    return Measured(**{**m.__dict__, "note": "; ".join(sorted(set(used)))})


def m_curve_rise(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """The largest proportion minus the smallest, on the ID or OOD tasks (Fig. 2 groups, Fig. 6 single tasks)."""
    single = claim.artefact == "fig6"
    return _curve_contrast(src, claim.artefact, args["line"], single,
                           lambda ps, by_p: (ps[-1], ps[0]) if len(ps) >= 2 else None)


def m_curve_peak_inside(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """The ID score at the paper's peak (70 % CLS-trained, 50 % GEN-trained) minus at the largest proportion."""
    peaks = args.get("peak") or {"classification": 0.7, "generation": 0.5}

    def pick(ps: list[float], by_p: dict[float, dict[int, dict]]) -> tuple[float, float] | None:
        run = next(iter(by_p[ps[-1]].values()))  # any run of the group: its training tasks' kind
        want = peaks.get(run["tasks"][run["train_tasks"][0]]["kind"])
        return (want, ps[-1]) if want in ps and want != ps[-1] else None

    return _curve_contrast(src, claim.artefact, args["line"], False, pick)


def _ours_columns(table: dict) -> list[tuple[int, float]]:
    cols = []
    for i, c in enumerate(table["columns"]):
        if str(c).startswith("ours ") and str(c).endswith("%"):
            cols.append((i, float(str(c)[5:-1]) / 100))
    return cols


def m_overlap_rise(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    t = _table(result, "table8")
    cols = _ours_columns(t)
    if len(cols) < 2:
        raise NoData("Table 8 has fewer than two proportions")
    rises, steps_down = [], 0
    for row in t["rows"]:
        vals = [row[i] for i, _ in cols]
        rises.append(vals[-1] - vals[0])
        steps_down += sum(b < a for a, b in zip(vals, vals[1:], strict=False))
    return Measured(mean(rises), n=len(rises), deterministic=True, test="exact Jaccard of the stored sets",
                    note="rises at every step" if not steps_down else f"{steps_down} step(s) fall")


def m_overlap_within_minus_across(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    t = _table(result, "table8")
    cols = _ours_columns(t)
    first = cols[0][0] if cols else None
    rows = {r[0]: r for r in t["rows"]}
    need = ("CLS-CLS", "GEN-GEN", "CLS-GEN", "GEN-CLS")
    if first is None or any(k not in rows for k in need):
        raise NoData(f"Table 8 needs the four pairs {', '.join(need)}")
    within = (rows["CLS-CLS"][first] + rows["GEN-GEN"][first]) / 2
    across = (rows["CLS-GEN"][first] + rows["GEN-CLS"][first]) / 2
    return Measured(within - across, n=4, deterministic=True,
                    test=f"exact Jaccard at the smallest proportion ({cols[0][1]:g})")


def m_controlled_rise(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """Tables 9-11: along overlap (fixed size) or along size (fixed overlap), the largest minus the smallest."""
    cells = src.cells("table9", lambda r: r.get("job") == "train" and r.get("neurons") == "controlled"
                      and bool((r.get("neuron_sets") or {}).get("controlled")), _controlled_cell,
                      exclude_caps=("neurons.proportion", "tasks"))
    if not cells:
        raise NoData(f"no controlled-overlap runs in {src.sweep('table9')} (make table9)")
    fixed_pos, moving_pos = (1, 2) if args["along"] == "overlap" else (2, 1)
    groups: dict[tuple, dict[float, dict]] = defaultdict(dict)
    for k, r in cells.items():
        groups[(k[0], k[fixed_pos], k[3])][k[moving_pos]] = r
    by_seed: dict[int, list[tuple[dict, dict]]] = defaultdict(list)
    for (_, _, seed), by_v in groups.items():
        if len(by_v) < 2:
            continue
        lo, hi = by_v[min(by_v)], by_v[max(by_v)]
        tests = list(hi["neuron_sets"]["controlled"]["test_tasks"])
        by_seed[seed].append((records(hi["tasks"], tests), records(lo["tasks"], tests)))
    if not by_seed:
        raise NoData(f"table9 has no {'size' if args['along'] == 'overlap' else 'overlap'} with two "
                     f"{args['along']} values")
    return paired(by_seed, "paired over the OOD test examples")


def _controlled_cell(r: dict) -> tuple:
    c = r["neuron_sets"]["controlled"]
    pair = (tuple(sorted(r.get("train_tasks") or [])), tuple(sorted(c.get("test_tasks") or [])))
    return pair, float(c["size"]), float(c["overlap_asked"])


def m_correlation(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """Table 4: Pearson r per test task, pooled by Fisher z (weights n - 3)."""
    t = _table(result, "table4")
    idx = {c: i for i, c in enumerate(t["columns"])}
    zs, ws = [], []
    for row in t["rows"]:
        n, r = row[idx["n"]], row[idx["Pearson r"]]
        if r is None or n is None or n <= 3 or not math.isfinite(r):
            continue
        zs.append(math.atanh(max(min(r, 0.999999), -0.999999)))
        ws.append(n - 3)
    if not zs:
        raise NoData("Table 4 has no test task with more than three models and a defined Pearson r")
    z = float(np.average(zs, weights=ws))
    se = 1 / math.sqrt(sum(ws))
    p = float(2 * sps.norm.sf(abs(z) / se))
    return Measured(math.tanh(z), math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se), p, n=int(sum(ws) + 3),
                    kind="correlation", test=f"Fisher z pooled over {len(zs)} test tasks (they share the models)")


def m_layer_profile(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """Fig. 3 (a): per (model, CLS test task) profile, the middle third's mean minus the outer thirds' mean."""
    import json

    path = src.root / "results" / "fig3" / src.scale / "similarity.json"
    if not path.is_file():
        raise NoData(f"{path} is missing (make fig3)")
    sim = json.loads(path.read_text())
    units = []
    for per_test in (sim.get("per_model") or {}).values():
        for test, prof in per_test.items():
            if test not in sim["groups"]["ood_cls"] or not prof or len(prof) < 3:
                continue
            k = len(prof) // 3
            bottom, middle, top = prof[:k], prof[k:len(prof) - k], prof[len(prof) - k:]
            units.append(float(np.mean(middle) - (np.mean(bottom) + np.mean(top)) / 2))
    if not units:
        raise NoData("similarity.json has no CLS test-task profile with 3 or more layers")
    return over_units(units, f"t over {len(units)} (model, CLS test task) profiles")


def _continual_runs(src: Sources, name: str) -> dict[tuple, dict]:
    return src.cells(name, lambda r: r.get("job") == "continual" and bool(r.get("complete")),
                     lambda r: (r["method"], r.get("order_name")), exclude_caps=("tasks",))  # the order names its tasks


def m_cl_contrast(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """Table 5: method a minus method b on CL or BWT, paired over (order, seed); t over those pairs."""
    runs = _continual_runs(src, claim.artefact)
    diffs = []
    for (method, order, seed), r in runs.items():
        if method != args["a"] or (args["b"], order, seed) not in runs:
            continue
        diffs.append(r["summary"][args["metric"]] - runs[(args["b"], order, seed)]["summary"][args["metric"]])
    if not diffs:
        raise NoData(f"no (order, seed) with complete {args['a']} and {args['b']} runs in {src.sweep(claim.artefact)}")
    m = over_units(diffs, f"t over {len(diffs)} (order, seed) pairs")
    return m if len(diffs) > 1 else Measured(**{**m.__dict__, "note": "one seed: run SEEDS=3 for an interval"})


def m_fg_contrast(args: dict, claim: Claim, result: dict, src: Sources) -> Measured:
    """Fig. 4: FG of method a minus method b at every stage after the first (means over seeds); t over stages."""
    from taskneurons.report.continual import LABEL

    t = _table(result, "fg")
    rows = {r[0]: r[1:] for r in t["rows"]}
    a, b = rows.get(LABEL.get(args["a"], args["a"])), rows.get(LABEL.get(args["b"], args["b"]))
    if a is None or b is None:
        raise NoData(f"Fig. 4 has no FG row for {args['a']} or {args['b']}")
    diffs = [x - y for x, y in zip(a, b, strict=False) if x is not None and y is not None]
    return over_units(diffs, f"t over {len(diffs)} stages (neighbouring stages are not independent)")


MEASURES: dict[str, Callable[[dict, Claim, dict, Sources], Measured]] = {
    "cell": m_cell, "finetune_dominance": m_finetune_dominance, "curve_rise": m_curve_rise,
    "curve_peak_inside": m_curve_peak_inside, "overlap_rise": m_overlap_rise,
    "overlap_within_minus_across": m_overlap_within_minus_across, "controlled_rise": m_controlled_rise,
    "correlation": m_correlation, "layer_profile": m_layer_profile, "cl_contrast": m_cl_contrast,
    "fg_contrast": m_fg_contrast,
}


# --- premise checks: (ok, detail) ---------------------------------------------------------------------

def _learnt(gains: list[tuple[float, float, str]], args: dict, what: str) -> tuple[bool, str]:
    """``gains``: (trained score, gain over zero-shot, where). Learnt: every gain >= ``margin``, except that a
    score at or above ``ceiling`` (when the premise states one) counts as learnt whatever its gain — a task
    that starts at 90 cannot gain 10."""
    ceiling = args.get("ceiling")
    short = [(g, where) for score, g, where in gains if ceiling is None or score < ceiling]
    if not short:
        return True, f"every task at or above the ceiling {ceiling}"
    worst = min(short)
    above = f"; {len(gains) - len(short)} at or above the ceiling {ceiling}" if len(short) < len(gains) else ""
    return worst[0] >= args["margin"], f"smallest {what} {worst[0]:+.1f} ({worst[1]}){above}"


def p_table1_original_over_zeroshot(args: dict, claim: Claim, result: dict | None, src: Sources) -> tuple[bool, str]:
    runs = list(src.cells("table1", lambda r: r.get("job") == "train" and bool(r.get("before")), lambda r: ("finetune",),
                          sub="finetune").values())
    if not runs:
        raise NoData("the Table 1 fine-tuning runs have no zero-shot scores (eval_before)")
    return _learnt([(r["tasks"][t]["score"], r["tasks"][t]["score"] - r["before"][t]["score"], f"{t}, seed {r.get('seed')}")
                    for r in runs for t in r["tasks"] if t in r["before"]], args, "gain")


def p_table2_trained_over_zeroshot(args: dict, claim: Claim, result: dict | None, src: Sources) -> tuple[bool, str]:
    cells = (result or {}).get("cells") or {}
    gains = {k.split("/")[2]: c["mean"] - cells.get(k.replace("train_task", "zero_shot"), {}).get("mean", math.nan)
             for k, c in cells.items() if k.startswith("table2/train_task/") and not k.endswith("/avg")}
    gains = {t: g for t, g in gains.items() if math.isfinite(g)}
    if not gains:
        raise NoData("Table 2 has no Train-Task and zero-shot cells")
    t, g = min(gains.items(), key=lambda kv: kv[1])
    return g > args["margin"], f"smallest gain {g:+.1f} ({t})"


def p_no_warnings(args: dict, claim: Claim, result: dict | None, src: Sources) -> tuple[bool, str]:
    runs = [r.metrics for r in src.runs(claim.artefact)]
    if not runs:
        raise NoData(f"no runs under {src.sweep(claim.artefact)}")
    warned = [w["code"] for r in runs for w in (r.get("warnings") or [])]
    return not warned, (f"{len(warned)} warnings: {', '.join(sorted(set(warned)))}" if warned else f"{len(runs)} runs clean")


def p_cl_pertask_over_zeroshot(args: dict, claim: Claim, result: dict | None, src: Sources) -> tuple[bool, str]:
    runs = _continual_runs(src, claim.artefact)
    per = [r for (m, _, _), r in runs.items() if m == "pertask"]
    zero = [r for r in runs.values() if r.get("zero_shot")]
    if not per or not zero:
        raise NoData("needs a complete Per-Task FT run and the zero-shot row of the order (continual zero_shot)")
    gaps = []
    for r in per:  # per_task_scores[i]: task order[i] on its own model; zero_shot: the same run's base model
        z = r.get("zero_shot") or zero[0]["zero_shot"]
        gaps += [(score, score - z[t], t) for t, score in zip(r["order"], r["summary"]["per_task_scores"], strict=False)
                 if t in z]
    if not gaps:
        raise NoData("the Per-Task FT runs and the zero-shot row share no task")
    return _learnt(gaps, args, "gain over zero-shot")


def p_cl_seqft_forgets_first_task(args: dict, claim: Claim, result: dict | None, src: Sources) -> tuple[bool, str]:
    runs = [r for (m, _, _), r in _continual_runs(src, claim.artefact).items() if m == "seqft"]
    if not runs:
        raise NoData("no complete SeqFT run")
    losses = []
    for r in runs:
        first = r["order"][0]
        losses.append(r["matrix"][0][first] - r["matrix"][-1][first] if isinstance(r["matrix"][0], dict)
                      else r["matrix"][0][0] - r["matrix"][-1][0])
    loss = mean(losses)
    return loss >= args["margin"], f"SeqFT loses {loss:.1f} points on the first task (mean of {len(losses)} runs)"


def p_proportions_at_least(args: dict, claim: Claim, result: dict | None, src: Sources) -> tuple[bool, str]:
    if claim.artefact == "table8":
        props = {p for _, p in _ours_columns(_table(result or {}, "table8"))}
    else:
        props = {k[1] for k in _proportion_runs(src, claim.artefact, claim.artefact == "fig6")}
    if not props:
        raise NoData(f"no runs of {claim.artefact} (make {claim.artefact})")
    return len(props) >= args["n"], f"{len(props)} proportions ({', '.join(f'{p:g}' for p in sorted(props))})"


def p_table4_models_at_least(args: dict, claim: Claim, result: dict | None, src: Sources) -> tuple[bool, str]:
    t = _table(result or {}, "table4")
    i = t["columns"].index("n")
    n = min((row[i] for row in t["rows"] if row[i] is not None), default=0)
    return n >= args["n"], f"at least {n} models per test task"



def _fits(metrics: dict) -> list[tuple[str, dict]]:
    """Every fit of a run: a training job's one, or each trained stage of a continual run."""
    where = f"seed {metrics.get('seed')}"
    if metrics.get("job") == "train" and metrics.get("training"):
        return [(f"{'+'.join(metrics.get('train_tasks') or [])} {metrics.get('neurons', '')}, {where}", metrics["training"])]
    return [(f"{metrics.get('method')} stage {i + 1}, {where}", info)
            for i, info in enumerate(metrics.get("stage_info") or []) if info.get("batches")]


def p_training_converged(args: dict, claim: Claim, result: dict | None, src: Sources) -> tuple[bool, str]:
    """Every fit behind the artefact had flattened out. A fit fails when, over its last ``fraction`` of batches,
    the least-squares line of its per-batch loss falls by more than ``max_decline`` of its level
    (lit/losses.tail_decline) *and* that fall is significant (one-sided p < ``alpha`` for the slope): per-batch
    losses at their floor scatter widely, and a line through a few of them tilts by chance. A run from before the
    per-batch losses were kept, or too short to tell, leaves the premise unchecked (NoData), not passed."""
    fits = [f for r in src.runs(claim.artefact) for f in _fits(r.metrics)]
    if not fits:
        raise NoData(f"no training runs under {src.sweep(claim.artefact)}")
    fraction, alpha = float(args.get("fraction", 0.2)), float(args.get("alpha", 0.05))
    falling, worst = [], None
    for where, info in fits:
        if "losses" not in info:
            raise NoData(f"{where}: no per-batch losses (a run from before they were kept): run it again")
        d = tail_decline(info["losses"], fraction)
        if d is None:
            raise NoData(f"{where}: {len(info['losses'])} batches, too few to see the last {fraction:.0%} flatten")
        tail = np.asarray(info["losses"][len(info["losses"]) - int(len(info["losses"]) * fraction + 1e-9):], dtype=float)
        tail = tail[np.isfinite(tail)]
        fit = sps.linregress(np.arange(len(tail), dtype=float), tail)
        p = fit.pvalue / 2 if fit.slope < 0 else 1 - fit.pvalue / 2  # one-sided: still falling
        if worst is None or d > worst[0]:
            worst = (d, p, where)
        if d > args["max_decline"] and p < alpha:
            falling.append((d, p, where))
    d, p, where = max(falling) if falling else worst
    what = "still falling" if falling else "flat"
    return not falling, (f"{what}: largest fall over the last {fraction:.0%} of batches {100 * d:.1f} % of the loss, "
                         f"one-sided p {p:.2f} ({where}; {len(fits)} fits)")

PREMISES: dict[str, Callable[[dict, Claim, dict | None, Sources], tuple[bool, str]]] = {
    "table1_original_over_zeroshot": p_table1_original_over_zeroshot,
    "table2_trained_over_zeroshot": p_table2_trained_over_zeroshot,
    "no_warnings": p_no_warnings,
    "cl_pertask_over_zeroshot": p_cl_pertask_over_zeroshot,
    "cl_seqft_forgets_first_task": p_cl_seqft_forgets_first_task,
    "proportions_at_least": p_proportions_at_least,
    "table4_models_at_least": p_table4_models_at_least,
    "training_converged": p_training_converged,
}
