"""What the benchmarks run on: SmolLM2, a wider random-init Llama, real starter batches, RSS readings."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from taskneurons import CONF_DIR
from taskneurons.data.encoding import collate_sft, encode_example
from taskneurons.data.loading import load_tasks
from taskneurons.data.tasks import task_spec_from_config
from taskneurons.models.loading import load_model_and_tokenizer
from taskneurons.runtime.rss import reset_peak_rss, status_mb  # noqa: F401  (the benchmarks import them from here)

MID_LLAMA = dict(config=dict(model_type="llama", hidden_size=768, intermediate_size=3072, num_hidden_layers=6,
                             num_attention_heads=12, num_key_value_heads=4, tie_word_embeddings=False))


def load_models(which: list[str]) -> dict[str, tuple[Any, Any]]:
    """SmolLM2 (``smollm2_135m``: model.dtype=auto; ``smollm2_135m_fp32``: fp32), and a random-init Llama
    about 3x its FFN width that shares its real tokenizer (so label strings are 1-2 tokens, as with any real
    model, not the bytes of the test tokenizer)."""
    smol_cfg = OmegaConf.load(CONF_DIR / "model" / "smollm2_135m.yaml")
    smol = load_model_and_tokenizer(smol_cfg)  # model.dtype=auto: bf16 where this machine computes it fast
    models = {}
    for name in which:
        if name == "smollm2_135m":
            models[name] = smol
        elif name == "smollm2_135m_fp32":  # the same model forced to fp32: every ratio for both dtypes
            smol_cfg.dtype = "float32"
            models[name] = load_model_and_tokenizer(smol_cfg)
        else:
            tok = smol[1]
            config = AutoConfig.for_model(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **MID_LLAMA["config"])
            torch.manual_seed(0)
            models[name] = (AutoModelForCausalLM.from_config(config).eval(), tok)
    return models


def _task(name: str):
    return task_spec_from_config(name, OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml"))


def starter_batches(tok, task: str, n: int, batch_size: int, max_tokens: int):
    """Prompt batches of a starter task's test split, and the token ids of its label strings."""
    spec = _task(task)
    data = load_tasks([spec], None, 0, n, 0, splits=("test",))[task]
    enc = [encode_example(tok, spec, ex, max_tokens, 16) for ex in data.test]
    prompts = [e.prompt_ids for e in enc]
    labels = [tok(spec.target_prefix + lab, add_special_tokens=False).input_ids for lab in spec.labels]
    return [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)], labels


def train_batches(tok, n_batches: int = 3, batch_size: int = 8, max_tokens: int = 64) -> list[dict]:
    """Real Rotten Tomatoes training examples as SFT batches (8 x <= 64 tokens)."""
    spec = _task("rotten_tomatoes")
    data = load_tasks([spec], None, n_batches * batch_size, 1, 0)["rotten_tomatoes"]
    enc = [encode_example(tok, spec, ex, max_tokens - 4, 4) for ex in data.train]
    return [collate_sft(enc[i : i + batch_size], tok.pad_token_id, tok.eos_token_id) for i in range(0, len(enc), batch_size)]


def run_worker(*args: str) -> dict[str, Any]:
    """``python -m taskneurons.bench <args>`` in a fresh process; its last stdout line is JSON."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "taskneurons.bench", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bench worker {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
