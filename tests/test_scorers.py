"""The neuron scorers (neurons.method) against known answers: a hand-set toy LM and the tiny models."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import compose
from taskneurons.models.ffn import FFNMatrix
from taskneurons.models.loss import target_only_loss
from taskneurons.neurons.attribution import attribute
from taskneurons.neurons.identify import _attr_dir, check_ablation_sample, validate_neurons_config
from taskneurons.neurons.masking import deactivated
from taskneurons.neurons.neuronset import NeuronSet, select_top
from taskneurons.neurons.pools import Pool, neuron_pools
from taskneurons.neurons.scorers import (
    SCORERS,
    ScoringInput,
    ig_token_attributions,
    lape_scores,
    sample_units,
    score,
    sft_loss,
)
from test_neurons import batch_for

# --- a position-wise toy LM with hand-set weights: e = E[x], a1 = W1 e, a2 = W2 a1, logits = H a2 ---------


class _Body(nn.Module):
    def __init__(self, emb: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(emb.clone(), freeze=False)
        self.fc1 = nn.Linear(w1.shape[1], w1.shape[0], bias=False)
        self.fc2 = nn.Linear(w2.shape[1], w2.shape[0], bias=False)
        self.fc1.weight.data.copy_(w1)
        self.fc2.weight.data.copy_(w2)

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return (self.fc2(self.fc1(self.embed(input_ids))),)


class ToyLM(nn.Module):
    """Just enough of an HF causal LM for the scorers: base_model, input/output embeddings, config."""

    def __init__(self, emb, w1, w2, head):
        super().__init__()
        self.body = _Body(emb, w1, w2)
        self.head = nn.Linear(head.shape[1], head.shape[0], bias=False)
        self.head.weight.data.copy_(head)
        self.config = SimpleNamespace()

    @property
    def base_model(self):
        return self.body

    def get_input_embeddings(self):
        return self.body.embed

    def get_output_embeddings(self):
        return self.head

    def pools(self) -> list[Pool]:
        m1 = FFNMatrix(0, "fc1", self.body.fc1, "in", 3, 3, False)
        m2 = FFNMatrix(0, "fc2", self.body.fc2, "out", 3, 3, False)
        return [Pool(m.key, 3, (m,), (), m, "output") for m in (m1, m2)]


K = 20.0  # the target's logit is ~K below the others: p_y ~ e^-K, so L = -logit_y + LSE(others) to fp32 precision


def linear_toy() -> tuple[ToyLM, dict]:
    """Token 0 embeds to (1.5, 1, 0.5); W1 = W2 = I; target token 2's logit is w·a_0 - K·a_1, the other logits
    read only a_2: the loss is linear in a_0 (dL/da_0 = -w) with slope exactly known."""
    emb = torch.tensor([[1.5, 1.0, 0.5], [0.3, -0.2, 0.7], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    head = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -0.5], [0.8, -K, 0.0], [0.0, 0.0, 0.3]])
    model = ToyLM(emb, torch.eye(3), torch.eye(3), head)
    batch = {"input_ids": torch.tensor([[0, 1]]), "attention_mask": torch.ones(1, 2, dtype=torch.long),
             "labels": torch.tensor([[-100, 2]])}
    return model, batch


def test_grad_x_act_is_the_first_order_term_of_exact_ablation_when_the_loss_is_linear():
    model, batch = linear_toy()
    pools = model.pools()
    inp = ScoringInput(model, [batch], pools, "mean", "target")
    gxa, _ = score("grad_x_act", inp)
    exact, _ = score("exact_ablation", inp)
    # unit 0 (of fc1, and of fc2 which here equals it): dL/da_0 = -0.8, a_0 = 1.5: L(off) - L = 0.8 * 1.5
    for key in ((0, "fc1"), (0, "fc2")):
        assert exact[key][0].item() == pytest.approx(1.2, abs=1e-5)
        assert gxa[key][0].item() == pytest.approx(1.2, abs=1e-5)
    # unit 1 (the -K logit) is far from linear: switching it off makes the target likely, first order overshoots
    assert exact[(0, "fc1")][1] < 0 and gxa[(0, "fc1")][1] > abs(exact[(0, "fc1")][1])


def hand_toy() -> tuple[ToyLM, list[dict]]:
    torch.manual_seed(3)
    model = ToyLM(torch.randn(5, 3), torch.randn(3, 3), torch.randn(3, 3), torch.randn(5, 3))
    batches = [{"input_ids": torch.tensor([[0, 3, 1], [2, 4, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
                "labels": torch.tensor([[-100, 3, 1], [-100, 4, -100]])}]
    return model, batches


def explicit_loss(model: ToyLM, batch: dict, scale1: float = 1.0, scale2: float = 1.0,
                  off: tuple[str, int] | None = None) -> torch.Tensor:
    """The toy's SFT loss written out: mean CE of the target tokens predicted one position earlier."""
    e = model.body.embed.weight[batch["input_ids"]]
    a1 = scale1 * (e @ model.body.fc1.weight.T)
    if off and off[0] == "fc1":
        a1 = a1.clone()
        a1[..., off[1]] = 0
    a2 = scale2 * (a1 @ model.body.fc2.weight.T)
    if off and off[0] == "fc2":
        a2 = a2.clone()
        a2[..., off[1]] = 0
    logits = a2 @ model.head.weight.T
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    return F.cross_entropy(logits[:, :-1][keep], labels[keep])


