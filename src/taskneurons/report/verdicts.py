"""One verdict per claim of the registry: holds, contradicted or inconclusive, with the power it had.

For each claim (report/claims.py) a *measure* (report/measures.py) reads the claim's artefact and returns
the contrast with its 95 % interval, p-value and size; *premise checks* say whether the test can mean
anything. The rules, applied in this order:

1. no data, or a premise failed or could not be checked -> **inconclusive** (the premise is named);
2. p < 0.05 in the paper's direction -> **holds**; p < 0.05 in the opposite direction -> **contradicted**;
3. the interval lies wholly on the near side of the smallest effect of interest (SESOI) in the paper's
   direction — an equivalence test at the 95 % level, so conservative — -> **contradicted** (the effect,
   if any, is smaller than the registry calls interesting);
4. otherwise -> **inconclusive**.

A deterministic measure (no sampling: e.g. the overlap of two fixed sets) holds when its sign is the
paper's and is contradicted otherwise. Every stochastic verdict states its minimum detectable effect (MDE,
80 % power, α = 0.05, from the standard error behind its interval: report/power.py) and the size the test
would need for the target MDE (5 points, or 0.15 for a correlation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scipy import stats as sps

from taskneurons.errors import ConfigError
from taskneurons.report import power
from taskneurons.report.claims import Claim, Registry

ALPHA = 0.05
TARGET_MDE = {"points": 5.0, "r": 0.15, "cosine": 0.05}
HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"


@dataclass(frozen=True)
class Measured:
    """A measured contrast, in the claim's units (the sign as measured, not yet oriented)."""

    effect: float
    lo: float | None = None
    hi: float | None = None
    p: float | None = None
    n: int = 0
    df: int | None = None        # degrees of freedom of a t interval (seeds - 1); None: normal / bootstrap
    test: str = ""
    deterministic: bool = False
    kind: str = "mean"           # "mean" (a difference of scores) or "correlation"
    note: str = ""


class NoData(Exception):
    """The artefact or the cells a measure needs are not there (the message says which and how to make them)."""


@dataclass(frozen=True)
class PremiseResult:
    id: str
    ok: bool | None  # None: could not be checked (counts as not met)
    detail: str


@dataclass(frozen=True)
class Verdict:
    claim: str
    paper: str
    statement: str
    verdict: str
    reason: str
    paper_effect: float | None
    effect: float | None
    lo: float | None
    hi: float | None
    p: float | None
    mde: float | None
    n: int | None
    n_for_target: int | None
    target_mde: float
    units: str
    test: str
    premises: list[dict]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def p_from_interval(m: Measured) -> float | None:
    """A two-sided p from the interval when the measure has none (normal or t approximation)."""
    if m.lo is None or m.hi is None:
        return None
    se = power.se_from_interval(m.lo, m.hi, m.df)
    if se <= 0:
        return 0.0 if m.effect != 0 else 1.0
    stat = abs(m.effect) / se
    return float(2 * (sps.norm.sf(stat) if m.df is None else sps.t.sf(stat, m.df)))


def mde_of(m: Measured) -> float | None:
    if m.deterministic:
        return 0.0
    if m.kind == "correlation":
        return power.mde_correlation(m.n) if m.n else None
    if m.lo is None or m.hi is None or m.hi <= m.lo:
        return None  # a zero-width interval (no pair differed) says nothing about the power
    se = power.se_from_interval(m.lo, m.hi, m.df)
    if m.df is not None:  # t over units (seeds, tasks): the exact paired-t power with the units' sd
        return power.mde_paired(se * math.sqrt(m.df + 1), m.df + 1)
    return power.mde_from_se(se)


def n_for_target(m: Measured, mde: float | None, units: str) -> int | None:
    target = TARGET_MDE[units]
    if m.deterministic or mde is None or not m.n:
        return None
    if m.kind == "correlation":
        return power.n_correlation(target)
    if not math.isfinite(mde) or m.lo is None or m.hi is None or m.hi <= m.lo:
        return None
    if m.df is not None:  # units of a t interval: the paired-t size for the target with the units' sd
        return max(m.n, power.n_paired(target, power.se_from_interval(m.lo, m.hi, m.df) * math.sqrt(m.df + 1)))
    return power.scale_n(m.n, mde, target)


