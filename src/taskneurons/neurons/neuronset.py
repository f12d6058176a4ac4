"""NeuronSet: (layer, matrix) -> sorted unit indices, with the raw scores and where they came from.

Saved as ``<stem>.safetensors`` (indices, scores, mean activations) + ``<stem>.json`` (metadata, pool
sizes, the tensors file's sha256). Both are written atomically, JSON last: a set whose JSON is
missing, or whose tensors no longer match the checksum, is reported and never used.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from taskneurons.errors import ConfigError
from taskneurons.neurons.pools import Key, key_str, parse_key
from taskneurons.runtime.atomic import (
    atomic_write_bytes,
    read_json_with_checksum,
    sha256_of,
    write_json_with_checksum,
)
from taskneurons.runtime.signals import STOP

SCOPES = ("per_module", "global")
FORMAT_VERSION = 1


@dataclass
class NeuronSet:
    indices: dict[Key, torch.Tensor]  # sorted int64 unit ids per pool (every pool present, maybe empty)
    pool_sizes: dict[Key, int]
    meta: dict[str, Any] = field(default_factory=dict)
    scores: dict[Key, torch.Tensor] | None = None  # fp32 relevance of every unit
    means: dict[Key, torch.Tensor] | None = None  # mean activation of every unit (for mean replacement)

    # --- size and algebra ---------------------------------------------------------------------
    def count(self) -> int:
        return int(sum(v.numel() for v in self.indices.values()))

    def total(self) -> int:
        return int(sum(self.pool_sizes.values()))

    def counts(self) -> dict[Key, int]:
        return {k: int(v.numel()) for k, v in self.indices.items()}

    def _check_same_space(self, other: NeuronSet) -> None:
        if self.pool_sizes != other.pool_sizes or self.meta.get("definition") != other.meta.get("definition"):
            raise ValueError(
                f"neuron sets live in different spaces (model {self.meta.get('model')} / {other.meta.get('model')}, "
                f"definition {self.meta.get('definition')} / {other.meta.get('definition')})"
            )

    def _combine(self, other: NeuronSet, op: str) -> NeuronSet:
        self._check_same_space(other)
        out = {}
        for k in self.pool_sizes:
            a, b = self.indices[k], other.indices[k]
            if op == "union":
                out[k] = torch.unique(torch.cat([a, b]))
            else:
                out[k] = a[torch.isin(a, b)]
        meta = {**self.meta, "task": f"({self.meta.get('task')} {op} {other.meta.get('task')})", "derived": op}
        return NeuronSet(out, dict(self.pool_sizes), meta)

    def union(self, other: NeuronSet) -> NeuronSet:
        return self._combine(other, "union")

    def intersection(self, other: NeuronSet) -> NeuronSet:
        return self._combine(other, "intersection")

    def jaccard(self, other: NeuronSet, per_layer: bool = False) -> float | dict[int, float]:
        """|A ∩ B| / |A ∪ B| over (layer, matrix, unit); per layer when asked (paper Eq. 13)."""
        self._check_same_space(other)
        inter: dict[int, int] = {}
        union: dict[int, int] = {}
        for k in self.pool_sizes:
            a, b = self.indices[k], other.indices[k]
            i = int(torch.isin(a, b).sum())
            inter[k[0]] = inter.get(k[0], 0) + i
            union[k[0]] = union.get(k[0], 0) + a.numel() + b.numel() - i
        if per_layer:
            return {layer: (inter[layer] / union[layer] if union[layer] else 1.0) for layer in sorted(union)}
        u = sum(union.values())
        return sum(inter.values()) / u if u else 1.0

    def fingerprint(self) -> str:
        """A short hash of exactly which neurons are in the set (same seed -> same hash)."""
        h = 0
        for k in sorted(self.indices):
            h = zlib.crc32(key_str(k).encode(), h)
            h = zlib.crc32(self.indices[k].numpy().tobytes(), h)
        return f"{h:08x}"

    # --- persistence --------------------------------------------------------------------------
    def save(self, stem: str | Path) -> Path:
        stem = _stem(stem)
        tensors = {f"idx/{key_str(k)}": v.to(torch.int64).contiguous() for k, v in self.indices.items()}
        for name, part in (("score", self.scores), ("mean", self.means)):
            for k, v in (part or {}).items():
                tensors[f"{name}/{key_str(k)}"] = v.to(torch.float32).clone()  # no shared storage
        blob = st_save(tensors)
        with STOP.deferred():  # a stop signal waits until the tensors and their JSON are both written
            atomic_write_bytes(_with(stem, ".safetensors"), blob)
            write_json_with_checksum(
                _with(stem, ".json"),
                {
                    "format_version": FORMAT_VERSION,
                    "sha256": sha256_of(blob),
                    "count": self.count(),
                    "fingerprint": self.fingerprint(),
                    "pool_sizes": {key_str(k): v for k, v in self.pool_sizes.items()},
                    "meta": self.meta,
                },
            )
        return _with(stem, ".json")

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        stem = _stem(path)
        meta_path, blob_path = _with(stem, ".json"), _with(stem, ".safetensors")
        if not meta_path.is_file() or not blob_path.is_file():
            raise ConfigError(f"neuron set '{stem}' is incomplete (need {meta_path.name} and {blob_path.name}); run identify again")
        try:
            info = read_json_with_checksum(meta_path)
        except ValueError as e:
            raise ConfigError(f"{e}; delete it and run identify again") from None
        blob = blob_path.read_bytes()
        if sha256_of(blob) != info.get("sha256"):
            raise ConfigError(
                f"{blob_path}: checksum mismatch (truncated or altered since it was written); delete it and run identify again"
            )
        tensors = st_load(blob)
        sizes = {parse_key(k): int(v) for k, v in info["pool_sizes"].items()}
        parts: dict[str, dict[Key, torch.Tensor]] = {"idx": {}, "score": {}, "mean": {}}
        for name, t in tensors.items():
            kind, k = name.split("/", 1)
            parts[kind][parse_key(k)] = t
        return cls(parts["idx"], sizes, info["meta"], parts["score"] or None, parts["mean"] or None)


def _stem(path: str | Path) -> Path:
    """A set's path without its extension (stems may contain dots, e.g. ``p0.1``)."""
    s = str(path)
    for ext in (".json", ".safetensors"):
        if s.endswith(ext):
            return Path(s[: -len(ext)])
    return Path(s)


