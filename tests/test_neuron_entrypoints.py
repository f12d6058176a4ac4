"""identify / train / evaluate-with-deactivation as a user runs them (their command lines, tiny models): in
this process (``conftest.run_here``) except where another process is the point (the same neuron sets in
a second process)."""

from __future__ import annotations

import json

import pytest

from conftest import run_here
from test_entrypoints import assert_fails_cleanly, run

pytestmark = pytest.mark.e2e
SMALL = ["model=tiny_llama", "logger=csv", "data.max_train=24", "data.max_test=6", "neurons.max_examples=12",
         "eval.cls_scorers=[loglik]", "eval.gen_max_new_tokens=4"]


def test_identify_is_deterministic_across_processes_and_reuses_the_store(tmp_path):
    prints = []
    for i, runner in enumerate((run, run_here)):  # a process of its own, then this one: same sets
        out = tmp_path / f"run{i}"
        r = runner(["taskneurons.identify", *SMALL, "task=[rotten_tomatoes,bbc_topic]", f"neurons.store_dir={tmp_path}/store{i}",
                 f"hydra.run.dir={out}"])
        assert r.returncode == 0, r.stderr[-3000:]
        m = json.loads((out / "metrics.json").read_text())
        assert m["tasks"]["rotten_tomatoes"]["source"] == "attribution"
        assert m["tasks"]["rotten_tomatoes"]["fraction"] == pytest.approx(0.1, abs=0.01)
        prints.append({t: i["fingerprint"] for t, i in m["tasks"].items()})
        assert 0 < m["overlap_jaccard"]["rotten_tomatoes"]["bbc_topic"] < 1
    assert prints[0] == prints[1], "same seed, same neuron sets"
    # a second run against the same store loads, and another proportion re-selects from stored scores
    out = tmp_path / "again"
    r = run_here(["taskneurons.identify", *SMALL, "task=rotten_tomatoes", "neurons.proportion=0.3",
             f"neurons.store_dir={tmp_path}/store0", f"hydra.run.dir={out}"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["tasks"]["rotten_tomatoes"]["source"].startswith("re-selected")
    assert m["tasks"]["rotten_tomatoes"]["fraction"] == pytest.approx(0.3, abs=0.01)


def test_deactivation_matrix_and_random_control(tmp_path):
    out = tmp_path / "run"
    r = run_here(["taskneurons.evaluate", *SMALL, "intervention=deactivate", "intervention.source=matrix",
             "intervention.sets=[task,random]", "task=[rotten_tomatoes,bbc_title]", f"neurons.store_dir={tmp_path}/store",
             f"hydra.run.dir={out}"])
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["change"]) == {"task", "random"}
    assert set(m["change"]["task"]["rotten_tomatoes"]) == {"rotten_tomatoes", "bbc_title"}
    assert {"original", "deactivate_task", "deactivate_random"} == set(m["table"]["rotten_tomatoes"])
    assert (out / "deactivation_matrix.png").stat().st_size > 1000


def test_train_task_neurons_then_evaluate_in_and_out_of_domain(tmp_path):
    out = tmp_path / "run"
    r = run_here(["taskneurons.train", *SMALL, "task=[rotten_tomatoes,bbc_topic]", "train_tasks=[rotten_tomatoes]",
             "intervention=finetune_neurons", "neurons=task", "optim.max_steps=3", "optim.lr=1e-3", "save_model=true",
             f"neurons.store_dir={tmp_path}/store", f"hydra.run.dir={out}"])
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["steps"] == 3
    assert m["tasks"]["rotten_tomatoes"]["in_domain"] and not m["tasks"]["bbc_topic"]["in_domain"]
    # trainable = selected rows only: 10 % of every FFN matrix's rows x its input width
    assert 0 < m["training"]["trainable_fraction"] < 0.05
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "model")  # an ordinary HF folder


@pytest.mark.parametrize(
    "job,overrides,needle",
    [
        ("identify", ["neurons.proportion=0"], "neurons.proportion=0"),
        ("identify", ["neurons.proportion=1.5"], "must be in (0, 1]"),
        ("identify", ["neurons.definition=columns"], "neurons.definition='columns'"),
        ("train", ["benchmark=generalization12", "task=gptnli"], "'gptnli' has no training data"),
        ("evaluate", ["intervention=finetune_neurons"], "does not apply to evaluate"),
        ("train", ["intervention=deactivate"], "does not train"),
    ],
)
def test_bad_neuron_config_fails_before_the_model_loads(tmp_path, job, overrides, needle):
    out = tmp_path / "run"
    r = run_here([f"taskneurons.{job}", "model=smollm2_135m", *overrides, f"hydra.run.dir={out}"])
    assert_fails_cleanly(r, out, needle)


def test_a_set_from_another_model_or_definition_is_refused(tmp_path):
    store = tmp_path / "store"
    r = run_here(["taskneurons.identify", *SMALL, "task=rotten_tomatoes", f"neurons.store_dir={store}",
             f"hydra.run.dir={tmp_path}/a"])
    assert r.returncode == 0, r.stderr[-2000:]
    path = json.loads((tmp_path / "a" / "metrics.json").read_text())["tasks"]["rotten_tomatoes"]["path"]
    for extra, needle in ((["model=tiny_gpt2"], "not 'tiny_gpt2'"), (["neurons.definition=intermediate"], "definition")):
        out = tmp_path / "b"
        args = [a for a in SMALL if not a.startswith("model=")] + (["model=tiny_llama"] if "model=tiny_gpt2" not in extra else [])
        r = run_here(["taskneurons.evaluate", *args, *extra, "task=rotten_tomatoes", "intervention=deactivate",
                 f"neurons.path={path}", f"hydra.run.dir={out}"])
        assert r.returncode == 2 and needle in r.stderr and r.stderr.startswith("error: "), r.stderr[-2000:]
        assert not (out / "metrics.json").exists()


def test_table2_sweep_and_report(tmp_path):
    """The make table2 path on tiny models: a train sweep over tasks x {task, random}, then the report."""
    sweep = tmp_path / "sweep"
    r = run_here(["taskneurons.train", "--multirun", "experiment=table2_small", *SMALL, "optim.max_steps=2",
             "neurons=task,random", "train_tasks=[rotten_tomatoes],[bbc_topic]", f"hydra.sweep.dir={sweep}"])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"completed": 4}
    r = run_here(["taskneurons.report", "table2", str(sweep)])
    assert r.returncode == 0, r.stderr[-3000:]
    table = json.loads((sweep / "table2.json").read_text())
    assert set(table["rows"]) == {"rotten_tomatoes", "bbc_topic"}
    assert set(table["rows"]["bbc_topic"]) == {"zero_shot", "train_task", "train_random"}
    assert set(table["finetune_change"]) == {"task", "random"}
    assert (sweep / "finetune_matrix.png").stat().st_size > 1000
