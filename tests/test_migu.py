"""MIGU on tiny models: the rows it holds are bit-identical after a step, weights and AdamW state alike."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import compose
from taskneurons.continual.migu import MIGUMasking, block_linears, frozen_rows
from taskneurons.continual.orders import validate_continual
from taskneurons.models.loss import target_only_loss
from test_neurons import batch_for


def test_frozen_rows_by_hand():
    mag = torch.tensor([5.0, 1.0, 3.0, 9.0, 7.0])
    # quantile 0.6 of (1, 3, 5, 7, 9) = 6.6: rows 3 and 4 (9, 7) update, the rest are held
    assert frozen_rows(mag, 0.6).tolist() == [0, 1, 2]
    assert frozen_rows(mag, 0.0).tolist() == [1]  # only the minimum is not above the 0 quantile


def test_block_linears_cover_attention_and_ffn(tiny_llama, tiny_gpt2):
    names = {x.name.split(".", 1)[1] for x in block_linears(tiny_llama[0])}
    assert names == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    gpt2 = block_linears(tiny_gpt2[0])
    assert {x.unit_dim for x in gpt2} == {1} and len(gpt2) == 4 * len(tiny_gpt2[0].transformer.h)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_migu_step_moves_only_the_high_magnitude_rows(request, fixture):
    model, tok = request.getfixturevalue(fixture)
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(True)
    layers = block_linears(model)
    cb = MIGUMasking(layers, 0.7)
    cb.attach()
    outputs: dict[str, torch.Tensor] = {}
    spy = [x.module.register_forward_hook(lambda m, i, o, n=x.name: outputs.__setitem__(n, o.detach()))
           for x in layers]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    for step in range(3):
        batch = batch_for(tok, 3, step)
        target_only_loss(model, batch).backward()
        weights = {x.name: x.module.weight.detach().clone() for x in layers}
        state = {x.name: {k: v.clone() for k, v in opt.state.get(x.module.weight, {}).items() if torch.is_tensor(v)}
                 for x in layers}
        cb.hold(opt)
        opt.step()
        cb.release(opt)
        opt.zero_grad()
        moved_any = False
        for x in layers:
            mag = outputs[x.name].abs().reshape(-1, outputs[x.name].shape[-1]).sum(0)
            held = (mag <= torch.quantile(mag.double(), 0.7).float()).nonzero().flatten()
            assert torch.equal(cb.last_frozen[x.name], held), x.name  # the rule computed by hand
            keep = torch.ones(mag.numel(), dtype=torch.bool)
            keep[held] = False
            d = x.unit_dim
            w = x.module.weight.detach()
            assert torch.equal(w.index_select(d, held), weights[x.name].index_select(d, held)), (step, x.name)
            for k, v in opt.state[x.module.weight].items():
                if torch.is_tensor(v) and v.shape == w.shape:
                    want = state[x.name][k].index_select(d, held) if k in state[x.name] else 0 * v.index_select(d, held)
                    assert torch.equal(v.index_select(d, held), want), (step, x.name, k)
            moved_any |= not torch.equal(w.index_select(d, keep.nonzero().flatten()),
                                         weights[x.name].index_select(d, keep.nonzero().flatten()))
        assert moved_any
    cb.detach()
    for h in spy:
        h.remove()


def test_migu_continual_stage_holds_the_unselected_rows(tmp_path):
    from taskneurons.continual.loop import Context, OffsetLogger, train_stage
    from taskneurons.continual.methods import build_method
    from taskneurons.runtime.resume import JobState
    from taskneurons.runtime.session import open_session

    cfg = compose("continual", ["continual/scale=tiny", "continual/method=migu", "continual.order=[cl_agnews]",
                                "logger=none", "optim.lr=1e-2", "optim.max_steps=1", "data.max_test=2"])
    assert validate_continual(cfg) == []
    session = open_session(cfg, tmp_path, {}, need_train=["cl_agnews"])
    ctx = Context(session, JobState(tmp_path, "continual", "test"), ["cl_agnews"], ["cl_agnews"], OffsetLogger(None))
    method = build_method(cfg)
    method.setup(ctx)
    stage = method.stages(ctx.order)[0]
    before = {n: t.clone() for n, t in session.model.named_parameters()}
    method.prepare(ctx, stage)
    train_stage(ctx, method, stage)
    after = dict(session.model.named_parameters())
    names = {m: n for n, m in session.model.named_modules()}
    frozen = method.masking.last_frozen
    assert len(frozen) == len(block_linears(session.model))
    for x in method.masking.layers:
        w = names[x.module] + ".weight"
        held = frozen[x.name]
        assert 0 < held.numel() < after[w].shape[0]
        assert torch.equal(after[w][held], before[w][held]), w
        assert not torch.equal(after[w], before[w]), f"{w}: no selected row moved"


@pytest.mark.parametrize("q", ["1.0", "-0.1"])
def test_migu_quantile_outside_range_is_named(q):
    problems = validate_continual(compose("continual", ["continual/method=migu", f"continual.method.quantile={q}"]))
    assert any(f"continual.method.quantile={float(q)} must be in [0, 1)" in p for p in problems), problems
