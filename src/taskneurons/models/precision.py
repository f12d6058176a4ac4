"""Which dtype a model computes in: ``model.dtype: auto`` resolves to bf16 where the device has fast
bf16 matrix units and to fp32 elsewhere (a CPU without them runs bf16 *slower* than fp32).

- CUDA: bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and newer), else fp32.
- CPU: bf16 when the CPU has AMX-bf16 or AVX512-BF16 (read from torch's own CPU checks, and from
  ``/proc/cpuinfo`` on Linux), else fp32. fp16 on a CPU is slow and overflows easily: it is resolved to
  what ``auto`` would choose, with a message.

Training keeps what must be fp32 in fp32 whatever the weights are (the recipe per kind of training,
``precision_plan``): neuron-only delta rows and LoRA adapters (and their optimizer state) are fp32 beside a
bf16 base; full fine-tuning keeps fp32 master weights and optimizer state and computes in bf16 under
autocast (Lightning's ``bf16-mixed``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
# what a job trains: decides the recipe (conf/intervention/*.yaml and conf/continual/method/*.yaml `trains:`)
TRAINS = ("none", "neurons", "lora", "full")


def uses_cuda(accelerator: Any) -> bool:
    """Whether ``trainer.accelerator`` resolves to CUDA GPUs on this machine."""
    accelerator = str(accelerator).lower()
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


@functools.cache
def cpu_bf16_units() -> tuple[str, ...]:
    """The CPU's bf16 matrix instruction sets (``amx_bf16``, ``avx512_bf16``); empty when it has none."""
    found = set()
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        found.add("amx_bf16")
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        found.add("avx512_bf16")
    cpuinfo = Path("/proc/cpuinfo")
    if os.name == "posix" and cpuinfo.is_file():
        try:
            flags = next((ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags")), "").split()
        except OSError:
            flags = []
        found.update(f for f in ("amx_bf16", "avx512_bf16") if f in flags)
    return tuple(sorted(found))


@dataclass(frozen=True)
class Resolved:
    requested: str
    dtype: str          # the weights' dtype name (a key of DTYPES)
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"requested": self.requested, "resolved": self.dtype, "why": self.why}


def fast_bf16(accelerator: Any = "auto") -> tuple[bool, str]:
    """(bf16 is fast here, the reason in words)."""
    if uses_cuda(accelerator):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"CUDA device {torch.cuda.get_device_name(0)} computes bf16"
        return False, "this CUDA device has no fast bf16"
    units = cpu_bf16_units()
    if units:
        return True, f"CPU with {' and '.join(u.upper().replace('_', '-') for u in units)}"
    return False, "CPU without AMX-bf16 or AVX512-BF16 (bf16 would be slower than fp32 here)"


def resolve_dtype(requested: str, accelerator: Any = "auto") -> Resolved:
    """The dtype the weights are loaded in for ``model.dtype=<requested>`` on ``trainer.accelerator``."""
    requested = str(requested)
    if requested not in DTYPE_CHOICES:
        raise ValueError(f"model.dtype='{requested}' is not one of {', '.join(DTYPE_CHOICES)}")
    if requested == "auto":
        fast, why = fast_bf16(accelerator)
        return Resolved(requested, "bfloat16" if fast else "float32", why)
    if requested == "float16" and not uses_cuda(accelerator):
        fast, why = fast_bf16(accelerator)
        to = "bfloat16" if fast else "float32"
        return Resolved(requested, to, f"float16 on a CPU is slow and overflows; using {to} ({why})")
    return Resolved(requested, requested, "as requested")


@dataclass(frozen=True)
class PrecisionPlan:
    """How a job computes: the weights' dtype at load and Lightning's ``trainer.precision``."""

    weights: Resolved
    trainer_precision: str | None  # None: leave trainer.precision as configured
    recipe: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.weights.as_dict(), "trainer_precision": self.trainer_precision, "recipe": self.recipe}


def precision_plan(requested: str, accelerator: Any, trains: str) -> PrecisionPlan:
    """The recipe for a job that trains ``trains`` (none | neurons | lora | full)."""
    if trains not in TRAINS:
        raise ValueError(f"trains='{trains}' is not one of {', '.join(TRAINS)}")
    weights = resolve_dtype(requested, accelerator)
    if weights.dtype != "bfloat16":
        return PrecisionPlan(weights, None, f"{weights.dtype} throughout")
    if trains == "full" and requested == "auto":
        # bf16 weights cannot take small updates (8 mantissa bits): fp32 master weights, bf16 autocast compute
        kept = Resolved(requested, "float32", weights.why + "; full fine-tuning keeps fp32 master weights")
        return PrecisionPlan(kept, "bf16-mixed", "fp32 weights and optimizer state, bf16 autocast compute")
    recipes = {
        "none": "bf16 weights; log-softmax, scores and sums in fp32",
        "neurons": "frozen bf16 base; delta rows and their optimizer state in fp32",
        "lora": "frozen bf16 base; LoRA adapters and their optimizer state in fp32",
        "full": "bf16 weights and updates (as requested)",
    }
    return PrecisionPlan(weights, None, recipes[trains])
