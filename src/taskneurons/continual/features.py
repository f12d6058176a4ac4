"""W-NCFT task vectors (PAPER.md §7.2 step 1) and test-time task-identity inference.

A sample's feature is the mean over its prompt tokens (no padding) of the model's last hidden state
(the final-norm output); a task vector is the mean of its samples' features, on the pre-trained model.
"""

from __future__ import annotations

import torch

from taskneurons.data.encoding import encode_prompt, pad
from taskneurons.data.examples import Example, sample_examples
from taskneurons.data.tasks import TaskSpec


@torch.no_grad()
def prompt_features(model, tok, spec: TaskSpec, examples: list[Example], max_prompt_tokens: int,
                    batch_size: int = 16) -> torch.Tensor:
    """One feature per example, ``[n, hidden]`` in fp32 on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = [encode_prompt(tok, spec, e.fields, max_prompt_tokens) for e in examples]
    out = []
    for start in range(0, len(ids), batch_size):
        input_ids, mask = pad(ids[start : start + batch_size], tok.pad_token_id, "right")
        input_ids, mask = input_ids.to(device), mask.to(device)
        hidden = model.base_model(input_ids=input_ids, attention_mask=mask, use_cache=False)[0].float()
        m = mask.unsqueeze(-1).float()
        out.append(((hidden * m).sum(1) / m.sum(1).clamp(min=1)).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def task_vector(model, tok, spec: TaskSpec, examples: list[Example], n: int, seed: int, max_prompt_tokens: int,
                batch_size: int = 16) -> torch.Tensor:
    """The mean feature of a seeded sample of ``n`` examples (the paper: 1,000 random samples)."""
    chosen = sample_examples(examples, n, seed, spec.name, "task-vector")
    return prompt_features(model, tok, spec, chosen, max_prompt_tokens, batch_size).mean(0)


def nearest_task(features: torch.Tensor, vectors: dict[str, torch.Tensor]) -> list[str]:
    """For each row of ``features``, the task whose vector has the highest cosine similarity."""
    names = list(vectors)
    mat = torch.stack([vectors[n].float() for n in names])
    sims = torch.nn.functional.cosine_similarity(features.float().unsqueeze(1), mat.unsqueeze(0), dim=-1)
    return [names[i] for i in sims.argmax(-1).tolist()]
