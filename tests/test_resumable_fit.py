"""The one resumable fit (``lit/fit.py``) of train.py and the continual stages: a job killed after its
training finished, before it recorded the result, restores the trained state instead of training again."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from conftest import compose


def test_a_stage_killed_after_training_is_restored_not_trained_again(tmp_path, data_dir, monkeypatch):
    from taskneurons.continual.loop import train_stage
    from taskneurons.continual.methods import build_method
    from test_continual import ncft_stage

    cfg, ctx, method, stage = ncft_stage(tmp_path, f"neurons.store_dir={tmp_path}/store")
    session, state = ctx.session, ctx.state
    pretrained = {n: t.clone() for n, t in session.model.state_dict().items()}
    method.prepare(ctx, stage)
    first = train_stage(ctx, method, stage)
    trained = {n: t.clone() for n, t in session.model.state_dict().items()}
    assert first["resumed_from_batch"] == 0 and (state.dir / "stage0_train_checkpoint.pt").is_file()
    assert any(not torch.equal(trained[n], pretrained[n]) for n in trained), "the fit trained something"

    # the kill: the process ends before the stage is recorded; a new process starts from the pre-trained model
    session.model.load_state_dict(pretrained)
    method = build_method(cfg)
    method.setup(ctx)
    method.prepare(ctx, stage)

    def no_fit(*args, **kwargs):
        raise AssertionError("training ran again although its checkpoint holds the finished training")

    monkeypatch.setattr(pl.Trainer, "fit", no_fit)
    again = train_stage(ctx, method, stage)
    assert again["resumed_from_batch"] == again["batches"] == first["batches"]
    assert again["loss_first"] == first["loss_first"] and again["loss_last"] == first["loss_last"]
    restored = session.model.state_dict()
    for n in trained:
        assert torch.equal(restored[n], trained[n]), f"{n}: the restored model is not the trained one"


def test_train_killed_after_training_ends_with_the_uninterrupted_result(tmp_path, data_dir, monkeypatch):
    """train.py, neuron fine-tuning with per-task masks: the job state as a kill after the fit leaves it
    (the finished training checkpoint, no 'after' evaluation, no final result)."""
    from taskneurons.runtime.app import run_entry
    from taskneurons.train import train_job

    monkeypatch.chdir(tmp_path)
    cfg = compose("train", overrides=["model=tiny_llama", "logger=csv", "task=[sst2,paws]", "data.max_train=8",
                                      "data.max_test=2", "optim.max_steps=2", "optim.lr=1e-2",
                                      "intervention=finetune_neurons", "intervention.combine=per_task",
                                      f"paths.output_root={tmp_path}/out", f"neurons.store_dir={tmp_path}/store",
                                      "neurons.max_examples=4", "eval.cls_scorers=[loglik]", "eval_before=false"])
    first = run_entry(cfg, train_job)
    assert first["training"]["resumed_from_batch"] == 0 and first["neuron_sets"]["combine"] == "per_task"
    state = next((tmp_path / "out" / "state" / "train").iterdir())
    assert (state / "train_checkpoint.pt").is_file()
    for name in ("final.json", "after.json"):
        (state / name).unlink()
    monkeypatch.setattr(pl.Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    again = run_entry(cfg, train_job)
    assert again["training"]["resumed_from_batch"] == again["training"]["batches"] == first["training"]["batches"]
    assert again["training"]["model_fingerprint"] == first["training"]["model_fingerprint"]
    def scores(m: dict) -> dict:  # timings differ between runs
        return {t: {k: v for k, v in r.items() if "seconds" not in k} for t, r in m["tasks"].items()}

    assert scores(again) == scores(first)
