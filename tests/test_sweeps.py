"""The grids the make targets sweep (conf/sweep/<artefact>.yaml, values per scale in each experiment's `grid:`):
every scale expands to the paper's grid, a command-line value of a swept key wins, and every job of every grid
composes into a valid config (no model is loaded)."""

from __future__ import annotations

import itertools

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from taskneurons import CONF_DIR
from taskneurons.config import build_task_specs, validate_common

T2_PAPER = ["[amazon]", "[qqp]", "[mnli]", "[sciqa]", "[e2e]", "[cnn]"]
OOD = "sst2,paws,gptnli,tweetqa,commongen,xsum"
CL_METHODS = ["seqft", "seqlora", "olora", "ncft", "wncft", "pertask", "migu"]
PROPS = ["0.1", "0.3", "0.5", "0.7", "1.0"]
# (entry config, the target's overrides) -> {swept key: the values of the grid}
GRIDS = {
    ("train", "experiment=table2_tiny sweep=table2"): {"neurons": ["task", "random"],
                                                        "train_tasks": ["[rotten_tomatoes]", "[bbc_topic]"]},
    ("train", "experiment=table2_small sweep=table2"): {
        "neurons": ["task", "random"], "train_tasks": ["[rotten_tomatoes]", "[bbc_topic]", "[bbc_title]"]},
    ("train", "experiment=table2_paper sweep=table2"): {"neurons": ["task", "random"], "train_tasks": T2_PAPER},
    ("train", "experiment=table7_paper sweep=table2"): {"neurons": ["task", "random"], "train_tasks": T2_PAPER},
    ("evaluate", "experiment=fig5_small sweep=fig5"): {"neurons.matrices": ["all", "W1", "W2"]},
    ("train", "experiment=generalization_tiny sweep=fig2"): {"+group": ["cls", "gen"],
                                                             "neurons.proportion": ["0.1", "1.0"]},
    ("train", "experiment=generalization_small sweep=fig2"): {"+group": ["cls", "gen"], "neurons.proportion": PROPS},
    ("train", "experiment=generalization_tiny sweep=fig6"): {"task": ["amazon", "sciqa"],
                                                             "neurons.proportion": ["0.1", "1.0"]},
    ("train", "experiment=generalization_paper sweep=fig6"): {
        "task": ["amazon", "qqp", "mnli", "sciqa", "e2e", "cnn"], "neurons.proportion": PROPS},
    ("train", "experiment=generalization_tiny sweep=table9"): {
        "+t9_block": ["cls-cls"], "neurons": ["controlled"], "neurons.proportion": ["0.3"],
        "neurons.controlled.overlap": ["0.5", "1.0"]},
    ("train", "experiment=generalization_small sweep=table9"): {
        "+t9_block": ["cls-cls"], "neurons": ["controlled"], "neurons.proportion": ["0.1", "0.3"],
        "neurons.controlled.overlap": ["0.1", "0.5", "1.0"]},
    ("train", "experiment=generalization_paper sweep=table9"): {
        "+t9_block": ["cls-cls", "gen-gen", "gen-cls"], "neurons": ["controlled"],
        "neurons.proportion": ["0.1", "0.3", "0.5"], "neurons.controlled.overlap": ["0.1", "0.3", "0.5", "0.7", "1.0"]},
    ("train", "experiment=generalization_small sweep=fig3"): {
        "task": [f"[{t},{OOD}]" for t in ("amazon", "qqp", "mnli", "sciqa", "e2e", "cnn")]},
    ("continual", "continual/scale=tiny sweep=table5"): {"continual/method": CL_METHODS,
                                                         "continual/order": ["order1", "order4"]},
    ("continual", "continual/scale=small sweep=table5"): {"continual/method": CL_METHODS, "continual/order": ["order1"]},
    ("continual", "continual/scale=paper sweep=table5"): {
        "continual/method": CL_METHODS, "continual/order": [f"order{i}" for i in range(1, 7)]},
    ("continual", "continual/scale=small sweep=fig4"): {"continual/method": CL_METHODS, "continual/order": ["order4"]},
}


def _compose(config_name: str, overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra)


def jobs(config_name: str, overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches: the config's sweeper params, then the command line (which wins)."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    cfg = _compose(config_name, fixed, hydra=True)  # as --multirun composes it: sweeps not applied yet
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True) or {}
    parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def grid_of(job_list: list[list[str]], keys) -> dict[str, list[str]]:
    return {k: list(dict.fromkeys(o.split("=", 1)[1] for job in job_list for o in job if o.split("=", 1)[0] == k))
            for k in keys}


@pytest.mark.parametrize("entry,target", list(GRIDS), ids=[t for _, t in GRIDS])
def test_each_target_sweeps_its_grid_at_each_scale(entry, target):
    want = GRIDS[(entry, target)]
    job_list = jobs(entry, target.split())
    assert grid_of(job_list, want) == want
    assert len(job_list) == len(list(itertools.product(*want.values())))  # the full product, nothing else swept


def test_a_command_line_value_of_a_swept_key_wins():
    job_list = jobs("train", ["experiment=table2_small", "sweep=table2", "train_tasks=[bbc_topic]"])
    assert grid_of(job_list, ["train_tasks", "neurons"]) == {"train_tasks": ["[bbc_topic]"], "neurons": ["task", "random"]}
    job_list = jobs("continual", ["continual/scale=small", "sweep=table5", "continual/method=ncft,migu"])
    assert len(job_list) == 2


# the grids whose values are new configs (blocks, groups, the fig3 task lists, Table 2's task sets); the
# continual methods and orders and the experiments compose option by option in test_continual / test_config_compose
COMPOSED = [("train", "experiment=table2_small sweep=table2"), ("train", "experiment=generalization_small sweep=fig2"),
            ("train", "experiment=generalization_paper sweep=table9"), ("train", "experiment=generalization_small sweep=fig3")]


@pytest.mark.parametrize("entry,target", COMPOSED, ids=[t for _, t in COMPOSED])
def test_every_value_of_every_grid_composes(entry, target):
    job_list, seen, covering = jobs(entry, target.split()), set(), []
    for job in job_list:  # every value of every swept key at least once (the full product is ~10x slower)
        if not set(job) <= seen:
            covering.append(job)
            seen |= set(job)
    for job in covering:
        cfg = _compose(entry, job)
        specs, problems = build_task_specs(cfg)
        problems += validate_common(cfg)
        assert not problems, (job, problems)
        if any(o.startswith("+t9_block=") for o in job):  # the block's training and test tasks, all selected
            names = [s.name for s in specs]
            assert set(cfg.train_tasks) <= set(names) and set(cfg.neurons.controlled.test_tasks) <= set(names)
            assert not set(cfg.train_tasks) & set(cfg.neurons.controlled.test_tasks)
        if "sweep=fig3" in target:
            assert cfg.intervention.name == "finetune_full" and cfg.save_model is True


def test_table8_reads_the_overlap_proportions_of_its_scale():
    tiny = _compose("analyze", ["experiment=generalization_tiny"])
    assert list(tiny.analyze.proportions) == [0.1, 0.3, 0.5, 1.0]
    assert list(_compose("analyze", []).analyze.proportions) == [0.1, 0.3, 0.5, 0.7, 1.0]
