"""Every option of every config group composes and passes validation (no model is loaded)."""

from __future__ import annotations

import pytest

from conftest import compose
from taskneurons import CONF_DIR
from taskneurons.config import build_task_specs, validate_common

GROUPS = ["model", "benchmark", "data", "eval", "logger", "trainer", "paths"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_group_has_options():
    for g in GROUPS + ["task", "experiment", "neurons", "intervention", "optim"]:
        assert options(g), f"conf/{g} is empty"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_group_option_composes(group, option):
    cfg = compose(overrides=[f"{group}={option}"])
    specs, problems = build_task_specs(cfg)
    problems += validate_common(cfg)
    assert not problems, problems
    assert specs


@pytest.mark.parametrize("task", options("task"))
def test_every_task_composes_alone(task):
    cfg = compose(overrides=[f"task={task}"])
    specs, problems = build_task_specs(cfg)
    assert not problems, problems
    assert [s.name for s in specs] == [task]
    spec = specs[0]
    assert spec.prompt_fields, "a prompt must read at least one field"
    assert (spec.labels is not None) == spec.is_classification


@pytest.mark.parametrize("model", ["llama2_7b", "bloom_7b1"])
def test_paper_scale_models_compose(model):
    cfg = compose(overrides=[f"model={model}", "benchmark=generalization12", "trainer=gpu"])
    # auto: bf16 on a GPU with bf16 (runtime/precision.py resolves it per job)
    assert cfg.model.source == "hub" and cfg.model.dtype == "auto"
    assert validate_common(cfg) == []
    assert len(cfg.tasks) == 13


@pytest.mark.parametrize(
    "benchmark,n", [("starter", 3), ("generalization12", 13), ("cl_standard", 4), ("cl_long8", 8)]
)
def test_benchmarks_list_their_tasks(benchmark, n):
    cfg = compose(overrides=[f"benchmark={benchmark}"])
    assert len(cfg.tasks) == n
    assert set(cfg.benchmark.train_tasks) <= set(cfg.tasks)


def test_task_override_selects_subset_and_fields_override():
    cfg = compose(overrides=["benchmark=generalization12", "task=[sst2,xsum]", "tasks.sst2.prompt='Review: {input} Sentiment:'"])
    assert list(cfg.tasks) == ["sst2", "xsum"]
    assert cfg.tasks.sst2.prompt.startswith("Review:")


def test_bad_values_are_named_by_key():
    cfg = compose(overrides=["eval.cls_scorers=[vote]", "logger.type=tensorboard", "tasks.bbc_topic.kind=regression"])
    specs, problems = build_task_specs(cfg)
    problems += validate_common(cfg)
    text = " ".join(problems)
    assert "eval.cls_scorers" in text and "logger.type" in text and "tasks.bbc_topic.kind" in text


ENTRY_OF_EXPERIMENT = {"table2_small": "train", "table2_paper": "train", "table7_paper": "train", "table2_tiny": "train",
                       "table1_finetune_tiny": "train", "table1_finetune_small": "train", "table1_finetune_paper": "train"}
# step 1 of Table 1 (multi-task fine-tuning) logs into the same W&B group as step 2
NAME_OF_EXPERIMENT = {f"table1_finetune_{s}": f"table1_{s}" for s in ("tiny", "small", "paper")}


@pytest.mark.parametrize("entry", ["evaluate", "identify", "train"])
def test_entry_configs_compose_and_validate(entry):
    from taskneurons.evaluate import validate_intervention
    from taskneurons.neurons.identify import validate_neurons_config
    from taskneurons.train import validate_train

    cfg = compose(entry)
    specs, problems = build_task_specs(cfg)
    problems += validate_common(cfg)
    problems += {"evaluate": validate_intervention, "train": validate_train,
                 "identify": lambda c: validate_neurons_config(c.neurons)}[entry](cfg)
    assert not problems and specs


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_validates_with_its_entry_point(experiment):
    from taskneurons.evaluate import validate_intervention
    from taskneurons.train import validate_train

    entry = ENTRY_OF_EXPERIMENT.get(experiment, "evaluate")
    cfg = compose(entry, [f"experiment={experiment}"])
    specs, problems = build_task_specs(cfg)
    problems += validate_common(cfg)
    problems += (validate_train if entry == "train" else validate_intervention)(cfg)
    assert not problems, problems
    assert cfg.experiment_name == NAME_OF_EXPERIMENT.get(experiment, experiment)


@pytest.mark.parametrize("group,option", [("neurons", o) for o in options("neurons")]
                         + [("intervention", o) for o in options("intervention")] + [("optim", o) for o in options("optim")])
def test_neuron_groups_compose(group, option):
    entry = "evaluate" if group == "intervention" and option in ("none", "deactivate") else "train"
    if group == "neurons":
        entry = "identify"
    cfg = compose(entry, [f"{group}={option}"])
    assert cfg[group] is not None


def test_a_problem_found_by_two_checks_is_said_once():
    from taskneurons.errors import ConfigError

    assert ConfigError(["tasks.x.source.path: missing", "seed: bad", "tasks.x.source.path: missing"]).problems == [
        "tasks.x.source.path: missing", "seed: bad"]
