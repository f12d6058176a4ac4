"""The one resumable fit (``lit/fit.py``) of train.py and the continual stages: a job killed after its
training finished, before it recorded the result, restores the trained state instead of training again."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from conftest import compose


def test_a_stage_killed_after_training_is_restored_not_trained_again(tmp_path, data_dir, monkeypatch):
    from taskneurons.continual.loop import Context, OffsetLogger, train_stage
    from taskneurons.continual.methods import build_method
    from taskneurons.runtime.resume import JobState
    from taskneurons.runtime.session import open_session

    cfg = compose("continual", ["continual/scale=tiny", "continual/method=ncft", "continual.order=[cl_agnews]",
                                "logger=none", "optim.lr=1e-2", "optim.max_steps=2", "data.max_test=2",
                                f"neurons.store_dir={tmp_path}/store"])
    session = open_session(cfg, tmp_path, {}, need_train=["cl_agnews"])
    state = JobState(tmp_path, "continual", "test")
    ctx = Context(session, state, ["cl_agnews"], ["cl_agnews"], OffsetLogger(None))
    method = build_method(cfg)
    method.setup(ctx)
    stage = method.stages(ctx.order)[0]
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
