"""Scorers against known answers: shared-prompt label log-likelihood equals one plain forward per
(prompt, label); batched greedy decoding equals decoding each prompt alone."""

from __future__ import annotations

import pytest
import torch

from taskneurons.eval.scoring import (
    greedy_generate,
    label_loglik,
    match_label,
    normalize_answer,
    reference_label_loglik,
)

PROMPTS = [[5, 17, 42, 9, 33, 2], [7, 7, 8], [100, 3, 60, 61, 62, 63, 64, 65, 66], [1]]
LABELS = [[11], [12, 13, 14], [15, 16], [20, 21, 22, 23, 24]]  # one-token and multi-token labels


def test_shared_prompt_loglik_matches_plain_forward(tiny_model):
    model, tok = tiny_model
    got = label_loglik(model, PROMPTS, LABELS, tok.pad_token_id)
    want = torch.tensor([[reference_label_loglik(model, p, lab) for lab in LABELS] for p in PROMPTS])
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)


def test_mean_normalisation_divides_by_label_length(tiny_llama):
    model, tok = tiny_llama
    s = label_loglik(model, PROMPTS, LABELS, tok.pad_token_id, "sum")
    m = label_loglik(model, PROMPTS, LABELS, tok.pad_token_id, "mean")
    torch.testing.assert_close(m, s / torch.tensor([1.0, 3.0, 2.0, 5.0]))


def test_batched_greedy_equals_one_by_one(tiny_model):
    model, tok = tiny_model
    batched = greedy_generate(model, PROMPTS, 6, tok.pad_token_id, tok.eos_token_id)
    alone = [greedy_generate(model, [p], 6, tok.pad_token_id, tok.eos_token_id)[0] for p in PROMPTS]
    assert batched == alone
    assert all(len(x) <= 6 for x in batched)


@pytest.mark.parametrize(
    "text,expected",
    [(" Positive.\nmore", "positive"), ("The  Entailment!", "entailment"), ("\n\n  Science or Technology ", "science or technology")],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_match_label_exact_and_prefix():
    labels = ("negative", "very negative", "positive")
    assert match_label(" negative", labels) == 0
    assert match_label("Very negative.", labels) == 1
    assert match_label("negative review", labels) == -1
    assert match_label("negative review", labels, "prefix") == 0
    assert match_label("very negative, clearly", labels, "prefix") == 1
    assert match_label("neutral", labels, "prefix") == -1
