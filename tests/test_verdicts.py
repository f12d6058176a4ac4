"""The claim registry and its verdicts: the rules on hand-set measurements, the measures on synthetic runs
written as the entry points write them, and the shipped registry against the names that exist."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from taskneurons.errors import ConfigError
from taskneurons.report import power
from taskneurons.report.claims import Claim, load_registry
from taskneurons.report.collect import load_artefacts
from taskneurons.report.measures import MEASURES, PREMISES, Sources
from taskneurons.report.verdicts import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    Measured,
    NoData,
    PremiseResult,
    evaluate,
    judge,
    load_results,
    verdict_table,
)
from taskneurons.runtime.atomic import write_json_with_checksum


def claim(direction: int = -1, sesoi: float = 4.0, units: str = "points", **kw) -> Claim:
    return Claim(id="c", paper="Table 1", artefact="table1", claim="task < random", measure={"kind": "cell"},
                 direction=direction, sesoi=sesoi, units=units, test="paired", **kw)


def test_rules_on_hand_set_measurements():
    c = claim()
    assert judge(c, Measured(-8, -12, -4, 0.001, n=100), []).verdict == HOLDS
    assert judge(c, Measured(6, 2, 10, 0.01, n=100), []).verdict == CONTRADICTED
    # not significant, but the interval [-3, 1] lies wholly short of the smallest effect of interest (4)
    eq = judge(c, Measured(-1, -3, 1, 0.4, n=100), [])
    assert eq.verdict == CONTRADICTED and "equivalence" in eq.reason
    wide = judge(c, Measured(-3, -10, 4, 0.3, n=20), [])
    assert wide.verdict == INCONCLUSIVE and "MDE" in wide.reason
    # a failed premise overrides a significant effect, and is named
    failed = judge(c, Measured(-8, -12, -4, 0.001, n=100), [PremiseResult("learnt", False, "gain +2.0")])
    assert failed.verdict == INCONCLUSIVE and "learnt failed (gain +2.0)" in failed.reason
    unchecked = judge(c, Measured(-8, -12, -4, 0.001, n=100), [PremiseResult("learnt", None, "no runs")])
    assert unchecked.verdict == INCONCLUSIVE and "not checked" in unchecked.reason
    assert judge(c, None, [], "no result").verdict == INCONCLUSIVE
    # no pair differed: a zero-width interval is no equivalence and gives no MDE
    flat = judge(c, Measured(0.0, 0.0, 0.0, 1.0, n=16), [])
    assert flat.verdict == INCONCLUSIVE and flat.mde is None and "no pair differed in 16" in flat.reason


def test_deterministic_measures_and_p_from_the_interval():
    up = claim(direction=1)
    assert judge(up, Measured(30.0, n=4, deterministic=True), []).verdict == HOLDS
    assert judge(up, Measured(-1.0, n=4, deterministic=True), []).verdict == CONTRADICTED
    assert judge(up, Measured(30.0, n=4, deterministic=True), []).mde == 0.0
    # no p given: a normal approximation from the interval (effect 1.96 se -> p 0.05)
    v = judge(up, Measured(1.96, 0.0, 3.92, None, n=50), [])
    assert math.isclose(v.p, 0.05, rel_tol=1e-3)


def test_mde_follows_the_test_and_the_size_for_the_target():
    c = claim()
    one_run = judge(c, Measured(-2, -4.0, 0.0, 0.05, n=100), [])  # se 1.02 (normal): MDE 2.86
    assert math.isclose(one_run.mde, 2.80 * 2 / 1.96, rel_tol=1e-2)
    assert one_run.n_for_target == 100  # already below 5 points
    seeds = judge(c, Measured(-2, -4.0, 0.0, 0.3, n=3, df=2), [])  # the same interval from t over 3 seeds
    # sd of the seed means = se * sqrt(3); the exact paired-t MDE with 3 units
    assert math.isclose(seeds.mde, power.mde_paired(2 / 4.3027 * math.sqrt(3), 3), rel_tol=1e-3)
    assert seeds.n_for_target == power.n_paired(5.0, 2 / 4.3027 * math.sqrt(3))
    r = judge(claim(direction=1, sesoi=0.3, units="r"), Measured(0.5, 0.1, 0.8, 0.02, n=12, kind="correlation"), [])
    assert 0.7 < r.mde < 0.75 and r.n_for_target == 347  # Fisher z: r = 0.15 needs 347 pairs


def test_shipped_registry_names_every_claim_of_the_issue():
    entries = load_artefacts()
    reg = load_registry(artefacts=[e["name"] for e in entries], measures=set(MEASURES), checks=set(PREMISES))
    arts = {c.artefact for c in reg.claims}
    assert {"table1", "table2", "fig5", "fig2", "fig6", "table8", "table9", "table4", "fig3", "table5", "fig4"} <= arts
    ids = {c.id for c in reg.claims}
    assert {"E1.deactivate.task_below_random", "E1.train.task_above_random", "E4.table5.wncft_above_ncft",
            "E4.fig4.ncft_fg_above_seqft"} <= ids
    assert {"cl_pertask_learnt", "cl_forgetting_exists", "table1_original_learnt"} <= set(reg.premises)


def test_bad_registry_is_one_error_naming_the_entry(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text("premises: []\nclaims:\n  - {id: x, paper: T, artefact: table1, claim: c, measure: {kind: nope},"
                   " direction: 2, sesoi: 1, units: points, test: t, premises: [missing]}\n")
    with pytest.raises(ConfigError) as e:
        load_registry(bad, artefacts=["table1"], measures=set(MEASURES), checks=set(PREMISES))
    msg = str(e.value)
    assert "claim x: direction must be 1 or -1" in msg and "measure.kind 'nope'" in msg and "unknown premise missing" in msg


# --- measures on synthetic runs ------------------------------------------------------------------------

def run(d: Path, **m) -> None:
    d.mkdir(parents=True)
    write_json_with_checksum(d / "metrics.json", m)


def task(scores: list[float], kind: str = "classification") -> dict:
    return {"score": sum(scores) / len(scores), "kind": kind,
            "per_example": {"ids": [f"e{i}" for i in range(len(scores))], "scores": scores}}


FLAT = [2.0 - 0.03 * i for i in range(40)] + [0.8 + 0.01 * (i % 2) for i in range(10)]  # fell, then flat


def test_tail_decline_known_answers():
    from taskneurons.lit.losses import tail_decline

    falling = [2.0 - i / 99 for i in range(100)]  # a straight line from 2 to 1: the last 20 fall by 19/99
    assert tail_decline(falling) == pytest.approx((19 / 99) / (sum(falling[80:]) / 20), abs=1e-4)
    assert tail_decline([1.0] * 50) == 0.0
    assert tail_decline(list(reversed(falling))) < 0  # rising at the end
    assert tail_decline(FLAT) == pytest.approx(0.0, abs=0.02)
    assert tail_decline([1.0] * 24) is None  # a window of 5 needs 25 batches at 20 %
    assert tail_decline([1.0] * 45 + [float("nan")] * 5) == 0.0  # non-finite batches left out, not propagated


def test_training_converged_premise_fails_on_a_loss_still_falling_and_is_unchecked_without_curves(tmp_path):
    reg = load_registry(measures=set(MEASURES), checks=set(PREMISES))
    prem = next(p for p in reg.premises.values() if p.check["kind"] == "training_converged")
    c = Claim(id="c", paper="Table 2", artefact="table2", claim="x", measure={"kind": "cell"}, direction=1, sesoi=1.0,
              units="points", test="paired")
    sweep = tmp_path / "multiruns" / "table2_tiny"
    run(sweep / "a", job="train", train_tasks=["a"], neurons="task", seed=1, training={"batches": 50, "losses": FLAT})
    ok, detail = PREMISES["training_converged"](prem.check, c, None, Sources(tmp_path, "tiny"))
    assert ok and "1 fits" in detail
    noisy_floor = FLAT[:40] + [0.1, 0.2, 0.3, 0.35, 0.11, 0.22, 0.02, 0.1, 0.15, 0.05]  # tilts down by chance
    run(sweep / "n", job="train", train_tasks=["n"], neurons="task", seed=1, training={"batches": 50, "losses": noisy_floor})
    ok, detail = PREMISES["training_converged"](prem.check, c, None, Sources(tmp_path, "tiny"))
    assert ok and detail.startswith("flat") and "2 fits" in detail  # a large but insignificant fall passes
    run(sweep / "b", job="train", train_tasks=["b"], neurons="random", seed=1,
        training={"batches": 50, "losses": [2.0 - i / 49 for i in range(50)]})  # still falling at the end
    ok, detail = PREMISES["training_converged"](prem.check, c, None, Sources(tmp_path, "tiny"))
    assert not ok and detail.startswith("still falling") and "(b random, seed 1" in detail
    run(sweep / "c", job="train", train_tasks=["c"], neurons="task", seed=1, training={"batches": 40, "loss_last": 1.0})
    with pytest.raises(NoData, match="no per-batch losses"):
        PREMISES["training_converged"](prem.check, c, None, Sources(tmp_path, "tiny"))


def test_fig6_rise_holds_on_runs_that_rise_and_its_premise_counts_proportions(tmp_path):
    sweep = tmp_path / "multiruns" / "fig6_tiny"
    for p, right in ((0.1, 10), (0.5, 25), (1.0, 40)):  # out of 60 examples: 10 -> 40 right
        scores = [100.0] * right + [0.0] * (60 - right)
        run(sweep / f"p{p}", job="train", neurons="task", proportion=p, train_tasks=["a"], seed=1,
            tasks={"a": task(scores)}, training={"batches": 50, "losses": FLAT})
    reg = load_registry(measures=set(MEASURES), checks=set(PREMISES))
    rise = next(c for c in reg.claims if c.id == "E2.fig6.single_task_rises")
    results = {"fig6": {"artefact": "fig6", "tables": {}}}
    [v] = evaluate(type(reg)((rise,), reg.premises), results, Sources(tmp_path, "tiny"), MEASURES, PREMISES)
    assert v.verdict == HOLDS and math.isclose(v.effect, 50.0) and v.p < 0.001
    assert v.premises[0] == {"id": "several_proportions", "ok": True, "detail": "3 proportions (0.1, 0.5, 1)"}
    assert v.premises[1]["id"] == "training_converged" and v.premises[1]["ok"] is True


def test_table4_with_too_few_models_is_inconclusive_naming_the_premise(tmp_path):
    reg = load_registry(measures=set(MEASURES), checks=set(PREMISES))
    corr = next(c for c in reg.claims if c.id == "E3.table4.similarity_predicts_ood")
    cols = ["test task", "n", "Pearson r", "p", "Spearman rho", "p", "paper r", "paper p", "paper rho", "paper p"]
    results = {"table4": {"tables": {"table4": {"columns": cols, "rows": [["sst2", 3, 0.9, 0.2, 1.0, 0.3, 0.87, 0.02, 0.81, 0.05]]}}}}
    [v] = evaluate(type(reg)((corr,), reg.premises), results, Sources(tmp_path, "tiny"), MEASURES, PREMISES)
    assert v.verdict == INCONCLUSIVE and "several_models failed (at least 3 models per test task)" in v.reason


def test_table8_overlap_is_exact(tmp_path):
    reg = load_registry(measures=set(MEASURES), checks=set(PREMISES))
    sub = tuple(c for c in reg.claims if c.artefact == "table8")
    cols = ["pair", "ours 10%", "ours 50%", "ours 100%"]
    rows = [["CLS-CLS", 30.0, 70.0, 100.0], ["GEN-GEN", 28.0, 60.0, 100.0], ["CLS-GEN", 10.0, 50.0, 100.0],
            ["GEN-CLS", 12.0, 55.0, 100.0]]
    results = {"table8": {"tables": {"table8": {"columns": cols, "rows": rows}}}}
    vs = {v.claim: v for v in evaluate(type(reg)(sub, reg.premises), results, Sources(tmp_path, "tiny"), MEASURES, PREMISES)}
    assert vs["E2.table8.overlap_rises"].verdict == HOLDS and vs["E2.table8.overlap_rises"].effect == 80.0
    assert vs["E2.table8.within_type_higher"].verdict == HOLDS and vs["E2.table8.within_type_higher"].effect == 18.0
    assert vs["E2.table8.overlap_rises"].mde == 0.0


def test_continual_claims_read_complete_runs_and_their_premises(tmp_path):
    sweep = tmp_path / "multiruns" / "table5_tiny"
    order = ["t1", "t2"]
    zero = {"t1": 10.0, "t2": 10.0}
    for seed, (ncft, seqft) in enumerate([(60, 40), (62, 41), (58, 39)], start=1):
        run(sweep / f"ncft_{seed}", job="continual", method="ncft", order_name="order1", order=order, seed=seed,
            complete=True, zero_shot=zero, matrix=[[70, 10], [65, 55]], summary={"cl": ncft, "bwt": -5.0},
            stage_info=[{"batches": 50, "losses": FLAT}] * 2)
        run(sweep / f"seqft_{seed}", job="continual", method="seqft", order_name="order1", order=order, seed=seed,
            complete=True, zero_shot=zero, matrix=[[70, 10], [30, 60]], summary={"cl": seqft, "bwt": -40.0},
            stage_info=[{"batches": 50, "losses": FLAT}] * 2)
        run(sweep / f"pertask_{seed}", job="continual", method="pertask", order_name="order1", order=order, seed=seed,
            complete=True, zero_shot=zero, matrix=[[70, 10], [70, 60]],
            summary={"cl": 65, "bwt": 0.0, "per_task_scores": [70.0, 60.0]}, stage_info=[{"batches": 50, "losses": FLAT}] * 2)
    reg = load_registry(measures=set(MEASURES), checks=set(PREMISES))
    sub = tuple(c for c in reg.claims if c.id in ("E4.table5.ncft_cl_above_seqft", "E4.table5.wncft_above_ncft"))
    vs = {v.claim: v for v in evaluate(type(reg)(sub, reg.premises), {"table5": {"tables": {}}},
                                       Sources(tmp_path, "tiny"), MEASURES, PREMISES)}
    v = vs["E4.table5.ncft_cl_above_seqft"]
    assert v.verdict == HOLDS and math.isclose(v.effect, 20.0) and v.n == 3
    assert [p["ok"] for p in v.premises] == [True, True, True]
    assert "no (order, seed) with complete wncft and ncft runs" in vs["E4.table5.wncft_above_ncft"].reason


def test_verdicts_come_from_written_results(tmp_path):
    out = tmp_path / "results" / "table1" / "tiny"
    out.mkdir(parents=True)
    cell = {"mean": -12.0, "lo": -20.0, "hi": -4.0, "n": 80, "method": "bootstrap over 80 test examples",
            "p": 0.004, "test": "exact sign test on 20 discordant pairs (McNemar)"}
    (out / "result.json").write_text(json.dumps({"artefact": "table1", "cells": {"table1/task_vs_random/all": cell}}))
    results = load_results(["table1", "table2"], "tiny", tmp_path)
    assert results["table2"] is None and results["table1"]["cells"]
    reg = load_registry(measures=set(MEASURES), checks=set(PREMISES))
    sub = tuple(c for c in reg.claims if c.artefact in ("table1", "table2") and c.measure["kind"] == "cell")
    vs = evaluate(type(reg)(sub, reg.premises), results, Sources(tmp_path, "tiny"), MEASURES, PREMISES)
    t1 = next(v for v in vs if v.claim == "E1.deactivate.task_below_random")
    # significant in the paper's direction, but Table 1's premise has no fine-tuning runs to check
    assert t1.verdict == INCONCLUSIVE and "table1_original_learnt not checked" in t1.reason
    assert t1.p == 0.004 and t1.mde is not None and t1.n == 80
    t2 = next(v for v in vs if v.claim == "E1.train.task_above_random")
    assert t2.verdict == INCONCLUSIVE and t2.reason.startswith("no data: no result for `table2`")
    table = verdict_table(vs)
    assert table["columns"][-1] == "verdict" and len(table["rows"]) == len(vs)


def test_report_verdicts_command_runs_nothing_and_refuses_a_bad_scale(tmp_path, monkeypatch, capsys):
    from taskneurons.report.__main__ import main

    monkeypatch.setenv("TASKNEURONS_OUTPUT", str(tmp_path))
    main(["verdicts", "--scale", "small"])
    out = capsys.readouterr().out
    assert "18 claims: 0 hold, 0 contradicted, 18 inconclusive." in out
    written = json.loads((tmp_path / "report" / "verdicts.json").read_text())
    assert written["scale"] == "small" and all(v["reason"].startswith("no data") for v in written["verdicts"])
    assert not (tmp_path / "multiruns").exists()
    with pytest.raises(SystemExit) as e:
        main(["verdicts", "--scale", "huge"])
    assert e.value.code == 2 and "--scale=huge must be one of tiny, small, paper" in capsys.readouterr().err


def test_the_learnt_premises_count_a_task_at_the_ceiling_as_learnt(tmp_path):
    """Table 1's Original >= zero-shot + 10 cannot hold for a task that starts at 90 (amazon on SmolLM2, 90 -> 97
    at lr 1e-4): at or above the premise's ceiling a task counts as learnt; below it the margin decides."""
    from taskneurons.report.measures import p_table1_original_over_zeroshot

    fine = tmp_path / "multiruns" / "table1_tiny" / "finetune"
    run(fine / "seed1", job="train", seed=1, before={"amazon": {"score": 90.0}, "sst2": {"score": 70.0}},
        tasks={"amazon": {"score": 97.0}, "sst2": {"score": 85.0}})
    src = Sources(tmp_path, "tiny")
    ok, detail = p_table1_original_over_zeroshot({"margin": 10, "ceiling": 90}, None, None, src)
    assert ok and "sst2" in detail and "+15.0" in detail and "1 at or above the ceiling 90" in detail
    ok, detail = p_table1_original_over_zeroshot({"margin": 10}, None, None, src)  # no ceiling: amazon's +7 fails
    assert not ok and "+7.0 (amazon" in detail
