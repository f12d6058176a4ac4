"""Neuron sets in LAPE's format (RUCAIBox/Language-Specific-Neurons, ``identify.py``'s activation masks).

LAPE saves ``torch.save(masks)`` where ``masks`` is a list over languages (here: tasks) of a list over
layers of 1-D LongTensors: the indices of the FFN *intermediate* units (the down projection's input) that
belong to that language in that layer. That is this project's ``intermediate`` definition, pool
``(layer, "intermediate")``; sets under ``output_units`` have no LAPE counterpart and are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from taskneurons.errors import ConfigError
from taskneurons.neurons.neuronset import NeuronSet

DEFINITION = "intermediate"


def to_lape(sets: list[NeuronSet]) -> list[list[torch.Tensor]]:
    """The sets as LAPE masks: ``[set][layer] -> LongTensor`` of intermediate unit ids (sorted)."""
    if isinstance(sets, NeuronSet):
        sets = [sets]
    out = []
    for i, nset in enumerate(sets):
        if nset.meta.get("definition") != DEFINITION:
            raise ConfigError(f"sets[{i}] uses definition '{nset.meta.get('definition')}'; LAPE's masks are FFN "
                              "intermediate units: score with definition='intermediate' (neurons.definition=intermediate)")
        layers = sorted(k[0] for k in nset.pool_sizes)
        if layers != list(range(len(layers))) or any(k[1] != DEFINITION for k in nset.pool_sizes):
            raise ConfigError(f"sets[{i}] pools {sorted(nset.pool_sizes)[:3]}… are not one intermediate pool per layer 0..L-1")
        out.append([nset.indices[(layer, DEFINITION)].to(torch.long).clone() for layer in layers])
    return out


def save_lape(sets: list[NeuronSet], path: str | Path) -> Path:
    """``torch.save`` of :func:`to_lape`, the file LAPE's ``activation_mask/<name>`` scripts read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_lape(sets), path)
    return path


def from_lape(masks: Any, intermediate_sizes: list[int], model: str | None = None,
              names: list[str] | None = None) -> list[NeuronSet]:
    """LAPE masks (the loaded list, or a path to the ``torch.save`` file) as NeuronSets (``intermediate``).

    ``intermediate_sizes``: the FFN hidden size of every layer of the model the masks are for (checks
    that each index fits); ``names``: one task / language name per mask (default ``lape0``, ``lape1``, …).
    """
    if isinstance(masks, str | Path):
        masks = torch.load(Path(masks), map_location="cpu", weights_only=True)
    n_layers = len(intermediate_sizes)
    fix = "LAPE's format is a list (per language) of lists (one per layer) of 1-D LongTensors of unit ids"
    if not isinstance(masks, list | tuple) or not masks:
        raise ConfigError(f"masks: expected a non-empty list over languages, got {type(masks).__name__}; {fix}")
    if names is not None and len(names) != len(masks):
        raise ConfigError(f"names: {len(names)} names for {len(masks)} masks; give one name per mask")
    sizes = {(layer, DEFINITION): int(n) for layer, n in enumerate(intermediate_sizes)}
    sets = []
    for i, per_layer in enumerate(masks):
        if not isinstance(per_layer, list | tuple) or len(per_layer) != n_layers:
            got = len(per_layer) if isinstance(per_layer, list | tuple) else type(per_layer).__name__
            raise ConfigError(f"masks[{i}]: expected {n_layers} layers (the model's), got {got}; {fix}")
        indices = {}
        for layer, t in enumerate(per_layer):
            t = torch.as_tensor(t)
            if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
                raise ConfigError(f"masks[{i}][{layer}]: expected a 1-D integer tensor, got {t.dtype} of shape "
                                  f"{tuple(t.shape)}; {fix}")
            t = torch.unique(t.to(torch.long))  # sorted, as every NeuronSet's indices are
            if t.numel() and (int(t[0]) < 0 or int(t[-1]) >= intermediate_sizes[layer]):
                raise ConfigError(f"masks[{i}][{layer}]: unit id {int(t[-1]) if int(t[-1]) >= 0 else int(t[0])} is "
                                  f"outside the layer's {intermediate_sizes[layer]} intermediate units; "
                                  "are the masks for another model?")
            indices[(layer, DEFINITION)] = t
        name = names[i] if names else f"lape{i}"
        sets.append(NeuronSet(indices, dict(sizes), {"model": model, "task": name, "definition": DEFINITION,
                                                     "kind": "lape", "source": "LAPE activation mask"}))
    return sets
