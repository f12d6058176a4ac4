"""Known-answer tests of the §5 analyses: unions and Jaccard, controlled draws, masked / flattened
parameter similarity (in memory and streamed from safetensors), correlations, per-task masks."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from taskneurons.analyze.correlate import correlation
from taskneurons.analyze.overlap import group_overlap, overlap_sweep, union_of
from taskneurons.analyze.sets import check_grid, same_space_problems
from taskneurons.analyze.similarity import cosine, layer_similarity, pool_terms
from taskneurons.errors import ConfigError
from taskneurons.neurons.controlled import check_controlled, counts_for, draw_controlled, overlap_rate
from taskneurons.neurons.neuronset import NeuronSet, at_proportion

SIZES = {(0, "up"): 10, (0, "down"): 4, (1, "up"): 10, (1, "down"): 4}


def nset(idx: dict, task: str = "t", model: str = "m", definition: str = "output_units", scores=None) -> NeuronSet:
    full = {k: torch.tensor(sorted(idx.get(k, [])), dtype=torch.long) for k in SIZES}
    return NeuronSet(full, dict(SIZES), {"model": model, "definition": definition, "task": task}, scores)


def test_union_and_jaccard_on_hand_sets_overall_and_per_layer():
    a = nset({(0, "up"): [0, 1, 2], (1, "down"): [0]}, "a")
    b = nset({(0, "up"): [2, 3], (1, "up"): [5]}, "b")
    c = nset({(0, "up"): [0, 9], (1, "down"): [1]}, "c")
    d = nset({(0, "up"): [1, 3], (1, "up"): [5, 6], (1, "down"): [3]}, "d")
    u = union_of([a, b])
    assert u.indices[(0, "up")].tolist() == [0, 1, 2, 3] and u.indices[(1, "up")].tolist() == [5] and u.count() == 6
    # N_x = a ∪ b = {0.up 0-3, 1.up 5, 1.down 0}; N_y = c ∪ d = {0.up 0,1,3,9, 1.up 5,6, 1.down 1,3}
    res = group_overlap({"a": a, "b": b, "c": c, "d": d}, ["a", "b"], ["c", "d"])
    # ∩ = {0.up 0,1,3, 1.up 5} = 4; ∪ = 6 + 8 - 4 = 10
    assert res["jaccard"] == pytest.approx(4 / 10)
    assert res["intersection"] == 4 and res["train_union"] == 6 and res["test_union"] == 8
    # layer 0: ∩ 3, ∪ 4 + 4 - 3 = 5; layer 1: ∩ 1, ∪ 2 + 4 - 1 = 5
    assert res["per_layer"] == {0: pytest.approx(3 / 5), 1: pytest.approx(1 / 5)}


def test_overlap_rises_with_the_proportion_and_is_one_at_100_percent():
    g = torch.Generator().manual_seed(0)
    scored = {t: nset({}, t, scores={k: torch.rand(n, generator=g) for k, n in SIZES.items()}) for t in "abcdefgh"}
    groups = {"train_cls": ["a", "b"], "train_gen": ["c", "d"], "ood_cls": ["e", "f"], "ood_gen": ["g", "h"]}
    table = overlap_sweep(scored, groups, [0.1, 0.5, 1.0])
    for by_p in table.values():
        j = [by_p[p]["jaccard"] for p in (0.1, 0.5, 1.0)]
        assert j[0] <= j[1] < j[2] == 1.0
    assert at_proportion(scored["a"], 0.5).counts() == {k: n // 2 for k, n in SIZES.items()}


def test_sets_of_different_models_or_definitions_are_refused():
    p = same_space_problems({"a": nset({}, "a"), "b": nset({}, "b", model="other"), "c": nset({}, "c", definition="intermediate")})
    assert any("different models" in x for x in p) and any("different definitions" in x for x in p)


@pytest.mark.parametrize("grid,needle", [([0.1, 0.1], "duplicates"), ([0.0, 0.5], "must be in (0, 1]"),
                                          ([1.5], "must be in (0, 1]"), ([], "non-empty"), (None, "non-empty")])
def test_bad_proportion_grids_are_named(grid, needle):
    assert any(needle in x for x in check_grid(grid, "analyze.proportions"))
    assert check_grid([0.1, 0.3, 1.0], "analyze.proportions") == []


def test_controlled_draw_hits_size_and_overlap_exactly():
    sizes = {(0, "up"): 100, (1, "up"): 200}
    ref = NeuronSet({(0, "up"): torch.arange(0, 40), (1, "up"): torch.arange(50, 130)}, sizes, {"model": "m", "definition": "output_units"})
    for size, ov in ((0.3, 0.5), (0.1, 1.0), (0.2, 0.0), (0.4, 0.25)):
        drawn = draw_controlled(ref, size, ov, seed=3)
        t = NeuronSet(drawn, sizes, dict(ref.meta))
        for k, n in sizes.items():
            inside = int(torch.isin(drawn[k], ref.indices[k]).sum())
            assert drawn[k].numel() == round(size * n) and inside == round(ov * round(size * n))
            assert drawn[k].unique().numel() == drawn[k].numel()
        assert overlap_rate(t, ref) == pytest.approx(ov)
    again = draw_controlled(ref, 0.3, 0.5, seed=3)
    assert all(torch.equal(again[k], draw_controlled(ref, 0.3, 0.5, seed=3)[k]) for k in sizes)
    assert not all(torch.equal(again[k], draw_controlled(ref, 0.3, 0.5, seed=4)[k]) for k in sizes)
    assert counts_for(0.3, 0.5, 100) == (15, 15)


def test_an_infeasible_controlled_draw_is_one_clear_error():
    sizes = {(0, "up"): 100}
    ref = NeuronSet({(0, "up"): torch.arange(0, 20)}, sizes, {})
    with pytest.raises(ConfigError, match="cannot be drawn"):
        draw_controlled(ref, 0.5, 1.0, seed=0)  # 50 inside a set of 20
    with pytest.raises(ConfigError, match="cannot be drawn"):
        draw_controlled(NeuronSet({(0, "up"): torch.arange(0, 90)}, sizes, {}), 0.5, 0.0, seed=0)  # 50 outside 10

    class C(dict):
        __getattr__ = dict.get

    assert any("at most" in x for x in check_controlled(C(size=0.5, overlap=1.0, test_tasks=["a"]), 1, 0.1))
    assert any("outside" in x for x in check_controlled(C(size=0.9, overlap=0.0, test_tasks=["a"]), 3, 0.5))
    assert any("overlap=1.5" in x for x in check_controlled(C(size=0.5, overlap=1.5, test_tasks=["a"]), 3, 0.5))
    assert check_controlled(C(size=0.3, overlap=1.0, test_tasks=["a", "b", "c"]), 3, 0.3) == []


def test_masked_and_flattened_cosine_on_hand_matrices():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    a, b = torch.tensor([0, 1]), torch.tensor([1, 2])
    # option A: rows 0,1 vs rows 1,2 masked: only row 1 shared -> |w1|^2 / sqrt((1+4)(4+9))
    dot, na, nb = pool_terms(w, a, b, "masked")
    assert cosine(dot, na, nb) == pytest.approx(4 / math.sqrt(5 * 13))
    # option B: [1,0,0,2] . [0,2,3,0] = 0
    assert cosine(*pool_terms(w, a, b, "flattened")) == pytest.approx(0.0)
    # against the literal definitions on a random matrix
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 5, generator=g)
    a, b = torch.tensor([0, 3, 4, 8]), torch.tensor([3, 5, 8, 11])
    ma, mb = torch.zeros(12, 1), torch.zeros(12, 1)
    ma[a], mb[b] = 1, 1
    literal_a = torch.nn.functional.cosine_similarity((w * ma).flatten(), (w * mb).flatten(), dim=0)
    literal_b = torch.nn.functional.cosine_similarity(w[a].flatten(), w[b].flatten(), dim=0)
    assert cosine(*pool_terms(w, a, b, "masked")) == pytest.approx(float(literal_a), abs=1e-6)
    assert cosine(*pool_terms(w, a, b, "flattened")) == pytest.approx(float(literal_b), abs=1e-6)
    with pytest.raises(ConfigError, match="same number"):
        pool_terms(w, a, b[:3], "flattened")


def test_layer_similarity_concatenates_or_averages_the_pools():
    g = torch.Generator().manual_seed(2)
    w1, w2 = torch.randn(10, 3, generator=g), torch.randn(4, 6, generator=g)
    sa = nset({(0, "up"): [1, 2, 5], (0, "down"): [0, 3]})
    sb = nset({(0, "up"): [2, 5, 7], (0, "down"): [1, 3]})
    pools = [((0, "up"), w1), ((0, "down"), w2)]

    def masked_vec(s):
        return torch.cat([(w1 * torch.isin(torch.arange(10), s.indices[(0, "up")])[:, None]).flatten(),
                          (w2 * torch.isin(torch.arange(4), s.indices[(0, "down")])[:, None]).flatten()])

    literal = torch.nn.functional.cosine_similarity(masked_vec(sa), masked_vec(sb), dim=0)
    assert layer_similarity(pools, sa, sb, "masked", "concat") == pytest.approx(float(literal), abs=1e-6)
    per = [cosine(*pool_terms(u, sa.indices[k], sb.indices[k], "masked")) for k, u in pools]
    assert layer_similarity(pools, sa, sb, "masked", "mean") == pytest.approx(sum(per) / 2)


def test_streamed_similarity_equals_the_in_memory_one_and_a_mismatched_model_is_refused(tmp_path, tiny_llama, tiny_gpt2):
    from taskneurons.analyze.similarity import model_similarity
    from taskneurons.analyze.weights import SavedWeights, check_matches, unit_params
    from taskneurons.neurons.neuronset import random_like
    from taskneurons.neurons.pools import neuron_pools

    model, _ = tiny_llama
    model.save_pretrained(tmp_path / "m")
    pools = neuron_pools(model)
    sizes = {p.key: p.size for p in pools}
    sa = NeuronSet(random_like({k: n // 4 for k, n in sizes.items()}, sizes, 1), sizes, {"model": "tiny_llama"})
    sb = NeuronSet(random_like({k: n // 4 for k, n in sizes.items()}, sizes, 2), sizes, {"model": "tiny_llama"})
    w = SavedWeights(tmp_path / "m")
    assert check_matches(w, sizes, "output_units", "m") == []
    streamed = model_similarity(w, sa, {"b": sb}, "output_units", "masked")["b"]
    for layer in sorted({k[0] for k in sizes}):
        mem = [(p.key, p.rows[0].unit_weight().detach().float()) for p in pools if p.layer == layer]
        assert streamed[layer] == pytest.approx(layer_similarity(mem, sa, sb, "masked"), abs=1e-6)
        assert {k for k, _ in unit_params(w, layer, "output_units")} == {k for k, _ in mem}
    gpt2, _ = tiny_gpt2
    gpt2.save_pretrained(tmp_path / "g")
    problems = check_matches(SavedWeights(tmp_path / "g"), sizes, "output_units", "g")
    assert problems and "does not match" in " ".join(problems)


def test_correlation_equals_scipy_and_needs_three_points():
    x, y = [0.1, 0.4, 0.35, 0.8, 0.6, 0.2], [50.0, 61.0, 58.0, 77.0, 70.0, 49.0]
    r = correlation(x, y)
    pr, sr = stats.pearsonr(x, y), stats.spearmanr(x, y)
    assert (r["pearson_r"], r["pearson_p"]) == pytest.approx((pr.statistic, pr.pvalue))
    assert (r["spearman_rho"], r["spearman_p"]) == pytest.approx((sr.statistic, sr.pvalue))
    assert r["n"] == 6
    with pytest.raises(ConfigError, match="at least 3"):
        correlation([0.1, 0.2], [1.0, 2.0])
    assert correlation([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])["pearson_r"] is None  # constant input: undefined


def test_task_batches_are_homogeneous_and_per_task_masks_move_only_that_tasks_rows():
    from types import SimpleNamespace

    from taskneurons.neurons.per_task import PerTaskMasks, TaskBatchSampler
    from taskneurons.neurons.pools import Pool
    from taskneurons.neurons.sparse_finetune import NeuronDeltas

    s = TaskBatchSampler([5, 3], batch_size=2, seed=7)
    batches = [s.batch(b) for b in range(s.per_epoch)]
    assert s.per_epoch == 5 and sorted(i for _, b in batches for i in b) == list(range(8))
    assert all(all((i < 5) == (t == 0) for i in b) for t, b in batches)
    assert [s.batch(b) for b in range(5)] == batches  # a pure function of the index

    lin = torch.nn.Linear(3, 6)
    mat = SimpleNamespace(name="up", module=lin, weight=lin.weight, bias=lin.bias, in_features=3, out_features=6)
    pool = Pool((0, "up"), 6, (mat,), (), mat, "output")
    sizes = {(0, "up"): 6}
    ta = NeuronSet({(0, "up"): torch.tensor([0, 1])}, sizes, {})
    tb = NeuronSet({(0, "up"): torch.tensor([1, 4])}, sizes, {})
    deltas = NeuronDeltas([pool], ta.union(tb))
    module = SimpleNamespace(neuron_deltas=deltas)
    sampler = SimpleNamespace(start=0, task_of=lambda b: [0, 1][b])
    cb = PerTaskMasks([ta, tb], sampler)
    cb.on_train_start(None, module)
    opt = torch.optim.AdamW(deltas.parameters(), lr=0.1, weight_decay=0.5)
    for step in range(2):  # task a, then task b
        before = deltas.row_w["0_up_up"].detach().clone()
        cb.on_train_batch_start(None, module, None, step)
        deltas.attach()
        loss = lin(torch.ones(2, 3)).pow(2).sum()
        deltas.detach()
        loss.backward()
        cb.on_before_optimizer_step(None, module, opt)
        opt.step()
        opt.zero_grad()
        cb.on_train_batch_end(None, module, None, None, step)
        moved = (deltas.row_w["0_up_up"] != before).any(1).tolist()  # union rows 0, 1, 4
        assert moved == ([True, True, False] if step == 0 else [False, True, True])


# --- configs compose; bad input is one clear error before any model loads --------------------------

GEN_EXPERIMENTS = ["generalization_tiny", "generalization_small", "generalization_paper"]


@pytest.mark.parametrize("experiment", GEN_EXPERIMENTS)
@pytest.mark.parametrize("extra", [["+group=cls"], ["+group=gen"], ["+group=cls", "intervention.combine=per_task"],
                                   ["neurons=controlled", "train_tasks=[amazon,qqp,mnli]", "task=[amazon,qqp,mnli,sst2,paws,gptnli]"],
                                   ["intervention=finetune_full", "save_model=true", "task=[amazon,sst2]"]])
def test_generalization_train_configs_compose_and_validate(experiment, extra):
    from conftest import compose
    from taskneurons.config import build_task_specs, validate_common
    from taskneurons.train import training_tasks, validate_train

    cfg = compose("train", [f"experiment={experiment}", *extra])
    specs, problems = build_task_specs(cfg)
    problems += validate_common(cfg) + validate_train(cfg)
    if experiment.endswith("_paper"):  # compose-tested only: this machine has no GPU for trainer=gpu
        problems = [x for x in problems if "CUDA" not in x]
    assert not problems, problems
    if "+group=cls" in extra:
        assert training_tasks(cfg) == ["amazon", "qqp", "mnli"] and len(cfg.tasks) == 9


@pytest.mark.parametrize("command", ["overlap", "similarity", "correlate", "proportions", "controlled"])
@pytest.mark.parametrize("experiment", GEN_EXPERIMENTS)
def test_analyze_config_composes_for_every_command(command, experiment):
    from conftest import compose
    from taskneurons.analyze.jobs import validate

    cfg = compose("analyze", [f"command={command}", f"experiment={experiment}"])
    assert validate(cfg) == []
    assert cfg.analyze.groups.ood_gen == ["tweetqa", "commongen", "xsum"]


def _analyze_cfg(tmp_path, command, *extra):
    from conftest import compose

    return compose("analyze", [f"command={command}", "experiment=generalization_tiny", f"neurons.store_dir={tmp_path}/store",
                               f"analyze.results_dir={tmp_path}/results", *extra])


def test_analyze_bad_inputs_raise_one_config_error(tmp_path, tiny_gpt2):
    from taskneurons.analyze.jobs import run_command

    cases = [
        (_analyze_cfg(tmp_path, "overlap", "analyze.proportions=[0.1,0.1]"), "duplicates"),
        (_analyze_cfg(tmp_path, "overlap", "analyze.proportions=[0.5,1.2]"), "must be in (0, 1]"),
        (_analyze_cfg(tmp_path, "overlap"), "run python -m taskneurons.identify"),
        (_analyze_cfg(tmp_path, "similarity", "analyze.similarity=cosine"), "analyze.similarity='cosine'"),
        (_analyze_cfg(tmp_path, "correlate"), "run python -m taskneurons.analyze similarity first"),
        (_analyze_cfg(tmp_path, "proportions", f"analyze.sweep_dir={tmp_path}/none"), "does not exist"),
        (_analyze_cfg(tmp_path, "overlap", "analyze.artefact=fig3"), "is not made by 'overlap'"),
    ]
    for cfg, needle in cases:
        with pytest.raises(ConfigError, match=None) as e:
            run_command(cfg, tmp_path)
        assert needle in str(e.value), (needle, str(e.value))

    # sets of another model, and a saved model that does not match the sets
    sizes = {(0, "gate_proj"): 128, (0, "up_proj"): 128, (0, "down_proj"): 64}
    g = torch.Generator().manual_seed(0)
    paths = {}
    for i, t in enumerate(["amazon", "qqp", "mnli", "sciqa", "e2e", "cnn", "sst2", "paws", "gptnli", "tweetqa", "commongen", "xsum"]):
        scores = {k: torch.rand(n, generator=g) for k, n in sizes.items()}
        meta = {"model": "tiny_llama" if i else "tiny_bloom", "definition": "output_units", "task": t}
        paths[t] = str(NeuronSet({k: torch.arange(3) for k in sizes}, sizes, meta, scores).save(tmp_path / "sets" / t))
    sets_arg = "analyze.sets={" + ",".join(f"{t}:'{p}'" for t, p in paths.items()) + "}"
    with pytest.raises(ConfigError) as e:
        run_command(_analyze_cfg(tmp_path, "overlap", sets_arg), tmp_path)
    assert "different models" in str(e.value)
    gpt2, _ = tiny_gpt2
    gpt2.save_pretrained(tmp_path / "gpt2")
    paths["amazon"] = paths["qqp"]
    sets_arg = "analyze.sets={" + ",".join(f"{t}:'{p}'" for t, p in paths.items()) + "}"
    models = "analyze.models={" + ",".join(f"{t}:'{tmp_path}/gpt2'" for t in ["amazon", "qqp", "mnli", "sciqa", "e2e", "cnn"]) + "}"
    with pytest.raises(ConfigError) as e:
        run_command(_analyze_cfg(tmp_path, "similarity", sets_arg, models), tmp_path)
    assert "does not match" in str(e.value)


@pytest.mark.e2e
def test_bad_analyze_and_controlled_inputs_exit_2_before_a_model_loads(tmp_path):
    from conftest import run_here
    from test_entrypoints import assert_fails_cleanly, run

    # the two refused configs in this process (conftest.run_here); the CLI's own usage error as a process
    r = run_here(["taskneurons.analyze", "overlap", "analyze.proportions=[0.1,0.1]", f"hydra.run.dir={tmp_path}/a"])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "duplicates" in r.stderr
    r = run_here(["taskneurons.train", "experiment=generalization_tiny", "neurons=controlled", "neurons.proportion=0.9",
                  "neurons.controlled.overlap=0.0", "train_tasks=[amazon,qqp,mnli]", "task=[amazon,qqp,mnli,sst2,paws,gptnli]",
                  f"hydra.run.dir={tmp_path}/b"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert_fails_cleanly(r, tmp_path / "b", "outside N_y")
    r = run(["taskneurons.analyze", "nonsense"])
    assert r.returncode == 2 and "first argument must be a command" in r.stderr


def test_proportion_sweeps_aggregate_means_over_seeds_and_the_training_type_mean():
    from taskneurons.analyze.proportions import fig2_table, fig6_table, trend

    groups = {"train_cls": ["amazon", "qqp"], "train_gen": ["sciqa"], "ood_cls": ["sst2"], "ood_gen": ["xsum"]}

    def job(train, p, seed, idc, oodc, oodg, idg=None):
        summary = {"in_domain_cls": idc, "out_of_domain_cls": oodc, "out_of_domain_gen": oodg}
        if idg is not None:
            summary = {"in_domain_gen": idg, "out_of_domain_cls": oodc, "out_of_domain_gen": oodg}
        tasks = {t: {"score": 10.0 * p + seed} for t in train}
        return {"job": "train", "neurons": "task", "train_tasks": train, "proportion": p, "seed": seed, "summary": summary, "tasks": tasks}

    jobs = [job(["qqp", "amazon"], 0.1, 1, 60.0, 50.0, 5.0), job(["amazon", "qqp"], 0.1, 2, 70.0, 52.0, 7.0),
            job(["amazon", "qqp"], 0.5, 1, 80.0, 60.0, 6.0), job(["sciqa"], 0.5, 1, None, 40.0, 20.0, idg=30.0),
            {"job": "train", "neurons": "random", "train_tasks": ["amazon", "qqp"], "proportion": 0.1}]
    t = fig2_table(jobs, groups)
    assert t["CLS-trained"][0.1] == {"ID-CLS": 65.0, "OOD-CLS": 51.0, "ID-GEN": None, "OOD-GEN": 6.0, "mean": 58.0}
    assert t["GEN-trained"][0.5]["mean"] == 25.0 and t["GEN-trained"][0.5]["ID-CLS"] is None
    f6 = fig6_table([job(["sciqa"], p, s, None, 0, 0, idg=0) for p in (0.1, 1.0) for s in (1, 2)])
    assert f6 == {"sciqa": {0.1: 2.5, 1.0: 11.5}}
    assert trend([1, 2, 3]) == "rises monotonically" and trend([1, 3, 2]) == "peaks at point 2 of 3"
    assert trend([3, 2, 1]) == "falls monotonically" and trend([None, 1]) == "n/a"


# --- which jobs of a stable sweep folder an analysis reads ----------------------------------------

def _job(root, name: str, overrides: list[str], seed: int, max_steps: int, mtime: float, score: float):
    import os

    import yaml

    from taskneurons.runtime.atomic import write_json_with_checksum

    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "model": {"name": "tiny_llama"},
                                                   "optim": {"max_steps": max_steps}}))
    write_json_with_checksum(d / "metrics.json", {"job": "train", "seed": seed, "score": score})
    os.utime(d / "metrics.json", (mtime, mtime))
    return d


def test_an_analysis_reads_the_newest_job_per_cell_and_refuses_stale_caps(tmp_path):
    """A stable sweep folder keeps every job it ever ran: the newest per (overrides less seed, seed) is
    read, an older duplicate is not averaged in, and a job left by a grid with other caps is refused."""
    from taskneurons.analyze.sweeps import load_jobs

    sweep = tmp_path / "sweep"
    _job(sweep, "0", ["neurons.proportion=0.1"], 1, 4, 1_000, score=10.0)
    _job(sweep, "1", ["neurons.proportion=0.5"], 1, 4, 1_000, score=50.0)
    _job(sweep, "2", ["neurons.proportion=0.1"], 1, 4, 2_000, score=11.0)  # the same cell, rerun later
    _job(sweep, "3", ["neurons.proportion=0.1"], 2, 4, 1_000, score=12.0)  # another seed: kept
    jobs = load_jobs(sweep, "fig2")
    assert sorted((m["seed"], m["score"]) for _, m in jobs) == [(1, 11.0), (1, 50.0), (2, 12.0)]
    assert [m["score"] for _, m in load_jobs(sweep, "fig2", seeds=[2])] == [12.0]
    _job(sweep, "4", ["neurons.proportion=1.0"], 1, 99, 500, score=0.0)  # an older grid's job, other caps
    with pytest.raises(ConfigError, match="optim.max_steps"):
        load_jobs(sweep, "fig2")


def test_report_builds_every_analysis_artefact_through_the_analyze_app(tmp_path, monkeypatch, capsys):
    """One CLI for every table and figure: `python -m taskneurons.report table8 key=value ...` runs the analyze
    app's overlap command with analyze.artefact=table8 and the user's overrides (here it stops, as the app does,
    at the missing neuron sets: one error line, exit 2)."""
    import sys

    from taskneurons.report.__main__ import analysis_command, main

    assert {a: analysis_command(a) for a in ("fig2", "fig6", "table8", "table9", "fig3", "table4", "table1")} == {
        "fig2": "proportions", "fig6": "proportions", "table8": "overlap", "table9": "controlled",
        "fig3": "similarity", "table4": "correlate", "table1": None}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python -m taskneurons.report"])
    with pytest.raises(SystemExit) as e:
        main(["table8", "experiment=generalization_tiny", f"neurons.store_dir={tmp_path}/store", "logger=csv",
              f"hydra.run.dir={tmp_path}/run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no stored neuron set for task 'amazon'" in err
