"""Identification must not keep anything of a task once the task is done (issue: 16 GB for 3 tasks).

The leak this guards against: a gradient hook whose closure held its own activation tensor. The tensor's
grad_fn held the hook, the hook held the tensor: a cycle through C++ that ``gc`` cannot break, so every
activation of every batch of every task stayed alive. Weak references see whether anything survives.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from conftest import compose, tiny
from taskneurons.config import build_task_specs
from taskneurons.data.loading import load_tasks
from taskneurons.neurons.identify import identify_task
from taskneurons.neurons.pools import neuron_pools

TASKS = ["sst2", "paws", "mnli", "xsum", "sciqa"]


@pytest.fixture()
def hooked_activations(monkeypatch):
    """Weak references to every tensor that gets a gradient hook (the recorded activations)."""
    refs: list[weakref.ref] = []
    original = torch.Tensor.register_hook

    def spy(self, fn):
        refs.append(weakref.ref(self))
        return original(self, fn)

    monkeypatch.setattr(torch.Tensor, "register_hook", spy)
    return refs


def test_identifying_five_tasks_keeps_no_activation_alive(tmp_path, data_dir, hooked_activations):
    model, tok = tiny("tiny_llama")
    cfg = compose("identify", overrides=["model=tiny_llama", "benchmark=generalization12", f"task=[{','.join(TASKS)}]",
                                         "neurons.max_examples=6", "neurons.batch_size=3", "neurons.reuse=false",
                                         f"neurons.store_dir={tmp_path}", "data.max_prompt_tokens=48"])
    specs, problems = build_task_specs(cfg)
    assert not problems
    data = load_tasks(specs, data_dir, max_train=20, max_test=1, seed=0)
    pools = neuron_pools(model)
    alive_after = []
    for name in TASKS:
        nset, info = identify_task(model, tok, "tiny_llama", data[name], cfg.neurons, cfg.data, pools)
        assert info["source"] == "attribution" and nset.count() > 0
        gc.collect()
        alive_after.append(sum(r() is not None for r in hooked_activations))
    assert len(hooked_activations) >= len(TASKS) * 2 * len(pools), "the spy saw the recorded activations"
    assert alive_after == [0] * len(TASKS), f"activations still alive after each task: {alive_after}"


def test_memory_after_the_fifth_task_is_no_more_than_after_the_first(tmp_path, data_dir):
    """The same, as bytes: the sum of the sizes of live tensors reachable from the recorded activations'
    storages does not grow from task 1 to task 5 (weakrefs to storages outlive a tensor's view)."""
    model, tok = tiny("tiny_llama")
    cfg = compose("identify", overrides=["model=tiny_llama", "benchmark=generalization12", f"task=[{','.join(TASKS)}]",
                                         "neurons.max_examples=6", "neurons.batch_size=3", "neurons.reuse=false",
                                         f"neurons.store_dir={tmp_path}", "data.max_prompt_tokens=48"])
    specs, _ = build_task_specs(cfg)
    data = load_tasks(specs, data_dir, max_train=20, max_test=1, seed=0)
    pools = neuron_pools(model)
    storages: list[weakref.ref] = []
    handles = [p.act.module.register_forward_hook(lambda m, i, o: storages.append(weakref.ref(o.untyped_storage())))
               for p in pools if p.act_side == "output"]
    live_bytes = []
    try:
        for name in TASKS:
            identify_task(model, tok, "tiny_llama", data[name], cfg.neurons, cfg.data, pools)
            gc.collect()
            live_bytes.append(sum(s().nbytes() for s in storages if s() is not None))
    finally:
        for h in handles:
            h.remove()
    assert live_bytes[-1] <= live_bytes[0], f"live activation bytes grew with tasks: {live_bytes}"


def test_a_finished_job_leaves_no_model_alive_for_the_next_job_of_a_sweep(tmp_path, data_dir, monkeypatch):
    """Jobs of a sweep run one after another in one process. The trainer and module of a job refer to each
    other, so its model waited for Python's cyclic GC: 2 of 3 jobs' models were still alive (a 7B sweep would
    hold two models on the GPU). run_entry now collects after every job."""
    import transformers

    from conftest import compose
    from taskneurons.runtime.app import run_entry
    from taskneurons.train import train_job

    refs: list[weakref.ref] = []
    original = transformers.PreTrainedModel.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        refs.append(weakref.ref(self))

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", spy)
    monkeypatch.chdir(tmp_path)
    for seed in range(2):
        cfg = compose("train", overrides=["model=tiny_llama", "logger=csv", "benchmark=generalization12", "task=[sst2]",
                                          "data.max_train=16", "data.max_test=4", "optim.max_steps=2", f"seed={seed}",
                                          f"paths.output_root={tmp_path}", "neurons.max_examples=4", "resume=false",
                                          "eval.cls_scorers=[loglik]"])
        assert run_entry(cfg, train_job) is not None
        assert refs and all(r() is None for r in refs), f"after job {seed}: a model is still alive"