def judge(claim: Claim, m: Measured | None, premises: list[PremiseResult], why_none: str = "") -> Verdict:
    """The verdict of one claim from its measurement and premises (the rules in the module docstring)."""
    mde = mde_of(m) if m else None
    p = None
    if m is not None:
        p = m.p if m.p is not None else (None if m.deterministic else p_from_interval(m))
    failed = [r for r in premises if r.ok is not True]
    unmet = "premise " + "; ".join(f"{r.id} {'failed' if r.ok is False else 'not checked'} ({r.detail})"
                                   for r in failed)
    if m is None:
        verdict, reason = INCONCLUSIVE, f"no data: {why_none}" + (f"; {unmet}" if failed else "")
    elif failed:
        verdict, reason = INCONCLUSIVE, unmet
    else:
        oriented = claim.direction * m.effect
        if m.deterministic:
            verdict = HOLDS if oriented > 0 else CONTRADICTED
            reason = f"exact value, {'the' if oriented > 0 else 'not the'} paper's sign"
        elif p is not None and p < ALPHA and oriented > 0:
            verdict, reason = HOLDS, f"p = {p:.3g} in the paper's direction"
        elif p is not None and p < ALPHA and oriented < 0:
            verdict, reason = CONTRADICTED, f"p = {p:.3g} in the opposite direction"
        elif m.lo is not None and m.hi is not None and m.hi <= m.lo:
            verdict, reason = INCONCLUSIVE, f"no pair differed in {m.n} (a zero-width interval decides nothing)"
        elif m.lo is not None and m.hi is not None and max(claim.direction * m.lo, claim.direction * m.hi) < claim.sesoi:
            verdict = CONTRADICTED
            reason = f"equivalence: the 95 % interval excludes the smallest effect of interest ({claim.sesoi:g})"
        else:
            verdict = INCONCLUSIVE
            reason = ("not significant and the interval still admits the smallest effect of interest "
                      f"({claim.sesoi:g})" + (f"; MDE {mde:.2f} > {TARGET_MDE[claim.units]:g}"
                                              if mde is not None and mde > TARGET_MDE[claim.units] else ""))
        if m.note:
            reason += f"; {m.note}"
    return Verdict(claim=claim.id, paper=claim.paper, statement=claim.claim, verdict=verdict, reason=reason,
                   paper_effect=claim.paper_effect, effect=None if m is None else m.effect,
                   lo=None if m is None else m.lo, hi=None if m is None else m.hi, p=p, mde=mde,
                   n=None if m is None else m.n, n_for_target=n_for_target(m, mde, claim.units) if m else None,
                   target_mde=TARGET_MDE[claim.units], units=claim.units, test=claim.test if m is None else (m.test or claim.test),
                   premises=[asdict(r) for r in premises])


def evaluate(registry: Registry, results: dict[str, dict | None], sources: Any,
             measures: dict[str, Callable], premises: dict[str, Callable]) -> list[Verdict]:
    """Every claim's verdict. ``results[artefact]`` is its result.json (None when absent); ``sources`` gives the
    measures and premise checks (report/measures.py: MEASURES, PREMISES) the runs behind an artefact."""
    out = []
    for claim in registry.claims:
        result = results.get(claim.artefact)
        checks = []
        for pid in claim.premises:
            prem = registry.premises[pid]
            try:
                ok, detail = premises[prem.check["kind"]](prem.check, claim, result, sources)
            except (NoData, ConfigError) as e:
                ok, detail = None, str(e)
            except (KeyError, IndexError, TypeError, ValueError) as e:  # a run of another shape: said, not fatal
                ok, detail = None, f"cannot read the runs ({type(e).__name__}: {e})"
            checks.append(PremiseResult(pid, ok, detail))
        try:
            if result is None:
                raise NoData(f"no result for `{claim.artefact}` (make {claim.artefact} SCALE=...)")
            m = measures[claim.measure["kind"]](claim.measure, claim, result, sources)
            out.append(judge(claim, m, checks))
        except (NoData, ConfigError) as e:  # ConfigError: damaged or mixed runs (report/runs.py names them)
            out.append(judge(claim, None, checks, str(e)))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            out.append(judge(claim, None, checks, f"cannot read {claim.artefact} ({type(e).__name__}: {e})"))
    return out


def _num(v: float | None, units: str, digits: int | None = None) -> str:
    if v is None:
        return "–"
    if not math.isfinite(v):
        return "∞"
    d = digits if digits is not None else (1 if units == "points" else 2 if units == "r" else 3)
    return f"{v:+.{d}f}" if digits is None else f"{v:.{d}f}"


def verdict_table(verdicts: list[Verdict]) -> dict[str, Any]:
    """The verdict table as {columns, rows} (the artefact contract's table shape)."""
    cols = ["claim", "paper", "paper's effect", "ours [95 % CI]", "p", "MDE (80 %)", "n", "n for target MDE",
            "premises", "verdict"]
    rows = []
    for v in verdicts:
        ours = "–" if v.effect is None else (
            _num(v.effect, v.units) + (f" [{_num(v.lo, v.units)}, {_num(v.hi, v.units)}]" if v.lo is not None else ""))
        prem = " ".join(f"{p['id']} {'✓' if p['ok'] else ('✗' if p['ok'] is False else '?')}" for p in v.premises) or "none"
        mde = "–" if v.mde is None else ("exact" if v.mde == 0 else _num(abs(v.mde), v.units, 2 if v.units != "points" else 1))
        rows.append([v.claim, v.paper, _num(v.paper_effect, v.units), ours,
                     "–" if v.p is None else ("<0.001" if v.p < 0.001 else f"{v.p:.3f}"), mde,
                     "–" if v.n is None else v.n, "–" if v.n_for_target is None else v.n_for_target, prem,
                     f"**{v.verdict}**"])
    return {"columns": cols, "rows": rows}


def summary_line(verdicts: list[Verdict]) -> str:
    counts = {k: sum(v.verdict == k for v in verdicts) for k in (HOLDS, CONTRADICTED, INCONCLUSIVE)}
    return (f"{len(verdicts)} claims: {counts[HOLDS]} hold, {counts[CONTRADICTED]} contradicted, "
            f"{counts[INCONCLUSIVE]} inconclusive.")


def reasons_md(verdicts: list[Verdict]) -> list[str]:
    return [f"- `{v.claim}` ({v.verdict}): {v.statement} — {v.reason}. Test: {v.test}." for v in verdicts]


def load_results(names: list[str], scale: str, root: Path) -> dict[str, dict | None]:
    import json

    from taskneurons.report.artefacts import results_dir

    out: dict[str, dict | None] = {}
    for name in names:
        path = results_dir(name, scale, root) / "result.json"
        try:
            out[name] = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, json.JSONDecodeError):
            out[name] = None  # a damaged result is no result: its claims say "no data"
    return out
