"""SFT loss that runs the LM head only where there is a target token.

A causal LM's head is one of its largest matrices (SmolLM2: 49k x 576, a fifth of the forward); the SFT
loss only needs it at the few target positions, so both attribution and training skip the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from taskneurons.data.encoding import IGNORE_INDEX


def _target_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fp32 logits at the target positions, their labels, the [batch, seq-1] mask of those positions)."""
    base = model.base_model
    hidden = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)[0]
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits, labels[keep], keep


def target_only_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over target tokens; equal to ``model(**batch).loss``."""
    logits, labels, _ = _target_logits(model, batch)
    return F.cross_entropy(logits, labels)


def target_token_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (fp32) of every target token, and the example each token belongs to."""
    logits, labels, keep = _target_logits(model, batch)
    return F.cross_entropy(logits, labels, reduction="none"), keep.nonzero(as_tuple=True)[0]
