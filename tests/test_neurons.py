"""Neuron mechanisms on tiny models, each against a known answer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from taskneurons.data.encoding import collate_sft, encode_example
from taskneurons.data.examples import Example
from taskneurons.data.tasks import TaskSpec
from taskneurons.errors import ConfigError
from taskneurons.models.loss import target_only_loss
from taskneurons.neurons.attribution import attribute, scope_mask
from taskneurons.neurons.masking import deactivated, hook_replaced
from taskneurons.neurons.neuronset import NeuronSet, random_like, select_top
from taskneurons.neurons.pools import neuron_pools
from taskneurons.neurons.sparse_finetune import NeuronDeltas

SPEC = TaskSpec("toy", "classification", "Review: {input}\nSentiment:", "accuracy", {"type": "local", "path": "x"},
                labels=("positive", "negative"))
TEXTS = ["a fine film", "dull and long", "wonderful acting throughout", "bad", "I loved every minute", "meh"]


def batch_for(tok, n: int = 4, offset: int = 0):
    exs = [Example(f"e{i}", {"input": TEXTS[(i + offset) % len(TEXTS)]}, SPEC.labels[i % 2]) for i in range(n)]
    return collate_sft([encode_example(tok, SPEC, e, 64, 8) for e in exs], tok.pad_token_id, tok.eos_token_id)



def in_dtype(loaded, dtype: torch.dtype):
    """The shared session model itself (fp32), or a copy of it in ``dtype``."""
    model, tok = loaded
    return (model, tok) if dtype == torch.float32 else (copy.deepcopy(model).to(dtype), tok)

def test_target_only_loss_equals_the_hf_loss(tiny_model):
    model, tok = tiny_model
    batch = batch_for(tok)
    torch.testing.assert_close(target_only_loss(model, batch), model(**batch).loss)


def brute_force_scores(model, batches, pools, reduction, token_scope):
    """Independent path: full HF loss, activations captured with retain_grad, autograd per batch."""
    out = {p.key: torch.zeros(p.size) for p in pools}
    for batch in batches:
        acts = {}
        hooks = []
        for p in pools:
            def grab(t, key=p.key, acts=acts):
                acts[key] = t
            if p.act_side == "output":
                hooks.append(p.act.module.register_forward_hook(lambda m, i, o, g=grab: g(o)))
            else:
                hooks.append(p.act.module.register_forward_pre_hook(lambda m, i, g=grab: g(i[0])))
        with torch.enable_grad():
            for prm in model.parameters():
                prm.requires_grad_(True)
            loss = model(**batch).loss
            keys = list(acts)
            grads = torch.autograd.grad(loss, [acts[k] for k in keys])
            for prm in model.parameters():
                prm.requires_grad_(False)
        for h in hooks:
            h.remove()
        mask = scope_mask(batch, token_scope)
        for k, g in zip(keys, grads, strict=True):
            ga = (g * acts[k]).detach()
            if reduction == "abs_sum":
                out[k] += (ga * mask[..., None]).sum(1).abs().sum(0)
            elif reduction == "mean":
                out[k] += ga[mask].abs().mean(0)
            else:
                out[k] += ga[mask].abs().sum(0)
    return out


@pytest.mark.parametrize("definition", ["output_units", "intermediate"])
@pytest.mark.parametrize("reduction,token_scope", [("mean", "target"), ("sum", "all"), ("abs_sum", "target")])
def test_attribution_matches_brute_force(tiny_model, definition, reduction, token_scope):
    model, tok = tiny_model
    pools = neuron_pools(model, definition)
    batches = [batch_for(tok, 4, 0), batch_for(tok, 3, 2)]
    scores, means = attribute(model, batches, pools, reduction, token_scope)
    want = brute_force_scores(model, batches, pools, reduction, token_scope)
    for p in pools:
        torch.testing.assert_close(scores[p.key], want[p.key], rtol=1e-4, atol=1e-7)
        assert scores[p.key].dtype == torch.float32 and means[p.key].shape == (p.size,)
    assert all(not prm.requires_grad or True for prm in model.parameters())
    assert all(prm.grad is None for prm in model.parameters()), "attribution must not compute weight gradients"


@pytest.mark.parametrize("reduction,token_scope", [("mean", "target"), ("sum", "all"), ("abs_sum", "target")])
def test_micro_batches_give_the_scores_of_whole_batches(tiny_llama, reduction, token_scope):
    """Splitting batches (peak memory follows the micro-batch) changes no score: the loss is reweighted by
    each micro-batch's share of the target tokens and the mean divides by the whole batch's tokens."""
    from taskneurons.neurons.attribution import split_batch

    model, tok = tiny_llama
    pools = neuron_pools(model)
    batches = [batch_for(tok, 4, 0), batch_for(tok, 3, 2)]
    whole = attribute(model, batches, pools, reduction, token_scope)
    for size in (1, 2):
        micro = attribute(model, batches, pools, reduction, token_scope, micro_batch_size=size)
        for p in pools:
            torch.testing.assert_close(micro[0][p.key], whole[0][p.key], rtol=1e-5, atol=1e-8)
            torch.testing.assert_close(micro[1][p.key], whole[1][p.key], rtol=1e-5, atol=1e-8)
    parts = split_batch(batches[0], 3)
    assert [p["input_ids"].shape[0] for p in parts] == [3, 1]
    assert all(bool(p["attention_mask"][:, -1].any()) for p in parts), "each part cut to its last real column"


def test_attribution_known_answer_on_a_two_layer_linear_toy():
    """h = W1 x (pool of 5 units), L = mean_t w2·h_t: dL/dh_tu = w2_u / T, so every reduction has a
    closed form the recorder must reproduce."""
    from taskneurons.models.ffn import FFNMatrix
    from taskneurons.neurons.attribution import _Recorder
    from taskneurons.neurons.pools import Pool

    torch.manual_seed(0)
    T = 3
    x, w1, w2 = torch.randn(1, T, 4), torch.randn(5, 4), torch.randn(5)
    lin = torch.nn.Linear(4, 5, bias=False)
    lin.weight.data.copy_(w1)
    lin.weight.requires_grad_(False)
    m = FFNMatrix(0, "fc", lin, "in", 5, 4, False)
    pool = Pool((0, "fc"), 5, (m,), (), m, "output")
    h = (x @ w1.T)[0]
    ga = h * w2 / T  # [T, 5]
    expected = {"mean": ga.abs().mean(0), "sum": ga.abs().sum(0), "abs_sum": ga.sum(0).abs()}
    for reduction, want in expected.items():
        rec = _Recorder([pool], reduction, torch.device("cpu"))
        rec.attach_pools()
        rec.mask = torch.ones(1, T, dtype=torch.bool)
        (lin(x.clone().requires_grad_(True)) @ w2).mean().backward()
        rec.detach()
        torch.testing.assert_close(rec.scores[(0, "fc")], want)
        assert lin.weight.grad is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_zeroing_equals_hook_zeroing_and_restores_exactly(tiny_model, dtype):
    model, tok = in_dtype(tiny_model, dtype)
    batch = batch_for(tok)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for definition in ("output_units", "intermediate"):
        pools = neuron_pools(model, definition)
        sizes = {p.key: p.size for p in pools}
        nset = NeuronSet(random_like({k: max(1, n // 4) for k, n in sizes.items()}, sizes, 3), sizes, {"definition": definition})
        with deactivated(pools, nset):
            by_weights = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with hook_replaced(pools, nset, "zero"):
            by_hooks = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(by_weights, by_hooks, **tol)
        assert not torch.allclose(by_weights, base), "switching off a quarter of the FFN must change the output"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} not restored bit-exactly"


def test_mean_replacement_uses_mean_activations(tiny_llama):
    model, tok = tiny_llama
    pools = neuron_pools(model)
    scores, means = attribute(model, [batch_for(tok)], pools)
    sizes = {p.key: p.size for p in pools}
    nset = NeuronSet(select_top(scores, sizes, 0.1), sizes, {"definition": "output_units"}, scores, means)
    seen = {}
    p0 = pools[0]
    with hook_replaced(pools, nset, "mean"):
        # registered after the replacement hook, so it sees the replaced output
        h = p0.act.module.register_forward_hook(lambda m, i, o: seen.update(o=o))
        model(input_ids=batch_for(tok)["input_ids"])
    h.remove()
    idx = nset.indices[p0.key]
    torch.testing.assert_close(seen["o"][0, :, idx], means[p0.key][idx].expand(seen["o"].shape[1], -1))


def test_selection_counts_scopes_and_random_controls():
    sizes = {(0, "a"): 10, (0, "b"): 20, (1, "a"): 10}
    scores = {k: torch.arange(n, dtype=torch.float32) * (1 + i) for i, (k, n) in enumerate(sizes.items())}
    per = select_top(scores, sizes, 0.2)
    assert {k: v.tolist() for k, v in per.items()} == {(0, "a"): [8, 9], (0, "b"): [16, 17, 18, 19], (1, "a"): [8, 9]}
    glob = select_top(scores, sizes, 0.2, "global")
    assert sum(v.numel() for v in glob.values()) == 8 and glob[(0, "b")].numel() >= 4
    counts = {k: v.numel() for k, v in per.items()}
    r1, r2, r3 = random_like(counts, sizes, 1), random_like(counts, sizes, 1), random_like(counts, sizes, 2)
    assert {k: v.numel() for k, v in r1.items()} == counts
    assert all(torch.equal(r1[k], r2[k]) for k in sizes) and any(not torch.equal(r1[k], r3[k]) for k in sizes)


def test_set_algebra_known_answers():
    sizes = {(0, "m"): 10, (1, "m"): 10}
    a = NeuronSet({(0, "m"): torch.tensor([1, 2, 3]), (1, "m"): torch.tensor([5])}, sizes, {"definition": "d", "task": "a"})
    b = NeuronSet({(0, "m"): torch.tensor([3, 4]), (1, "m"): torch.tensor([5, 6])}, sizes, {"definition": "d", "task": "b"})
    assert a.union(b).indices[(0, "m")].tolist() == [1, 2, 3, 4]
    assert a.intersection(b).count() == 2
    assert a.jaccard(b) == pytest.approx(2 / 6)
    assert a.jaccard(b, per_layer=True) == {0: pytest.approx(1 / 4), 1: pytest.approx(1 / 2)}
    other = NeuronSet({(0, "m"): torch.tensor([1])}, {(0, "m"): 10}, {"definition": "d"})
    with pytest.raises(ValueError, match="different spaces"):
        a.union(other)


def test_save_load_round_trip_and_tamper_detection(tmp_path):
    sizes = {(0, "gate_proj"): 8, (0, "down_proj"): 4}
    scores = {k: torch.rand(n, generator=torch.Generator().manual_seed(n)) for k, n in sizes.items()}
    nset = NeuronSet(select_top(scores, sizes, 0.5), sizes, {"definition": "output_units", "model": "m"}, scores, scores)
    nset.save(tmp_path / "s")
    back = NeuronSet.load(tmp_path / "s.json")
    assert back.fingerprint() == nset.fingerprint() and back.meta == nset.meta
    assert all(torch.equal(back.scores[k], scores[k]) for k in sizes)
    blob = (tmp_path / "s.safetensors").read_bytes()
    (tmp_path / "s.safetensors").write_bytes(blob[:-3] + b"\x00\x00\x01")
    with pytest.raises(ConfigError, match="checksum mismatch"):
        NeuronSet.load(tmp_path / "s")
    (tmp_path / "s.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ConfigError, match="checksum mismatch"):
        NeuronSet.load(tmp_path / "s")
    (tmp_path / "s.json").unlink()
    with pytest.raises(ConfigError, match="incomplete"):
        NeuronSet.load(tmp_path / "s")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("definition", ["output_units", "intermediate"])
def test_neuron_finetuning_leaves_everything_else_bit_identical(tiny_model, definition, dtype):
    model, tok = in_dtype(tiny_model, dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pools = neuron_pools(model, definition)
    sizes = {p.key: p.size for p in pools}
    nset = NeuronSet(random_like({k: max(1, n // 10) for k, n in sizes.items()}, sizes, 0), sizes, {"definition": definition})
    for p in model.parameters():
        p.requires_grad_(False)
    deltas = NeuronDeltas(pools, nset)
    deltas.attach()
    opt = torch.optim.AdamW(deltas.parameters(), lr=1e-2, weight_decay=0.1)
    assert deltas.n_trainable() == sum(nset.indices[p.key].numel() * p.n_params_per_unit() for p in pools)
    batch = batch_for(tok)
    for _ in range(3):
        opt.zero_grad()
        target_only_loss(model, batch).backward()
        opt.step()
    n_state = sum(s.numel() for st in opt.state.values() for s in st.values() if torch.is_tensor(s) and s.dim() > 0)
    assert n_state == 2 * deltas.n_trainable(), "optimizer state covers the selected rows only"
    # the trainable rows and AdamW's moments are fp32 whatever the base's dtype
    assert all(p.dtype == torch.float32 for p in deltas.parameters())
    assert all(s.dtype == torch.float32 for st in opt.state.values() for s in st.values() if torch.is_tensor(s) and s.dim() > 0)
    with torch.no_grad():
        hooked = model(**batch).logits
    deltas.merge()
    with torch.no_grad():
        merged = model(**batch).logits
    # bf16: the merge rounds W + Δ once, the hooks add the rounded Δx to the rounded Wx
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-2}
    torch.testing.assert_close(hooked.float(), merged.float(), **tol)
    after = model.state_dict()
    owned = {}
    for p in pools:
        idx = nset.indices[p.key]
        for m in p.rows:
            owned.setdefault(id(m.weight), []).append((m, 0, idx))
            if m.bias is not None:
                owned.setdefault(id(m.bias), []).append((m, "bias", idx))
        for m in p.cols:
            owned.setdefault(id(m.weight), []).append((m, 1, idx))
    changed = 0
    for name, prm in model.named_parameters():
        if id(prm) not in owned:
            assert torch.equal(after[name], before[name]), f"{name} changed but holds no selected neuron"
            continue
        for m, dim, idx in owned[id(prm)]:
            old = before[name].t() if (m.transposed and dim != "bias") else before[name]
            new = after[name].t() if (m.transposed and dim != "bias") else after[name]
            d = 0 if dim == "bias" else dim
            keep = torch.ones(new.shape[d], dtype=torch.bool)
            keep[idx] = False
            assert torch.equal(new.index_select(d, keep.nonzero()[:, 0]), old.index_select(d, keep.nonzero()[:, 0])), name
            changed += int(not torch.equal(new.index_select(d, idx), old.index_select(d, idx)))
    assert changed > 0, "the selected rows must have been trained"
    model.load_state_dict(before)  # the session fixture is shared


def test_delta_rows_train_exactly_like_the_weights_themselves(tiny_llama):
    """At 100 % of the FFN, AdamW on zero-initialised deltas takes the same steps as AdamW on the FFN
    weights directly (d(W+Δ)/dΔ = 1): the merged model equals the directly trained one."""
    model, tok = tiny_llama
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pools = neuron_pools(model)
    sizes = {p.key: p.size for p in pools}
    batch = batch_for(tok)

    def run_deltas(prop):
        nset = NeuronSet(select_top(attribute(model, [batch], pools)[0], sizes, prop), sizes, {"definition": "output_units"})
        deltas = NeuronDeltas(pools, nset)
        deltas.attach()
        opt = torch.optim.AdamW(deltas.parameters(), lr=1e-2, weight_decay=0.0)
        losses = []
        for _ in range(12):
            opt.zero_grad()
            loss = target_only_loss(model, batch)
            losses.append(float(loss.detach()))
            loss.backward()
            opt.step()
        deltas.merge()
        return losses

    losses = run_deltas(0.1)
    assert losses[-1] < losses[0] - 0.4, losses  # 10 % of the neurons already learn
    model.load_state_dict(before)
    run_deltas(1.0)
    via_deltas = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(before)
    weights = [m.weight for p in pools for m in p.rows]
    for w in weights:
        w.requires_grad_(True)
    opt = torch.optim.AdamW(weights, lr=1e-2, weight_decay=0.0)
    for _ in range(12):
        opt.zero_grad()
        target_only_loss(model, batch).backward()
        opt.step()
    for w in weights:
        w.requires_grad_(False)
        w.grad = None
    for k, v in model.state_dict().items():
        torch.testing.assert_close(via_deltas[k], v, rtol=1e-4, atol=1e-6)
    model.load_state_dict(before)


def test_cross_entropy_reference_is_the_hf_shift():
    # guards the meaning of "target tokens": label t is predicted at position t-1
    logits = torch.randn(1, 4, 7)
    labels = torch.tensor([[-100, 3, 5, -100]])
    manual = F.cross_entropy(logits[0, :-1][labels[0, 1:] != -100], labels[0, 1:][labels[0, 1:] != -100])
    assert manual.isfinite()


@pytest.mark.parametrize("definition", ["output_units", "intermediate"])
def test_unit_params_describe_every_parameter_a_neuron_owns(tiny_model, definition):
    """Pool.unit_params, the one description of a neuron's parameters: unit axis first with the pool's
    size, as many numbers per unit as n_params_per_unit, views into the model (a write reaches it), and
    under output_units every FFN weight and bias listed exactly once (GPT-2's Conv1D transposed)."""
    import copy

    from taskneurons.neurons.pools import neuron_pools

    model = copy.deepcopy(tiny_model[0])  # the fixture's model is shared: written to below
    pools = neuron_pools(model, definition)
    owners: list[int] = []
    for p in pools:
        ups = p.unit_params()
        assert len({u.name for u in ups}) == len(ups) and all(u.name.startswith(f"{p.key[0]}.{p.key[1]}/") for u in ups)
        assert all(u.tensor().shape[0] == p.size for u in ups)
        assert sum(u.tensor()[0].numel() for u in ups) == p.n_params_per_unit()
        owners += [id(u.matrix.bias if u.kind == "b" else u.matrix.weight) for u in ups]
    with torch.no_grad():
        up = pools[-1].unit_params()[-1]
        up.tensor()[1].fill_(7.0)
        owner = up.matrix.bias if up.kind == "b" else up.matrix.weight
        assert (owner == 7.0).sum() == up.tensor()[1].numel()  # the write reached the model's own tensor
    if definition == "output_units":
        assert len(owners) == len(set(owners))