def test_activation_and_exact_ablation_by_hand():
    model, batches = hand_toy()
    b = batches[0]
    pools = model.pools()
    act, means = score("activation", ScoringInput(model, batches, pools, token_scope="target"))
    e = model.body.embed.weight.detach()[b["input_ids"]]
    a1 = e @ model.body.fc1.weight.detach().T
    scope = torch.tensor([[True, True, False], [True, False, False]])  # positions whose next token is a target
    torch.testing.assert_close(act[(0, "fc1")], a1[scope].abs().mean(0))
    torch.testing.assert_close(means[(0, "fc1")], a1[scope].mean(0))
    exact, _ = score("exact_ablation", ScoringInput(model, batches, pools))
    with torch.no_grad():
        base = explicit_loss(model, b)
        for name in ("fc1", "fc2"):
            want = torch.stack([explicit_loss(model, b, off=(name, u)) - base for u in range(3)])
            torch.testing.assert_close(exact[(0, name)], want, atol=1e-6, rtol=1e-5)


def test_integrated_gradients_by_hand_on_the_toy():
    """Every unit scaled by α: a1 = α W1 e, a2 = α W2 a1. IG_1 = mean_k W1e · dL/da1, IG_2 = mean_k
    (W2 a1(α_k)) · dL/da2, the gradients taken on the explicit formula."""
    model, batches = hand_toy()
    b, steps = batches[0], 3
    pools = model.pools()
    got, rows = ig_token_attributions(model, b, pools, steps, "all")
    e = model.body.embed.weight.detach()[b["input_ids"]]
    w1, w2, h = model.body.fc1.weight.detach(), model.body.fc2.weight.detach(), model.head.weight.detach()
    keep = b["labels"][:, 1:] != -100
    ig1 = torch.zeros_like(e @ w1.T)
    ig2 = torch.zeros_like(ig1)
    for k in range(1, steps + 1):
        alpha = k / steps
        pre1 = e @ w1.T
        z1 = (alpha * pre1).requires_grad_(True)
        pre2 = z1 @ w2.T
        z2 = alpha * pre2
        z2.retain_grad()
        loss = F.cross_entropy((z2 @ h.T)[:, :-1][keep], b["labels"][:, 1:][keep])
        g1, g2 = torch.autograd.grad(loss, [z1, z2])
        ig1 += pre1 * g1 / steps
        ig2 += pre2.detach() * g2 / steps
    mask = b["attention_mask"].bool()
    torch.testing.assert_close(got[(0, "fc1")], ig1[mask], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[(0, "fc2")], ig2[mask], atol=1e-6, rtol=1e-5)
    assert rows.tolist() == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("reduction,token_scope", [("mean", "target"), ("sum", "all"), ("abs_sum", "target")])
def test_integrated_gradients_with_one_step_is_grad_x_act(tiny_llama, reduction, token_scope):
    """Right Riemann sum with one step: α = 1, the gradient at the model itself."""
    model, tok = tiny_llama
    pools = neuron_pools(model)
    batches = [batch_for(tok, 3, 0), batch_for(tok, 2, 3)]
    ig, _ = score("integrated_gradients", ScoringInput(model, batches, pools, reduction, token_scope, ig_steps=1))
    gxa, _ = attribute(model, batches, pools, reduction, token_scope)
    for p in pools:
        torch.testing.assert_close(ig[p.key], gxa[p.key], rtol=1e-4, atol=1e-8)


