"""Neuron pools under the project's two neuron definitions, built on the FFN adapter registry.

- ``output_units`` (default; the paper's "a column of W1 or W2", PAPER.md §2.3 A): every output unit
  of every FFN linear map is a neuron. Pool key ``(layer, matrix)``; a neuron owns its weight row and
  bias entry; its activation is the matrix output.
- ``intermediate`` (PAPER.md §2.3 B): the FFN's intermediate units only (the down projection's input).
  Pool key ``(layer, "intermediate")``; a neuron owns the rows of every "in" matrix (gate/up or
  h_to_4h, with bias) and the column of the "out" matrix; its activation is the down projection input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from taskneurons.models.ffn import FFNMatrix, ffn_matrices

DEFINITIONS = ("output_units", "intermediate")
Key = tuple[int, str]


@dataclass(frozen=True)
class UnitParam:
    """One parameter tensor of a pool's neurons, seen with the unit axis first."""

    name: str  # "<layer>.<pool>/<matrix>/<kind>": stable; W-NCFT rows in stage checkpoints are keyed on it
    matrix: FFNMatrix
    kind: str  # what of the matrix a unit owns: its weight row "w", its bias entry "b", its weight column "c"

    def tensor(self) -> torch.Tensor:
        """``[n_units, ...]``: a view, so in-place writes (index_copy_, index_fill_, index_add_) reach the model."""
        if self.kind == "b":
            return self.matrix.bias
        w = self.matrix.unit_weight()
        return w if self.kind == "w" else w.t()


@dataclass(frozen=True)
class Pool:
    key: Key
    size: int
    rows: tuple[FFNMatrix, ...]  # matrices whose output unit u (weight row u, bias u) belongs to neuron u
    cols: tuple[FFNMatrix, ...]  # matrices whose input column u belongs to neuron u
    act: FFNMatrix  # where the neuron's activation is read
    act_side: str  # "output" (module output) or "input" (module input)

    @property
    def layer(self) -> int:
        return self.key[0]

    def unit_params(self) -> tuple[UnitParam, ...]:
        """Every parameter the pool's neurons own (the one description deactivation, delta rows, W-NCFT rows
        and per-task masks all use): each "row" matrix's weight rows and bias entries, each "col" matrix's
        weight columns."""
        k = key_str(self.key)
        out = []
        for m in self.rows:
            out.append(UnitParam(f"{k}/{m.name}/w", m, "w"))
            if m.bias is not None:
                out.append(UnitParam(f"{k}/{m.name}/b", m, "b"))
        out += [UnitParam(f"{k}/{m.name}/c", m, "c") for m in self.cols]
        return tuple(out)

    def n_params_per_unit(self) -> int:
        n = sum(m.in_features + (1 if m.bias is not None else 0) for m in self.rows)
        return n + sum(m.out_features for m in self.cols)


def key_str(key: Key) -> str:
    return f"{key[0]}.{key[1]}"


def parse_key(s: str) -> Key:
    layer, name = s.split(".", 1)
    return int(layer), name


def neuron_pools(model: nn.Module, definition: str = "output_units") -> list[Pool]:
    if definition not in DEFINITIONS:
        raise ValueError(f"unknown neuron definition '{definition}'; choose one of {', '.join(DEFINITIONS)}")
    mats = ffn_matrices(model)
    if definition == "output_units":
        return [Pool(m.key, m.out_features, (m,), (), m, "output") for m in mats]
    pools = []
    for layer in sorted({m.layer for m in mats}):
        ins = tuple(m for m in mats if m.layer == layer and m.role == "in")
        out = next(m for m in mats if m.layer == layer and m.role == "out")
        pools.append(Pool((layer, "intermediate"), out.in_features, ins, (out,), out, "input"))
    return pools


def pool_sizes(pools: list[Pool]) -> dict[str, int]:
    return {key_str(p.key): p.size for p in pools}
