"""Slow: the real SmolLM2-135M from its packaged GGUF, converted from scratch, on real starter data."""

from __future__ import annotations

import json
import time

import pytest
import pytorch_lightning as pl

from conftest import compose
from taskneurons.config import checked_task_specs
from taskneurons.data.datamodule import TaskDataModule
from taskneurons.data.loading import load_tasks
from taskneurons.lit.module import CausalLMModule
from taskneurons.models.ffn import ffn_matrices
from taskneurons.models.loading import ensure_converted_gguf, load_model_and_tokenizer

pytestmark = pytest.mark.slow


def test_smollm2_converts_once_and_beats_the_baselines(tmp_path):
    cfg = compose(overrides=["model=smollm2_135m", "benchmark=starter", "task=[rotten_tomatoes,bbc_topic]",
                             "data.max_test=48", "data.max_prompt_tokens=128", "eval.cls_scorers=[loglik]"])
    cache = tmp_path / "models"
    folder = ensure_converted_gguf(cfg.model, cache)
    info = json.loads((folder / "taskneurons_conversion.json").read_text())
    assert info["max_logit_diff"] <= 1e-4
    t = time.perf_counter()
    assert ensure_converted_gguf(cfg.model, cache) == folder and time.perf_counter() - t < 1.0  # reused

    model, tok = load_model_and_tokenizer(cfg.model, cache)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    mats = ffn_matrices(model)
    assert len(mats) == 90 and {m.out_features for m in mats} == {1536, 576}

    specs = checked_task_specs(cfg)
    data = load_tasks(specs, None, 0, int(cfg.data.max_test), int(cfg.seed), splits=("test",))
    module = CausalLMModule(model, tok, cfg.eval)
    module.set_eval_tasks(specs)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, dataloaders=TaskDataModule(tok, data, cfg.data).test_dataloader(), verbose=False)
    rt, bbc = module.results["rotten_tomatoes"], module.results["bbc_topic"]
    assert rt["n"] == 48 and bbc["n"] == 48
    assert rt["accuracy_loglik"] > rt["majority_baseline"], rt
    assert bbc["accuracy_loglik"] > bbc["chance"] + 10, bbc
