"""The FFN adapter registry names every FFN matrix with the right shape and layout."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from taskneurons.models.ffn import UnsupportedModelError, ffn_matrices, supported_model_types

H, INTER = 32, 48  # hidden and intermediate sizes that differ, so a transposed layout cannot hide

TINY_CONFIGS = {
    "llama": dict(hidden_size=H, intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(hidden_size=H, intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "qwen2": dict(hidden_size=H, intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "qwen3": dict(hidden_size=H, intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "gemma": dict(hidden_size=H, intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "gemma2": dict(hidden_size=H, intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "bloom": dict(hidden_size=H, n_layer=2, n_head=4),
    "gpt2": dict(n_embd=H, n_inner=INTER, n_layer=2, n_head=4, n_positions=64),
    "gpt_neox": dict(hidden_size=H, intermediate_size=INTER, num_hidden_layers=2, num_attention_heads=4),
    "opt": dict(hidden_size=H, ffn_dim=INTER, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=H),
}
EXPECTED_NAMES = {
    "llama": ["gate_proj", "up_proj", "down_proj"],
    "bloom": ["dense_h_to_4h", "dense_4h_to_h"],
    "gpt2": ["c_fc", "c_proj"],
    "gpt_neox": ["dense_h_to_4h", "dense_4h_to_h"],
    "opt": ["fc1", "fc2"],
}


def build(model_type: str):
    cfg = AutoConfig.for_model(model_type, vocab_size=64, **TINY_CONFIGS[model_type])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def test_registry_covers_the_required_architectures():
    assert {"llama", "mistral", "qwen2", "bloom", "gpt2", "gpt_neox", "opt"} <= set(supported_model_types())
    assert set(TINY_CONFIGS) == set(supported_model_types())


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_every_ffn_matrix_is_found_with_its_shape(model_type):
    model = build(model_type)
    mats = ffn_matrices(model)
    layers = sorted({m.layer for m in mats})
    assert layers == [0, 1]
    names = [m.name for m in mats if m.layer == 0]
    assert names == EXPECTED_NAMES.get(model_type, EXPECTED_NAMES["llama"])
    inter = 4 * H if model_type == "bloom" else INTER
    for m in mats:
        want_out, want_in = (inter, H) if m.role == "in" else (H, inter)
        assert (m.out_features, m.in_features) == (want_out, want_in), (m.name, m.out_features, m.in_features)
        assert m.unit_weight().shape == (want_out, want_in)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "bloom", "opt"])
def test_unit_weight_rows_produce_the_output_units(model_type):
    """Row u of unit_weight (+ bias[u]) computes output unit u: holds for Conv1D's transposed layout too."""
    model = build(model_type)
    for m in ffn_matrices(model):
        x = torch.randn(3, m.in_features)
        y = m.module(x)
        manual = x @ m.unit_weight().T + (m.bias if m.bias is not None else 0)
        torch.testing.assert_close(y, manual)


def test_unsupported_model_says_what_to_add():
    cfg = AutoConfig.for_model("gptj", vocab_size=64, n_embd=32, n_layer=1, n_head=4, rotary_dim=8)
    model = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(UnsupportedModelError, match="gptj.*ARCHITECTURES.*ffn.py"):
        ffn_matrices(model)
