"""The one place that knows where each architecture keeps its FFN matrices.

A neuron (the project's default definition, PAPER.md §2.3 variant A) is one *output unit* of one FFN
linear map. Each (layer, matrix) is a pool of neurons; a neuron's parameters are the weight row (and
bias entry) that produce it. GPT-2 stores its FFN as ``Conv1D`` with weight ``[in, out]``, so its
"row" is a column of the stored tensor: ``transposed`` says so, and every consumer goes through
:meth:`FFNMatrix.unit_weight` instead of indexing weights itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import torch
from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    layers: str  # attribute path from the model to the list of blocks
    matrices: tuple[tuple[str, str, str], ...]  # (matrix name, path from block, role "in"|"out")
    transposed: bool = False  # weight stored [in, out] (HF Conv1D)


# role "in": maps hidden -> intermediate (the paper's W1); role "out": intermediate -> hidden (W2).
_LLAMA_LIKE = ArchSpec(
    "model.layers",
    (("gate_proj", "mlp.gate_proj", "in"), ("up_proj", "mlp.up_proj", "in"), ("down_proj", "mlp.down_proj", "out")),
)
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "bloom": ArchSpec(
        "transformer.h",
        (("dense_h_to_4h", "mlp.dense_h_to_4h", "in"), ("dense_4h_to_h", "mlp.dense_4h_to_h", "out")),
    ),
    "gpt2": ArchSpec("transformer.h", (("c_fc", "mlp.c_fc", "in"), ("c_proj", "mlp.c_proj", "out")), transposed=True),
    "gpt_neox": ArchSpec(
        "gpt_neox.layers",
        (("dense_h_to_4h", "mlp.dense_h_to_4h", "in"), ("dense_4h_to_h", "mlp.dense_4h_to_h", "out")),
    ),
    "opt": ArchSpec("model.decoder.layers", (("fc1", "fc1", "in"), ("fc2", "fc2", "out"))),
}


def supported_model_types() -> list[str]:
    return sorted(ARCHITECTURES)


class UnsupportedModelError(ValueError):
    pass


def arch_spec(model_type: str) -> ArchSpec:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model_type '{model_type}' has no FFN adapter; supported: {', '.join(supported_model_types())}. "
            "Add an ArchSpec for it to ARCHITECTURES in src/taskneurons/models/ffn.py "
            "(path to the block list, and each FFN matrix's path and role)."
        ) from None


@dataclass(frozen=True)
class FFNMatrix:
    layer: int
    name: str
    module: nn.Module
    role: str  # "in" (hidden -> intermediate) or "out" (intermediate -> hidden)
    out_features: int
    in_features: int
    transposed: bool

    @property
    def key(self) -> tuple[int, str]:
        return (self.layer, self.name)

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return getattr(self.module, "bias", None)

    @property
    def unit_dim(self) -> int:
        """The weight dimension that indexes output units (0 for nn.Linear, 1 for Conv1D)."""
        return 1 if self.transposed else 0

    def unit_weight(self, units: torch.Tensor | None = None) -> torch.Tensor:
        """Weight rows of the given output units as ``[n_units, in_features]`` (a view when possible)."""
        w = self.weight.t() if self.transposed else self.weight
        return w if units is None else w[units]


def ffn_matrices(model: nn.Module) -> list[FFNMatrix]:
    """Every FFN matrix of every layer, in (layer, architecture order)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = arch_spec(str(model_type))
    try:
        blocks = attrgetter(spec.layers)(model)
    except AttributeError:
        raise UnsupportedModelError(
            f"model_type '{model_type}': expected the blocks at '{spec.layers}' but {type(model).__name__} has "
            "no such attribute; fix the ArchSpec in src/taskneurons/models/ffn.py"
        ) from None
    out: list[FFNMatrix] = []
    for layer, block in enumerate(blocks):
        for name, path, role in spec.matrices:
            module = attrgetter(path)(block)
            w = module.weight
            out_f, in_f = (w.shape[1], w.shape[0]) if spec.transposed else (w.shape[0], w.shape[1])
            out.append(FFNMatrix(layer, name, module, role, int(out_f), int(in_f), spec.transposed))
    return out
