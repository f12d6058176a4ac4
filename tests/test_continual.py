"""Continual learning: known-answer tests for the CL metrics, the W-NCFT rows, O-LoRA's loss; NCFT on a
tiny model leaves every non-selected weight bit-identical; every continual config composes."""

from __future__ import annotations

import pytest
import torch

from conftest import compose
from taskneurons import CONF_DIR
from taskneurons.config import build_task_specs, validate_common
from taskneurons.continual import metrics
from taskneurons.continual.lora import orthogonality
from taskneurons.continual.orders import validate_continual
from taskneurons.continual.rows import similarity_weights, weighted_rows
from taskneurons.errors import ConfigError

# --- metrics on hand matrices --------------------------------------------------------------------
A = [[80.0, 10.0, 20.0],
     [60.0, 70.0, 30.0],
     [50.0, 65.0, 90.0]]


def test_cl_is_the_mean_of_the_last_row():
    assert metrics.cl_average(A) == pytest.approx((50 + 65 + 90) / 3)


def test_bwt_and_forgetting_by_hand():
    assert metrics.bwt(A) == pytest.approx(((50 - 80) + (65 - 70)) / 2)
    # task 0: best before the end 80 (stage 0) -> 50; task 1: best 70 -> 65
    assert metrics.average_forgetting(A) == pytest.approx(((80 - 50) + (70 - 65)) / 2)
    assert metrics.bwt([[42.0]]) is None and metrics.average_forgetting([[42.0]]) is None


def test_fg_retention_eq5_by_hand():
    per_task = [100.0, 70.0, 90.0]
    fg = metrics.fg_retention(A, per_task)
    assert fg[0] is None
    assert fg[1] == pytest.approx(100 * 60 / 100)
    assert fg[2] == pytest.approx(100 * (50 / 100 + 65 / 70) / 2)
    # no forgetting at all -> 100 at every stage
    perfect = [[80.0, 0, 0], [80.0, 70.0, 0], [80.0, 70.0, 90.0]]
    assert metrics.fg_retention(perfect, [80.0, 70.0, 90.0])[1:] == [pytest.approx(100.0)] * 2


def test_summary_and_bad_shapes():
    s = metrics.summarize(A, [100.0, 70.0, 90.0])
    assert s["cl"] == pytest.approx(68.333, abs=1e-3) and s["seen_average"][0] == 80.0 and len(s["fg"]) == 3
    with pytest.raises(ValueError):
        metrics.cl_average([[1.0], [2.0]])


# --- W-NCFT rows: each variant against rows computed by hand ----------------------------------------
def _rows(index, values):
    return {"0.up/up/w": {"index": torch.tensor(index), "values": torch.tensor(values, dtype=torch.float32)}}


# task 0 owns units 0 and 1, task 1 owns units 1 and 2 (unit 1 is shared); rows are 2 wide
BEFORE = [_rows([0, 1], [[0.0, 0.0], [1.0, 1.0]]), _rows([1, 2], [[3.0, 3.0], [5.0, 5.0]])]
AFTER = [_rows([0, 1], [[2.0, 2.0], [3.0, 3.0]]), _rows([1, 2], [[7.0, 7.0], [6.0, 6.0]])]
S = torch.tensor([0.25, 0.75])


