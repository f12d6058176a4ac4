"""The Python API on a tiny model and plain Python data: scores, sets, deactivation, neuron-only training in a
plain loop, export to an HF folder, LAPE masks, NeuronConfig vs conf/neurons/task.yaml, and bad input."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

import taskneurons as tn
from conftest import compose
from taskneurons import CONF_DIR
from taskneurons.data.encoding import collate_sft, encode_example

SPEC = {"name": "sent", "kind": "classification", "prompt": "Review: {input}\nSentiment:",
        "labels": ["positive", "negative"], "metric": "accuracy"}
WORDS = ["great", "awful", "superb", "bad", "lovely", "dull", "fine", "boring"]
ROWS = [{"input": f"the film was {w}", "target": "positive" if i % 2 == 0 else "negative"} for i, w in enumerate(WORDS * 2)]


@pytest.fixture(scope="module")
def tiny():
    return tn.load_model("tiny_llama")


@pytest.fixture(scope="module")
def task():
    return tn.make_task(SPEC)


@pytest.fixture(scope="module")
def scores(tiny, task):
    model, tok = tiny
    return tn.score_neurons(model, tok, task, ROWS, batch_size=4)


def test_import_is_lazy_and_all_names_resolve():
    code = "import sys, taskneurons; assert 'torch' not in sys.modules; print(len(taskneurons.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(tn.__all__)
    for name in tn.__all__:
        assert getattr(tn, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tn.nope  # noqa: B018


def test_neuron_config_matches_the_hydra_group():
    """One description of the options: every NeuronConfig field is a key of conf/neurons/task.yaml with the
    same default, and the composed group converts to the default NeuronConfig."""
    raw = OmegaConf.load(CONF_DIR / "neurons" / "task.yaml")
    for f in dataclasses.fields(tn.NeuronConfig):
        assert f.name in raw, f"NeuronConfig.{f.name} is not a key of conf/neurons/task.yaml"
    composed = compose(overrides=["model=tiny_llama"])
    assert tn.NeuronConfig.from_hydra(composed.neurons) == tn.NeuronConfig()
    data = OmegaConf.load(CONF_DIR / "data" / "default.yaml")
    from taskneurons import api

    assert (data.max_prompt_tokens, data.max_target_tokens) == (api.MAX_PROMPT_TOKENS, api.MAX_TARGET_TOKENS)
    with pytest.raises(tn.ConfigError, match="neurons.reduction='median' must be one of mean, sum, abs_sum"):
        tn.NeuronConfig(reduction="median").check()
    with pytest.raises(tn.ConfigError, match="unknown NeuronConfig option"):
        tn.NeuronConfig().replace(proprtion=0.2)


def test_scores_select_and_random_control(tiny, scores):
    model, _ = tiny
    pools = tn.neuron_pools(model)
    assert scores.pool_sizes == {p.key: p.size for p in pools}
    assert all(scores.scores[k].shape == (n,) for k, n in scores.pool_sizes.items())
    nset = tn.select(scores, proportion=0.1)
    assert nset.counts() == {k: round(0.1 * n) for k, n in scores.pool_sizes.items()}
    top = nset.indices[(0, "up_proj")]
    rest = torch.ones(scores.pool_sizes[(0, "up_proj")], dtype=torch.bool)
    rest[top] = False
    assert scores.scores[(0, "up_proj")][top].min() >= scores.scores[(0, "up_proj")][rest].max()
    glob = tn.select(scores, proportion=0.1, scope="global")
    assert glob.count() == round(0.1 * glob.total()) and glob.meta["scope"] == "global"
    ctrl = tn.random_like(nset, seed=3)
    assert ctrl.counts() == nset.counts() and ctrl.fingerprint() == tn.random_like(nset, seed=3).fingerprint()
    assert ctrl.jaccard(nset) < 0.5
    w1 = tn.select(dataclasses.replace(scores, meta={**scores.meta, "matrices": "W1"}), 0.1)
    assert w1.indices[(0, "down_proj")].numel() == 0 and w1.indices[(0, "gate_proj")].numel() > 0


def test_set_algebra_save_load(tmp_path, scores):
    a, b = tn.select(scores, 0.1), tn.select(scores, 0.3)
    assert a.intersection(b).count() == a.count() and a.union(b).count() == b.count()
    path = a.save(tmp_path / "sent")
    back = tn.NeuronSet.load(path)
    assert back.fingerprint() == a.fingerprint() and back.meta == a.meta


def test_deactivated_restores_exactly_and_changes_the_output(tiny, task, scores):
    model, tok = tiny
    nset = tn.select(scores, 0.3)
    ids = tok("Review: the film was great\nSentiment:", return_tensors="pt").input_ids
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = model(ids).logits
    with tn.deactivated(model, nset):
        off_w = model(ids).logits
    with tn.deactivated(model, nset, path="hooks"):
        off_h = model(ids).logits
    assert not torch.allclose(base, off_w)
    torch.testing.assert_close(off_w, off_h)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError, match="inside"), tn.deactivated(model, nset):
        raise RuntimeError("inside")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    result = tn.evaluate_task(model, tok, task, ROWS, cls_scorers=("loglik", "generate"))
    assert result["n"] == len(ROWS) and 0 <= result["score"] <= 100 and "accuracy_generate" in result


def test_plain_loop_neuron_finetuning_then_export(tmp_path, task, scores):
    from transformers import AutoModelForCausalLM

    model, tok = tn.load_model("tiny_llama")  # its own copy: training changes it
    nset = tn.select(scores, 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deltas = tn.attach_deltas(model, nset)
    opt = torch.optim.AdamW(deltas.parameters(), lr=1e-2)
    batch = collate_sft([encode_example(tok, task, e, 256, 64) for e in tn.to_examples(task, ROWS)],
                        tok.pad_token_id, tok.eos_token_id)
    losses = []
    for _ in range(4):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    with pytest.raises(tn.ConfigError, match=r"deltas.merge\(\) first"):
        tn.export_hf(model, tok, tmp_path / "early")
    deltas.merge()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(("mlp" in k) for k in changed)
    up = nset.indices[(0, "up_proj")]
    diff = (after["model.layers.0.mlp.up_proj.weight"] - before["model.layers.0.mlp.up_proj.weight"]).abs().sum(1)
    assert bool((diff[up] > 0).all()) and int((diff > 0).sum()) == up.numel()  # only the selected rows moved

    folder = tn.export_hf(model, tok, tmp_path / "hf")
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok("Review: the film was dull\nSentiment:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
    again, tok2 = tn.load_model(str(folder))
    assert tok2("abc").input_ids == tok("abc").input_ids


def test_lape_round_trip_and_bad_shapes(tmp_path, tiny, task):
    model, tok = tiny
    inter = tn.select(tn.score_neurons(model, tok, task, ROWS, definition="intermediate"), 0.2)
    path = tn.export_lape([inter, tn.random_like(inter, 1)], tmp_path / "mask.pt")
    raw = torch.load(path, weights_only=True)
    assert len(raw) == 2 and len(raw[0]) == 2 and raw[0][0].dtype == torch.long
    back = tn.import_lape(path, model, names=["sent", "random"])
    assert back[0].fingerprint() == inter.fingerprint() and back[0].meta["definition"] == "intermediate"
    with tn.deactivated(model, back[0]):  # an imported set drives the same interventions
        pass
    with pytest.raises(tn.ConfigError, match="LAPE's masks are FFN intermediate units"):
        tn.export_lape(tn.select(tn.score_neurons(model, tok, task, ROWS[:4]), 0.1), tmp_path / "x.pt")
    with pytest.raises(tn.ConfigError, match=r"masks\[0\]: expected 2 layers"):
        tn.import_lape([[torch.tensor([1])]], model)
    with pytest.raises(tn.ConfigError, match="outside the layer's 128 intermediate units"):
        tn.import_lape([[torch.tensor([1]), torch.tensor([500])]], model)
    with pytest.raises(tn.ConfigError, match="1-D integer tensor"):
        tn.import_lape([[torch.tensor([0.5]), torch.tensor([1])]], model)


def test_bad_input_is_one_clear_error_before_any_work(tiny, task, scores, tiny_bloom):
    model, tok = tiny
    with pytest.raises(tn.ConfigError, match="model: expected a Hugging Face causal LM"):
        tn.score_neurons("tiny_llama", tok, task, ROWS)
    with pytest.raises(tn.ConfigError, match="examples: expected a list of dicts"):
        tn.score_neurons(model, tok, task, "rows.jsonl")
    with pytest.raises(tn.ConfigError, match=r"examples\[0\]: label 'meh' is not in tasks.sent.labels"):
        tn.make_task(SPEC, [{"input": "x", "target": "meh"}])
    with pytest.raises(tn.ConfigError, match=r"examples\[0\]: missing field 'input'"):
        tn.evaluate_task(model, tok, task, [{"text": "x", "target": "positive"}])
    with pytest.raises(tn.ConfigError, match="tasks.t.labels must list at least two"):
        tn.make_task({**SPEC, "name": "t", "labels": ["yes"]})
    with pytest.raises(tn.ConfigError, match="neurons.proportion=2 must be in"):
        tn.score_neurons(model, tok, task, ROWS, proportion=2)
    with pytest.raises(tn.ConfigError, match="no packaged task of that name"):
        tn.make_task("nosuchtask")
    with pytest.raises(tn.ConfigError, match="not a packaged model config"):
        tn.load_model("nosuchmodel")
    nset = tn.select(scores, 0.1)
    bloom, _ = tiny_bloom
    with pytest.raises(tn.ConfigError, match="whose FFN has other shapes"), tn.deactivated(bloom, nset):
        pass
    renamed = tn.NeuronSet(nset.indices, nset.pool_sizes, {**nset.meta, "model": "other"})
    with pytest.raises(tn.ConfigError, match="identified on model 'other', not 'tiny_llama'"):
        tn.attach_deltas(model, renamed)
    wrong_def = tn.NeuronSet(nset.indices, nset.pool_sizes, {**nset.meta, "definition": "intermediate"})
    with pytest.raises(tn.ConfigError, match=r"definition'\]='intermediate' but its pools are this model's 'output_units'"):
        tn.deactivated(model, wrong_def).__enter__()
    with pytest.raises(tn.ConfigError, match="path='mask' must be one of weights, hooks"):
        tn.deactivated(model, nset, path="mask").__enter__()
    unknown = type("Odd", (torch.nn.Module,), {})()
    unknown.config = type("C", (), {"model_type": "mamba"})()
    with pytest.raises(tn.ConfigError, match="model: model_type 'mamba' has no FFN adapter"):
        tn.neuron_pools(unknown)


def test_lightning_callbacks_train_only_the_set_and_switch_it_off(tmp_path, task, scores):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from taskneurons.lit.module import CausalLMModule

    model, tok = tn.load_model("tiny_llama")
    nset = tn.select(scores, 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = collate_sft([encode_example(tok, task, e, 256, 64) for e in tn.to_examples(task, ROWS)],
                        tok.pad_token_id, tok.eos_token_id)
    eval_cfg = OmegaConf.load(CONF_DIR / "eval" / "default.yaml")
    module = CausalLMModule(model, tok, eval_cfg, OmegaConf.create({"lr": 1e-2, "weight_decay": 0.0}))
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[tn.finetuning_callback(model, nset)])
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))  # one ready batch per step
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all("mlp" in k for k in changed)  # merged at the end: the deltas are in the weights
    assert tn.deactivation_callback(model, nset).path == "weights"


def test_packaged_tasks_and_a_generation_task_evaluate(tiny):
    model, tok = tiny
    xsum = tn.make_task("xsum")  # a packaged task config; the rows come from the caller
    assert xsum.kind == "generation" and xsum.prompt_fields == ["input"]
    rows = [{"input": "the cat sat on the mat all day", "target": "cat sits"},
            {"input": "rain fell over the city", "target": "rain in city", "references": ["city rain"]}]
    result = tn.evaluate_task(model, tok, xsum, rows, gen_max_new_tokens=3)
    assert result["n"] == 2 and result["scorer"] == "generate" and 0 <= result["rougeL"] <= 100
    assert len(result["samples"]) == 2 and result["per_example"]["ids"] == ["xsum-0", "xsum-1"]
    with pytest.raises(tn.ConfigError, match="unknown evaluation option"):
        tn.evaluate_task(model, tok, xsum, rows, max_new_tokens=3)
