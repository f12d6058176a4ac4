"""The LightningModule: SFT loss on target tokens only, and a short fit that learns."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from taskneurons.data.datamodule import TaskDataModule
from taskneurons.data.encoding import collate_sft, encode_example
from taskneurons.data.examples import Example
from taskneurons.data.loading import TaskData
from taskneurons.data.tasks import TaskSpec
from taskneurons.lit.module import CausalLMModule
from taskneurons.models.loading import load_model_and_tokenizer

SPEC = TaskSpec("toy", "classification", "Q: {input}\nA:", "accuracy", {"type": "local", "path": "x"}, labels=("yes", "no"))
DATA_CFG = OmegaConf.create(dict(max_prompt_tokens=32, max_target_tokens=8, batch_size=4, eval_batch_size=4, num_workers=0))
EVAL_CFG = OmegaConf.create(dict(cls_scorers=["loglik", "generate"], primary_cls_scorer="loglik", loglik_norm="sum",
                                 match="exact", cls_max_new_tokens=3, gen_max_new_tokens=4, keep_samples=2))
MODEL_CFG = OmegaConf.create(dict(name="tiny", source="tiny", dtype="float32", init_seed=0,
                                  config=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, num_key_value_heads=1)))


def toy_examples(n: int) -> list[Example]:
    return [Example(f"e{i}", {"input": f"is {i} even"}, "yes" if i % 2 == 0 else "no") for i in range(n)]


def test_loss_counts_target_tokens_only():
    model, tok = load_model_and_tokenizer(MODEL_CFG)
    batch = collate_sft([encode_example(tok, SPEC, e, 32, 8) for e in toy_examples(3)], tok.pad_token_id, tok.eos_token_id)
    module = CausalLMModule(model, tok, EVAL_CFG)
    loss = module.training_step(batch, 0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    manual = F.cross_entropy(logits[:, :-1][keep], labels[keep])
    torch.testing.assert_close(loss, manual)


def test_fit_lowers_loss_and_test_loop_reports_every_task(tmp_path):
    pl.seed_everything(0, verbose=False)
    model, tok = load_model_and_tokenizer(MODEL_CFG)
    data = {"toy": TaskData(SPEC, toy_examples(32), toy_examples(8))}
    dm = TaskDataModule(tok, data, DATA_CFG, seed=0)
    module = CausalLMModule(model, tok, EVAL_CFG, OmegaConf.create(dict(lr=3e-3, weight_decay=0.0)))
    module.set_eval_tasks([SPEC])
    batch = next(iter(dm.train_dataloader()))
    before = float(model(**batch).loss)
    model.train()
    trainer = pl.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    model.eval()
    after = float(model(**batch).loss)
    assert after < before * 0.7, (before, after)
    trainer.test(module, dataloaders=dm.test_dataloader(), verbose=False)
    res = module.results["toy"]
    assert res["n"] == 8 and 0 <= res["accuracy_loglik"] <= 100 and "accuracy_generate" in res
    assert len(module.samples()["toy"]) == 2


def test_loss_recorder_first_and_last_do_not_overlap_on_a_short_run():
    from taskneurons.lit.losses import LossRecorder

    r = LossRecorder()
    assert r.first() is None and r.last() is None
    r.losses = [5.0, 4.0, 3.0, 2.0, 1.0]  # a 5-batch continual stage: was 3.0 and 3.0 (the same 5 batches)
    assert (r.first(), r.last()) == (4.5, 1.5)
    r.losses = [float(i) for i in range(20)]
    assert (r.first(), r.last()) == (2.0, 17.0)
    r.losses = [3.0]
    assert (r.first(), r.last()) == (3.0, 3.0)