@pytest.mark.parametrize("variant,expected", [
    # normalized: unshared units keep their NCFT value; unit 1 = (.25*3 + .75*7) / 1
    ("normalized", [[2, 2], [6, 6], [6, 6]]),
    # literal Eq. 12: every owned row scaled by its owner's weight, shared ones summed
    ("literal", [[0.5, 0.5], [6, 6], [4.5, 4.5]]),
    # delta: w0 + sum_k s_k (after_k - before_k); unit 1: w0 = 1, + .25*(3-1) + .75*(7-3) = 4.5
    ("delta", [[0.5, 0.5], [4.5, 4.5], [5.75, 5.75]]),
])
def test_wncft_variants_by_hand(variant, expected):
    out = weighted_rows(AFTER, BEFORE, S, variant)["0.up/up/w"]
    assert out["index"].tolist() == [0, 1, 2]
    assert torch.equal(out["values"], torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("variant", ["normalized", "literal", "delta"])
def test_wncft_with_one_task_is_ncft(variant):
    w = similarity_weights(torch.randn(8), [torch.randn(8)])
    assert w.tolist() == [1.0]
    out = weighted_rows(AFTER[:1], BEFORE[:1], w, variant)["0.up/up/w"]
    assert torch.equal(out["values"], AFTER[0]["0.up/up/w"]["values"])


def test_similarity_weights_are_a_softmax_of_cosines():
    f = torch.tensor([1.0, 0.0])
    w = similarity_weights(f, [torch.tensor([2.0, 0.0]), torch.tensor([0.0, 3.0])])
    assert w.tolist() == pytest.approx(torch.softmax(torch.tensor([1.0, 0.0]), 0).tolist())


# --- O-LoRA ------------------------------------------------------------------------------------
def test_olora_loss_zero_for_orthogonal_subspaces_and_growing_with_overlap():
    eye = torch.eye(8)
    old = [eye[:2]]                      # rows span e0, e1
    assert orthogonality(old, eye[2:4]).item() == 0.0
    losses = []
    for t in (0.0, 0.3, 0.6, 1.0):       # rotate the new subspace into the old one
        new = torch.stack([torch.cos(torch.tensor(t * 1.5708)) * eye[2] + torch.sin(torch.tensor(t * 1.5708)) * eye[0],
                           eye[3]])
        losses.append(orthogonality(old, new).item())
    assert losses[0] == pytest.approx(0.0, abs=1e-6)
    assert all(b > a for a, b in zip(losses, losses[1:], strict=False))


def test_olora_regularizer_on_peft_adapters(tiny_llama):
    import copy

    from omegaconf import OmegaConf

    from taskneurons.continual import lora

    model = copy.deepcopy(tiny_llama[0])
    lcfg = OmegaConf.create({"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    pm = lora.wrap(model, lcfg, "task0", seed=0)
    lora.add_frozen_history(pm, lcfg, "task1", seed=1, active=["task0"])
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all(".task1." in n for n in trainable)
    reg = lora.olora_regularizer(model, ["task0"], "task1", 0.5, 0.0)
    assert reg.item() > 0 and reg.requires_grad
    assert lora.missing_targets(model, ["q_proj", "nope_proj"]) == ["nope_proj"]


# --- every continual config composes and validates ------------------------------------------------
def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "continual" / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [("method", o) for o in _options("method")]
                         + [("order", o) for o in _options("order")] + [("scale", o) for o in _options("scale")])
def test_continual_groups_compose(group, option):
    cfg = compose("continual", [f"continual/{group}={option}"])
    specs, problems = build_task_specs(cfg)
    problems += validate_common(cfg) + validate_continual(cfg)
    assert not problems, problems
    assert set(cfg.continual.order) <= set(cfg.tasks)


def test_orders_are_table14():
    o = {name: list(compose("continual", [f"continual/order={name}"]).continual.order) for name in _options("order")}
    assert o["order1"] == ["cl_dbpedia", "cl_amazon", "cl_yahoo", "cl_agnews"]
    assert o["order4"] == ["cl_mnli", "cl_qqp", "cl_rte", "cl_amazon", "cl_sst2", "cl_dbpedia", "cl_agnews", "cl_yahoo"]
    assert o["order6"][-1] == "cl_amazon" and len(o["order5"]) == 8
    assert compose("continual", ["continual/order=order5"]).benchmark.name == "cl_long8"


@pytest.mark.parametrize("overrides,needle", [
    (["continual.order=[cl_sst2,cl_dbpedia]"], "['cl_sst2'] not in benchmark cl_standard"),
    (["continual.order=[cl_yahoo,cl_yahoo]"], "['cl_yahoo'] repeated"),
    (["continual.method.name=ewc"], "continual.method 'ewc' is unknown"),
    (["continual.wncft.variant=softmax"], "continual.wncft.variant='softmax'"),
    (["continual.wncft.task_identity=guess"], "continual.wncft.task_identity='guess'"),
])
def test_bad_continual_config_is_named(overrides, needle):
    problems = validate_continual(compose("continual", overrides))
    assert any(needle in p for p in problems), problems


# --- NCFT on a tiny model: only the selected rows move -------------------------------------------
def ncft_stage(tmp_path, *overrides: str):
    """An NCFT run of one stage (cl_agnews, 2 steps) on tiny Llama: (config, context, method, stage)."""
    from taskneurons.continual.loop import Context, OffsetLogger
    from taskneurons.continual.methods import build_method
    from taskneurons.runtime.resume import JobState
    from taskneurons.runtime.session import open_session

    cfg = compose("continual", ["continual/scale=tiny", "continual/method=ncft", "continual.order=[cl_agnews]",
                                "logger=none", "optim.lr=1e-2", "optim.max_steps=2", "data.max_test=2", *overrides])
    session = open_session(cfg, tmp_path, {}, need_train=["cl_agnews"])
    ctx = Context(session, JobState(tmp_path, "continual", "test"), ["cl_agnews"], ["cl_agnews"], OffsetLogger(None))
    method = build_method(cfg)
    method.setup(ctx)
    return cfg, ctx, method, method.stages(ctx.order)[0]


def test_ncft_stage_changes_only_the_selected_rows(tmp_path):
    from taskneurons.continual.loop import train_stage

    _, ctx, method, stage = ncft_stage(tmp_path)
    session = ctx.session
    before = {n: t.clone() for n, t in session.model.state_dict().items()}
    method.prepare(ctx, stage)
    info = train_stage(ctx, method, stage)
    method.finish(ctx, stage)
    nset = method.sets["cl_agnews"]
    assert info["trainable_params"] == sum(
        nset.indices[p.key].numel() * p.n_params_per_unit() for p in method.pools if p.key in nset.indices)
    after = session.model.state_dict()
    changed_any = False
    for p in method.pools:
        m = p.rows[0]
        name = next(n for n, mod in session.model.named_modules() if mod is m.module) + ".weight"
        sel = torch.zeros(p.size, dtype=torch.bool)
        sel[nset.indices[p.key]] = True
        assert torch.equal(after[name][~sel], before[name][~sel]), f"{name}: a non-selected row changed"
        changed_any |= not torch.equal(after[name][sel], before[name][sel])
    assert changed_any, "training moved no selected row"
    ffn = {next(n for n, mod in session.model.named_modules() if mod is m.module) + ".weight"
           for p in method.pools for m in p.rows}
    for n in before:
        if n not in ffn:
            assert torch.equal(after[n], before[n]), f"{n} is not a neuron parameter and must not change"


# --- Table 5 / Fig. 4 aggregation on hand-made runs ---------------------------------------------
def _run(method, order, matrix, seed=1):
    return {"job": "continual", "method": method, "order_name": order, "order": ["a", "b", "c"], "seed": seed,
            "matrix": matrix, "summary": {"cl": metrics.cl_average(matrix)}, "model": "m", "complete": True}


def test_table5_and_fig4_aggregation(tmp_path):
    from taskneurons.report.continual import fg_curves, table5, write_artefact

    runs = [_run("ncft", "order1", A), _run("ncft", "order1", [[r + 10 for r in row] for row in A], seed=2),
            _run("pertask", "order1", [[100.0, 0, 0], [100.0, 70.0, 0], [100.0, 70.0, 90.0]]),
            _run("seqft", "order4", A)]
    t = table5(runs)
    rows = {r[0]: dict(zip(t["columns"], r, strict=True)) for r in t["rows"]}
    assert rows["NCFT"]["order1"] == pytest.approx(metrics.cl_average(A) + 5, abs=0.01)  # mean over the two seeds
    assert rows["NCFT"]["avg_std"] == rows["NCFT"]["order1"] and rows["SeqFT"]["avg_long8"] == rows["SeqFT"]["order4"]
    curves, order = fg_curves([r for r in runs if r["seed"] == 1 and r["order_name"] == "order1"], "order1")
    assert order == "order1" and curves["ncft"][1] == pytest.approx(60.0) and curves["pertask"][2] == pytest.approx(100.0)
    out = write_artefact("table5", "tiny", "t", {"cl": t}, {"cl": t}, [], tmp_path, runs, ["make table5"])
    import json

    res = json.loads((out / "result.json").read_text())
    assert {"artefact", "scale", "title", "tables", "paper", "figures", "commands", "caps", "git_sha", "model",
            "seeds"} <= set(res) and res["seeds"] == [1, 2]


def test_wncft_normalized_equals_the_weighted_mean_unit_by_unit():
    """The normalized rows copy single-owner units and average only shared ones: check every unit of a
    random 3-task case against the definition (weighted mean over the tasks owning the unit)."""
    g = torch.Generator().manual_seed(0)
    after, sets = [], []
    for _ in range(3):
        idx = torch.randperm(20, generator=g)[:8].sort().values
        sets.append(idx)
        after.append({"0.up/up/w": {"index": idx, "values": torch.randn(8, 4, generator=g)}})
    w = torch.softmax(torch.randn(3, generator=g), 0)
    out = weighted_rows(after, after, w, "normalized")["0.up/up/w"]
    assert out["index"].tolist() == sorted(set(torch.cat(sets).tolist()))
    for row, unit in enumerate(out["index"].tolist()):
        owned = [(float(w[k]), after[k]["0.up/up/w"]["values"][sets[k].tolist().index(unit)].double())
                 for k in range(3) if unit in sets[k].tolist()]
        expect = sum(s * v for s, v in owned) / sum(s for s, _ in owned)
        if len(owned) == 1:
            assert torch.equal(out["values"][row], owned[0][1].float())  # copied, bit for bit
        else:
            assert torch.allclose(out["values"][row].double(), expect, atol=1e-6)


@pytest.mark.parametrize("name,per_task_scores", [("pertask", [60.0, 80.0]), ("seqft", None), ("mtl", None)])
def test_each_method_adds_its_own_summary_numbers(name, per_task_scores):
    """The loop asks the method (Method.extra_summary) instead of branching on its name."""
    from types import SimpleNamespace

    from taskneurons.continual.loop import ContinualRun
    from taskneurons.continual.methods import build_method

    method = build_method(compose("continual", [f"continual/method={name}"]))
    ctx = SimpleNamespace(order=["a", "b"], eval_tasks=["a", "b"])
    run = ContinualRun(ctx, method, None, {}, {"method": name})
    matrix = [[70.0, 20.0], [60.0, 80.0]][: len(run.stages)]
    run.rows = [{t: {"score": s} for t, s in zip(ctx.eval_tasks, row, strict=True)} for row in matrix]
    summary = run.metrics(complete=True)["summary"]
    assert summary.get("per_task_scores") == per_task_scores
    if name == "mtl":  # one joint stage: its average, no forgetting
        assert run.stages[0].train_tasks == ["a", "b"] and summary["cl"] == 45.0 and summary["bwt"] is None


def test_table5_reads_the_newest_finished_run_per_method_order_and_seed(tmp_path):
    import os

    import yaml

    from taskneurons.report.continual import load_runs
    from taskneurons.runtime.atomic import write_json_with_checksum

    def put(name, matrix, mtime, complete=True, max_test=16, order="order1"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump({"seed": 1, "model": {"name": "m"}, "data": {"max_test": max_test}}))
        write_json_with_checksum(d / "metrics.json", {**_run("ncft", order, matrix), "complete": complete})
        os.utime(d / "metrics.json", (mtime, mtime))

    put("old", A, 1_000)
    put("new", [[r + 1 for r in row] for row in A], 2_000)
    put("unfinished", A, 3_000, complete=False)  # a run still going (or killed): not in the table
    (runs,) = load_runs(tmp_path)
    assert runs["matrix"][0][0] == A[0][0] + 1
    put("other_caps", A, 500, max_test=99, order="order2")  # another cell, of a sweep with other caps
    with pytest.raises(ConfigError, match="data.max_test"):
        load_runs(tmp_path)
