"""LoRA through peft for the SeqLoRA and O-LoRA baselines, and O-LoRA's orthogonality loss.

peft injects its LoRA layers into the HF model in place; the stage loop keeps training and evaluating
that same HF model object (``peft_model.base_model.model``), so nothing else needs to know about peft.
O-LoRA (Wang et al. 2023, ``cmnfriend/O-LoRA``): a new LoRA per task, earlier ones frozen but active,
and ``λ1 Σ_layers Σ_old |A_old A_newᵀ|₁ + λ2 Σ ||new||₂`` added to the task loss.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf


def missing_targets(model: torch.nn.Module, targets: list[str]) -> list[str]:
    """Target module names that match no module of the model (peft would fail later, less clearly)."""
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [t for t in targets if t not in leaves]


def lora_config(lcfg: Any):
    from peft import LoraConfig

    return LoraConfig(r=int(lcfg.r), lora_alpha=int(lcfg.alpha), lora_dropout=float(lcfg.dropout),
                      target_modules=list(OmegaConf.to_container(lcfg.target_modules, resolve=True)
                                          if not isinstance(lcfg.target_modules, list) else lcfg.target_modules),
                      bias="none", task_type="CAUSAL_LM")


def wrap(model: torch.nn.Module, lcfg: Any, name: str, seed: int):
    """Inject a first adapter ``name`` (seeded init) and return the peft model."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, lora_config(lcfg), adapter_name=name)


def add_frozen_history(peft_model, lcfg: Any, name: str, seed: int, active: list[str]) -> None:
    """Add adapter ``name`` (seeded init); make ``active`` + name active, with only ``name`` trainable."""
    if name not in peft_model.peft_config:
        torch.manual_seed(seed)
        peft_model.add_adapter(name, lora_config(lcfg))
    peft_model.base_model.set_adapter([*active, name])
    for pname, p in peft_model.named_parameters():
        p.requires_grad_(f".{name}." in pname and "lora_" in pname)


def lora_layers(model: torch.nn.Module) -> list[Any]:
    return [m for m in model.modules() if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.nn.ModuleDict)]


def orthogonality(old: list[torch.Tensor], new: torch.Tensor) -> torch.Tensor:
    """Σ_old |A_old A_newᵀ| summed over entries (A: [r, in]); zero iff the row spaces are orthogonal."""
    total = new.new_zeros(())
    for a in old:
        total = total + (a @ new.t()).abs().sum()
    return total


def olora_regularizer(model: torch.nn.Module, old: list[str], new: str, lambda1: float, lambda2: float) -> torch.Tensor:
    total = None
    for layer in lora_layers(model):
        if new not in layer.lora_A:
            continue
        a_new = layer.lora_A[new].weight
        term = lambda1 * orthogonality([layer.lora_A[o].weight.detach() for o in old if o in layer.lora_A], a_new)
        if lambda2:
            term = term + lambda2 * (a_new.norm() + layer.lora_B[new].weight.norm())
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def adapter_state(peft_model, names: list[str]) -> dict[str, torch.Tensor]:
    """The LoRA parameters of the named adapters (what a LoRA stage checkpoint holds)."""
    return {n: p.detach().cpu().clone() for n, p in peft_model.named_parameters()
            if "lora_" in n and any(f".{a}." in n for a in names)}


@torch.no_grad()
def load_adapter_state(peft_model, state: dict[str, torch.Tensor]) -> None:
    own = dict(peft_model.named_parameters())
    for n, v in state.items():
        own[n].copy_(v)