def _with(stem: Path, ext: str) -> Path:
    return Path(str(stem) + ext)


# --- selection ----------------------------------------------------------------------------------


def _n_select(proportion: float, n: int) -> int:
    return min(n, max(1, round(proportion * n)))


def check_proportion(proportion: Any, key: str = "neurons.proportion") -> list[str]:
    try:
        p = float(proportion)
    except (TypeError, ValueError):
        return [f"{key}={proportion!r} must be a number in (0, 1]"]
    return [] if 0 < p <= 1 else [f"{key}={proportion} must be in (0, 1] (a fraction of each pool, e.g. 0.1 for 10 %)"]


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    # stable descending sort: ties go to the lower unit id, so selection never depends on kernel order
    if scores.isnan().any():  # unscored units (a sampled exact ablation, LAPE's units of other tasks)
        scores = torch.where(scores.isnan(), torch.full_like(scores, -torch.inf), scores)
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return torch.sort(order).values


def _n_scored(scores: torch.Tensor, proportion: float) -> int:
    """How many units a pool gives: ``proportion`` of its scored (non-NaN) units; 0 when none is scored."""
    n = int((~scores.isnan()).sum())
    return _n_select(proportion, n) if n else 0


def select_top(
    scores: dict[Key, torch.Tensor], pool_sizes: dict[Key, int], proportion: float, scope: str = "per_module"
) -> dict[Key, torch.Tensor]:
    """Top ``proportion`` of units by score: per (layer, matrix) pool, or over all pools at once.

    NaN marks a unit the scorer did not score: it is never selected, and the proportion is of the scored
    units (a pool with no scored unit gives none). Without NaN this is the top ``proportion`` of the pool.
    """
    if scope not in SCOPES:
        raise ValueError(f"neurons.scope='{scope}' must be one of {', '.join(SCOPES)}")
    if scope == "per_module":
        return {k: _top(scores[k], _n_scored(scores[k], proportion)) for k in pool_sizes}
    keys = list(pool_sizes)
    flat = torch.cat([scores[k] for k in keys])
    chosen = _top(flat, _n_scored(flat, proportion))
    out, start = {}, 0
    for k in keys:
        end = start + pool_sizes[k]
        sel = chosen[(chosen >= start) & (chosen < end)]
        out[k] = sel - start
        start = end
    return out


def random_like(counts: dict[Key, int], pool_sizes: dict[Key, int], seed: int) -> dict[Key, torch.Tensor]:
    """A random control set: the same number of units in every pool, reproducible from ``seed``."""
    out = {}
    for k, n in counts.items():
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(key_str(k).encode()))
        out[k] = torch.sort(torch.randperm(pool_sizes[k], generator=g)[:n]).values
    return out


def all_units(pool_sizes: dict[Key, int]) -> dict[Key, torch.Tensor]:
    return {k: torch.arange(n) for k, n in pool_sizes.items()}


def at_proportion(nset: NeuronSet, proportion: float, scope: str = "per_module") -> NeuronSet:
    """The same task's top-``proportion`` set, re-selected from its stored scores."""
    assert nset.scores is not None
    meta = {**nset.meta, "proportion": float(proportion), "scope": scope}
    return NeuronSet(select_top(nset.scores, nset.pool_sizes, float(proportion), scope), dict(nset.pool_sizes), meta)
