"""Slow: task-specific neurons of the real SmolLM2 on real starter data (the issue's done-when check)."""

from __future__ import annotations

import pytest
import torch

from conftest import compose
from taskneurons.config import checked_task_specs
from taskneurons.data.encoding import encode_example
from taskneurons.data.loading import load_tasks
from taskneurons.eval.scoring import label_loglik
from taskneurons.models.loading import load_model_and_tokenizer
from taskneurons.neurons.attribution import attribute
from taskneurons.neurons.identify import attribution_batches, control_set
from taskneurons.neurons.masking import deactivated
from taskneurons.neurons.neuronset import NeuronSet, select_top
from taskneurons.neurons.pools import neuron_pools

pytestmark = pytest.mark.slow


def test_switching_off_bbc_topic_neurons_hurts_more_than_random_ones():
    cfg = compose(overrides=["model=smollm2_135m", "task=bbc_topic", "data.max_train=256", "data.max_test=60",
                             "data.max_prompt_tokens=128", "neurons.proportion=0.03", "neurons.max_examples=64"])
    spec = checked_task_specs(cfg)[0]
    td = load_tasks([spec], None, 256, 60, int(cfg.seed))["bbc_topic"]
    model, tok = load_model_and_tokenizer(cfg.model, cfg.paths.model_cache)
    enc = [encode_example(tok, spec, e, 128, 16) for e in td.test]
    labels = [tok(spec.target_prefix + lab, add_special_tokens=False).input_ids for lab in spec.labels]
    gold = torch.tensor([e.label_index for e in enc])

    def accuracy() -> float:
        preds = torch.cat([label_loglik(model, [e.prompt_ids for e in enc[i:i + 20]], labels, tok.pad_token_id).argmax(-1)
                           for i in range(0, len(enc), 20)])
        return 100 * float((preds == gold).float().mean())

    pools = neuron_pools(model)
    sizes = {p.key: p.size for p in pools}
    batches, _ = attribution_batches(tok, td, cfg.neurons, cfg.data)
    scores, means = attribute(model, batches, pools)
    task = NeuronSet(select_top(scores, sizes, 0.03), sizes, {"definition": "output_units", "model": "smollm2_135m"})
    rand = control_set("random", task, pools, "smollm2_135m", cfg.neurons)
    assert rand.counts() == task.counts()
    base = accuracy()
    with deactivated(pools, task):
        off_task = accuracy()
    with deactivated(pools, rand):
        off_random = accuracy()
    assert accuracy() == base  # restored exactly
    print(f"bbc_topic accuracy: original {base:.1f}, task neurons off {off_task:.1f}, random off {off_random:.1f}")
    assert base - off_task >= 2 * max(base - off_random, 0) + 5, (base, off_task, off_random)
