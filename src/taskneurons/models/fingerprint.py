"""A short digest of every weight: equal fingerprints mean bit-identical models (resume and NCFT checks)."""

from __future__ import annotations

import hashlib

import torch


@torch.no_grad()
def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every weight's name and bytes, in state-dict order (one tensor copied at a time)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
