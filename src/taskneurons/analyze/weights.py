"""Read a saved HF model's FFN weights one layer at a time from its safetensors files (never the whole
model): a model that does not match the neuron sets is reported from the file headers alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open

from taskneurons.errors import ConfigError
from taskneurons.models.ffn import arch_spec
from taskneurons.neurons.pools import Key


class SavedWeights:
    """Tensor name -> file of a ``save_pretrained`` folder (single file or sharded index)."""

    def __init__(self, model_dir: str | Path):
        self.dir = Path(model_dir)
        cfg_path = self.dir / "config.json"
        if not cfg_path.is_file():
            raise ConfigError(f"{self.dir}: not a saved model (no config.json); train with save_model=true")
        self.config = json.loads(cfg_path.read_text())
        self.model_type = str(self.config.get("model_type"))
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            wm = json.loads(index.read_text())["weight_map"]
            self.file_of = {k: self.dir / v for k, v in wm.items()}
        elif (self.dir / "model.safetensors").is_file():
            with safe_open(self.dir / "model.safetensors", framework="pt") as f:
                self.file_of = dict.fromkeys(f.keys(), self.dir / "model.safetensors")
        else:
            raise ConfigError(f"{self.dir}: no model.safetensors (or index); save the model as safetensors")

    def shape(self, name: str) -> list[int] | None:
        if name not in self.file_of:
            return None
        with safe_open(self.file_of[name], framework="pt") as f:
            return list(f.get_slice(name).get_shape())

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Just these tensors, fp32; each file is opened for this call only, so its pages are let go after."""
        out = {}
        with ExitStack() as stack:
            handles = {}
            for n in names:
                path = self.file_of[n]
                if path not in handles:
                    handles[path] = stack.enter_context(safe_open(path, framework="pt"))
                out[n] = handles[path].get_tensor(n).to(torch.float32)
        return out


def matrix_names(model_type: str, layer: int) -> list[tuple[str, str, str, bool]]:
    """(matrix name, weight tensor name, role, transposed) of one layer, from the FFN registry."""
    spec = arch_spec(model_type)
    return [(m, f"{spec.layers}.{layer}.{path}.weight", role, spec.transposed) for m, path, role in spec.matrices]


def check_matches(w: SavedWeights, pool_sizes: dict[Key, int], definition: str, where: str) -> list[str]:
    """The saved model has every matrix the neuron sets' pools name, with matching unit counts."""
    try:
        arch_spec(w.model_type)
    except ValueError as e:
        return [f"{where}: {e}"]
    p = []
    layers = sorted({k[0] for k in pool_sizes})
    names = {m for m, _, _, _ in matrix_names(w.model_type, 0)} if definition == "output_units" else {"intermediate"}
    foreign = sorted({k[1] for k in pool_sizes} - names)
    if foreign:
        return [f"{where}: a '{w.model_type}' model has no FFN matrices {foreign} that the neuron sets name; "
                "the saved model does not match the config (another model?)"]
    for layer in layers:
        for name, tensor, role, transposed in matrix_names(w.model_type, layer):
            shape = w.shape(tensor)
            if shape is None:
                p.append(f"{where}: has no tensor {tensor} for layer {layer}; the model does not match the neuron sets")
                break
            units = shape[1] if transposed else shape[0]
            want = pool_sizes.get((layer, name)) if definition == "output_units" else (
                pool_sizes.get((layer, "intermediate")) if role == "in" else None)
            if want is not None and want != units:
                p.append(f"{where}: {tensor} has {units} units, the neuron sets expect {want}; "
                         "the saved model does not match the config (another model?)")
    extra = [k for k in w.file_of if k.startswith(f"{arch_spec(w.model_type).layers}.{layers[-1] + 1}.")] if layers else []
    if extra:
        p.append(f"{where}: has more layers than the neuron sets ({layers[-1] + 1}); the model does not match")
    return p


def unit_params(w: SavedWeights, layer: int, definition: str) -> Iterator[tuple[Key, torch.Tensor]]:
    """Per pool of ``layer``: [units, params per unit] (a unit's weight row and bias entry; under the
    ``intermediate`` definition its in-matrix rows and out-matrix column side by side)."""
    mats = matrix_names(w.model_type, layer)
    names = [t for _, t, _, _ in mats]
    biases = [t[: -len("weight")] + "bias" for t in names]
    tensors = w.read(names + [b for b in biases if b in w.file_of])
    per_matrix = {}
    for (name, tensor, role, transposed), bias in zip(mats, biases, strict=True):
        wt = tensors[tensor].t() if transposed else tensors[tensor]  # [out units, in]
        per_matrix[name] = (role, wt, tensors.get(bias))
    if definition == "output_units":
        for name, (_, wt, b) in per_matrix.items():
            yield (layer, name), (wt if b is None else torch.cat([wt, b[:, None]], dim=1))
        return
    parts = []
    for _, (role, wt, b) in per_matrix.items():
        if role == "in":
            parts.append(wt if b is None else torch.cat([wt, b[:, None]], dim=1))
        else:
            parts.append(wt.t())  # the unit's column of the down projection
    yield (layer, "intermediate"), torch.cat(parts, dim=1)
