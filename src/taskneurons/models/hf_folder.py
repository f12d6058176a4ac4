"""A model written as a standard Hugging Face folder: what any other tool (transformers, vLLM, lm-eval,
peft) loads with ``AutoModelForCausalLM.from_pretrained``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXPORT_RECORD = "taskneurons_export.json"  # where the folder came from (run, stage, task, source model)


def save_hf_folder(model: Any, tokenizer: Any, folder: str | Path, provenance: dict[str, Any],
                   push_to_hub: str | None = None, private: bool = True) -> Path:
    """``save_pretrained`` of model (safetensors) and tokenizer into ``folder``, with ``provenance`` beside
    them; ``push_to_hub="owner/name"`` uploads both (network and a login needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / EXPORT_RECORD).write_text(json.dumps(provenance, indent=2, default=str))
    if push_to_hub:
        model.push_to_hub(push_to_hub, private=private)
        tokenizer.push_to_hub(push_to_hub, private=private)
    return folder
