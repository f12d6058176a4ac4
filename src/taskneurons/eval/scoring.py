"""Scorers: label log-likelihood (prompt read once, shared by every label) and batched greedy decoding.

Both pad prompts on the left so every prompt ends at the same position: the next-token logits sit in
one column (``logits_to_keep=1``), and continuation / generated tokens follow without gaps.
"""

from __future__ import annotations

import inspect
import re
import string
from functools import cache

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor, LogitsProcessorList

from taskneurons.data.encoding import pad
from taskneurons.errors import NumericalError


@cache
def _forward_params(model_cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_cls.forward).parameters)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    # With left padding, real tokens start at 0 wherever they sit in the row.
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def label_loglik(
    model: torch.nn.Module, prompts: list[list[int]], labels: list[list[int]], pad_id: int, normalize: str = "sum"
) -> torch.Tensor:
    """Log-probability of each label's tokens after each prompt: ``[n_prompts, n_labels]``.

    The prompt batch runs once with the KV cache; the cache is repeated for the labels and only the
    label tokens (all but the last, whose probability the previous position gives) run again.
    """
    params = _forward_params(type(model))
    device = next(model.parameters()).device
    ids, mask = pad(prompts, pad_id, "left")
    ids, mask = ids.to(device), mask.to(device)
    kw = {"position_ids": _positions(mask)} if "position_ids" in params else {}
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, **kw)
    first = F.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
    n_prompts, n_labels = len(prompts), len(labels)
    first_tok = torch.tensor([lab[0] for lab in labels], device=device)
    scores = first[:, first_tok].clone()  # [B, L]
    lengths = torch.tensor([len(lab) for lab in labels], device=device)
    width = int(lengths.max()) - 1
    if width > 0:
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(n_labels)
        feed = [lab[:-1] for lab in labels] * n_prompts  # row b*L + l is label l after prompt b
        cont_ids, cont_mask = pad(feed, pad_id, "right")
        cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
        full_mask = torch.cat([mask.repeat_interleave(n_labels, 0), cont_mask], dim=1)
        kw = {}
        if "position_ids" in params:
            start = mask.sum(-1).repeat_interleave(n_labels)[:, None]
            kw["position_ids"] = start + torch.arange(width, device=device)[None]
        # transformers >= 5.2x renamed the argument `past_key_values` -> `cache`.
        kw["cache" if "cache" in params else "past_key_values"] = cache
        out2 = model(input_ids=cont_ids, attention_mask=full_mask, use_cache=False, **kw)
        logp = F.log_softmax(out2.logits.float(), dim=-1)  # [B*L, T, V]
        nxt, nxt_mask = pad([lab[1:] for lab in labels] * n_prompts, pad_id, "right")
        nxt, nxt_mask = nxt.to(device), nxt_mask.to(device)
        tok_lp = logp.gather(-1, nxt[..., None]).squeeze(-1) * nxt_mask
        scores = scores + tok_lp.sum(-1).view(n_prompts, n_labels)
    if normalize == "mean":
        scores = scores / lengths[None].float()
    return scores


@torch.no_grad()
def reference_label_loglik(model: torch.nn.Module, prompt: list[int], label: list[int]) -> float:
    """The plain way (one full forward per prompt+label); the known answer the tests compare against."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + label], device=device)
    logp = F.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(label) - 1, device=device)
    return float(logp[pos, torch.tensor(label, device=device)].sum())


class FiniteLogits(LogitsProcessor):
    """Raises NumericalError on NaN or +inf next-token logits, or a row that is -inf everywhere (greedy
    decoding would pick an arbitrary token and score it as if the model had chosen it). A few -inf
    entries are normal: other processors (suppressed tokens) set them."""

    def __init__(self):
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.step += 1
        bad = torch.isnan(scores).any(-1) | torch.isposinf(scores).any(-1) | torch.isneginf(scores).all(-1)
        if bool(bad.any()):
            raise NumericalError(f"generation logits are not finite at new token {self.step} "
                                 f"({int(bad.sum())} of {scores.shape[0]} prompts)")
        return scores


def nonfinite(t: torch.Tensor) -> str | None:
    """"nan" or "inf" when ``t`` holds such a value, else None."""
    if bool(torch.isnan(t).any()):
        return "nan"
    return None if bool(torch.isfinite(t).all()) else "inf"


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module, prompts: list[list[int]], max_new_tokens: int, pad_id: int, eos_id: int | list[int]
) -> list[list[int]]:
    """Batched greedy decoding with the KV cache; returns the new tokens of each prompt, EOS cut."""
    device = next(model.parameters()).device
    ids, mask = pad(prompts, pad_id, "left")
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        logits_processor=LogitsProcessorList([FiniteLogits()]),
    )
    eos = set(eos_id if isinstance(eos_id, list) else [eos_id])
    result = []
    for row in out[:, ids.shape[1] :].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        result.append(row[:cut])
    return result


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style: first non-empty line, lower case, no punctuation or articles, single spaces."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = _ARTICLES.sub(" ", line.lower().translate(_PUNCT))
    return " ".join(line.split())


def match_label(generated: str, labels: tuple[str, ...], mode: str = "exact") -> int:
    """Index of the label the generated text names, or -1. ``prefix`` also accepts 'positive review'."""
    norm = normalize_answer(generated)
    norm_labels = [normalize_answer(lab) for lab in labels]
    for i, lab in enumerate(norm_labels):
        if norm == lab:
            return i
    if mode == "prefix":
        # Longest label first so 'very negative' wins over 'negative'... only when it is a prefix.
        for i in sorted(range(len(labels)), key=lambda j: -len(norm_labels[j])):
            if norm_labels[i] and (norm + " ").startswith(norm_labels[i] + " "):
                return i
    return -1