def test_integrated_gradients_completeness_on_tiny_llama(tiny_llama):
    """Σ over every unit and position of the signed IG -> L(model) - L(every FFN unit off) as steps grow."""
    model, tok = tiny_llama
    pools = neuron_pools(model)
    batch = batch_for(tok, 2, 1)
    with torch.no_grad():
        base = target_only_loss(model, batch)
        everything = NeuronSet({p.key: torch.arange(p.size) for p in pools}, {p.key: p.size for p in pools}, {})
        with deactivated(pools, everything):
            off = target_only_loss(model, batch)
    errors = []
    for steps in (8, 128):
        tokens, _ = ig_token_attributions(model, batch, pools, steps, "all")
        errors.append(abs(sum(float(t.double().sum()) for t in tokens.values()) - float(base - off)))
    # called directly (without integrated_gradients' frozen parameters), it leaves weight gradients on the
    # session's tiny_llama: cleared, so that later tests sharing the model find it as loaded
    model.zero_grad(set_to_none=True)
    assert errors[1] < errors[0] / 8, errors  # right Riemann sum: error ~ 1/steps
    assert errors[1] < 0.02 * abs(float(base - off)) + 1e-5, (errors, float(base - off))


@pytest.mark.parametrize("definition", ["output_units", "intermediate"])
def test_exact_ablation_is_the_loss_difference_of_two_forwards(tiny_llama, definition):
    model, tok = tiny_llama
    pools = neuron_pools(model, definition)
    batches = [batch_for(tok, 3, 0), batch_for(tok, 2, 2)]
    exact, _ = score("exact_ablation", ScoringInput(model, batches, pools, ablation_sample=12, seed=5))
    sampled = sample_units(pools, 12, 5)
    assert sum(int((~v.isnan()).sum()) for v in exact.values()) == 12
    base = sft_loss(model, batches)
    sizes = {p.key: p.size for p in pools}
    for p in pools:
        assert torch.equal((~exact[p.key].isnan()).nonzero().flatten(), sampled[p.key])
        for u in sampled[p.key].tolist()[:2]:
            one = NeuronSet({k: torch.tensor([u] if k == p.key else [], dtype=torch.long) for k in sizes}, sizes, {})
            with deactivated(pools, one):
                want = sft_loss(model, batches) - base
            assert exact[p.key][u].item() == pytest.approx(want, abs=2e-6)


def test_random_scores_are_seeded_per_task(tiny_llama):
    model, tok = tiny_llama
    pools = neuron_pools(model)
    b = [batch_for(tok, 2)]
    a1, _ = score("random", ScoringInput(model, b, pools, seed=1, task="x"))
    a2, _ = score("random", ScoringInput(model, b, pools, seed=1, task="x"))
    c, _ = score("random", ScoringInput(model, b, pools, seed=1, task="y"))
    k = pools[0].key
    assert torch.equal(a1[k], a2[k]) and not torch.equal(a1[k], c[k])
    assert float(a1[k].min()) >= 0 and float(a1[k].max()) < 1


def test_lape_by_hand():
    """Two tasks, one pool of 4 units. Probabilities (task a, task b): u0 (0.9, 0.0), u1 (0.5, 0.5),
    u2 (0.0, 0.8), u3 (0.1, 0.05). Quantile 0.5 of the 8 values (kthvalue 4) = 0.1, quantile 0.75 (kthvalue 6)
    = 0.5."""
    probs = {"a": {(0, "m"): torch.tensor([0.9, 0.5, 0.0, 0.1])}, "b": {(0, "m"): torch.tensor([0.0, 0.5, 0.8, 0.05])}}
    got = lape_scores(probs, "a", filter_rate=0.5, activation_bar_ratio=0.75)[(0, "m")]
    # bar 0.5: task a owns u0 only (0.5 is not above it); u0's distribution (1, 0): entropy 0, score log 2
    assert got[0].item() == pytest.approx(math.log(2))
    assert got[1:].isnan().all()
    got = lape_scores(probs, "a", filter_rate=0.5, activation_bar_ratio=0.5)[(0, "m")]
    # bar 0.1 (= filter): a owns u0 and u1 (p > 0.1); u1 uniform: entropy log 2, score 0; u3 (0.1) not above
    assert got[0].item() == pytest.approx(math.log(2)) and got[1].item() == pytest.approx(0.0, abs=1e-7)
    assert got[2:].isnan().all()
    b = lape_scores(probs, "b", filter_rate=0.5, activation_bar_ratio=0.5)[(0, "m")]
    assert b[2].item() == pytest.approx(math.log(2)) and b[0].isnan()


def test_lape_needs_peers_and_runs_on_tiny_llama(tiny_llama):
    model, tok = tiny_llama
    pools = neuron_pools(model)
    a, b = [batch_for(tok, 3, 0)], [batch_for(tok, 3, 3)]
    with pytest.raises(ValueError, match="needs >= 2 tasks"):
        score("lape", ScoringInput(model, a, pools, task="a", peer_batches={"a": a}))
    s, _ = score("lape", ScoringInput(model, a, pools, task="a", peer_batches={"a": a, "b": b}))
    finite = torch.cat([v[~v.isnan()] for v in s.values()])
    assert finite.numel() > 0 and bool((finite >= -1e-6).all()) and bool((finite <= math.log(2) + 1e-6).all())


def test_selection_never_picks_unscored_units():
    scores = {(0, "m"): torch.tensor([0.5, float("nan"), 0.9, float("nan"), 0.1, 0.7]),
              (1, "m"): torch.full((4,), float("nan"))}
    sizes = {(0, "m"): 6, (1, "m"): 4}
    sel = select_top(scores, sizes, 0.5)
    assert sel[(0, "m")].tolist() == [2, 5] and sel[(1, "m")].numel() == 0  # half of the 4 scored units
    assert select_top(scores, sizes, 0.5, "global")[(0, "m")].tolist() == [2, 5]
    plain = {(0, "m"): torch.tensor([0.5, 0.2, 0.9, 0.3])}
    assert select_top(plain, {(0, "m"): 4}, 0.5)[(0, "m")].tolist() == [0, 2]


def test_store_folder_names_the_method_and_keeps_grad_x_act_unchanged():
    n = compose("identify", ["model=tiny_llama", "task=rotten_tomatoes"]).neurons
    plain = _attr_dir(n, "m", "t", "train-abc")
    assert plain.name == f"{n.definition}-{n.reduction}-{n.token_scope}-train-abc"
    names = {plain.name}
    for method in ("activation", "integrated_gradients", "exact_ablation", "random", "lape"):
        n.method = method
        names.add(_attr_dir(n, "m", "t", "train-abc", peers=["a:1", "b:2"]).name)
    n.method, n.ig_steps = "integrated_gradients", 16
    names.add(_attr_dir(n, "m", "t", "train-abc").name)
    n.method, n.ablation_sample = "exact_ablation", 100
    names.add(_attr_dir(n, "m", "t", "train-abc").name)
    assert len(names) == 8


@pytest.mark.parametrize("overrides,tasks,needle", [
    (["neurons.method=saliency"], None, "neurons.method='saliency' must be one of grad_x_act"),
    (["neurons.method=lape"], ["rotten_tomatoes"], "neurons.method=lape compares tasks and needs >= 2"),
    (["neurons.method=integrated_gradients", "neurons.ig_steps=0"], None, "neurons.ig_steps=0 must be >= 1"),
    (["neurons.method=exact_ablation", "neurons.ablation_sample=0"], None, "neurons.ablation_sample=0 must be null"),
    (["neurons.lape.filter_rate=1.5"], None, "neurons.lape.filter_rate=1.5 must be in (0, 1)"),
])
def test_bad_method_config_is_named(overrides, tasks, needle):
    n = compose("identify", ["model=tiny_llama", "task=rotten_tomatoes", *overrides]).neurons
    problems = validate_neurons_config(n, "tiny_llama", tasks)
    assert any(needle in p for p in problems), problems


def test_default_method_config_is_valid():
    n = compose("identify", ["model=tiny_llama", "task=rotten_tomatoes"]).neurons
    assert n.method == "grad_x_act" and validate_neurons_config(n, "tiny_llama", ["a", "b"]) == []
    assert set(SCORERS) == {"grad_x_act", "activation", "integrated_gradients", "exact_ablation", "random", "lape"}


def test_ablation_sample_larger_than_the_model_is_one_problem(tiny_llama):
    from taskneurons.errors import ConfigError

    pools = neuron_pools(tiny_llama[0])
    n = compose("identify", ["model=tiny_llama", "neurons.method=exact_ablation", "neurons.ablation_sample=100000"]).neurons
    with pytest.raises(ConfigError, match="exceeds this model's 640 units"):
        check_ablation_sample(n, pools)


@pytest.mark.e2e
def test_identify_refuses_lape_on_one_task_in_one_line_before_loading(tmp_path):
    from conftest import run_here

    r = run_here(["taskneurons.identify", "model=smollm2_135m", "model.dtype=float32", "task=rotten_tomatoes",
                  "neurons.method=lape", f"hydra.run.dir={tmp_path}"])
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("error: ") and r.stderr.strip().count("\n") == 0 and "neurons.method=lape compares tasks" in r.stderr, r.stderr
    assert r.model_loads == 0, "refused before the model loads"


def test_grad_x_act_through_the_registry_is_bit_identical_to_attribute(tiny_llama):
    model, tok = tiny_llama
    pools = neuron_pools(model)
    batches = [batch_for(tok, 4, 0), batch_for(tok, 3, 2)]
    want = attribute(model, batches, pools, "abs_sum", "target", micro_batch_size=2)
    got = score("grad_x_act", ScoringInput(model, batches, pools, "abs_sum", "target", micro_batch_size=2))
    for p in pools:
        assert torch.equal(got[0][p.key], want[0][p.key]) and torch.equal(got[1][p.key], want[1][p.key])
