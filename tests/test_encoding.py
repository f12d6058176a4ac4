"""Prompt truncation, SFT collation (prompt masked out of the loss), padding, length-sorted batches."""

from __future__ import annotations

from taskneurons.data.encoding import (
    IGNORE_INDEX,
    LengthSortedBatches,
    collate_sft,
    encode_example,
    encode_prompt,
    pad,
)
from taskneurons.data.examples import Example
from taskneurons.data.tasks import TaskSpec
from taskneurons.models.tokenizers import byte_level_tokenizer

TOK = byte_level_tokenizer()
SPEC = TaskSpec("t", "classification", "### Input:\n{input}\n### Sentiment:", "accuracy", {"type": "local", "path": "x"},
                labels=("positive", "negative"))


def test_byte_tokenizer_round_trips_any_text():
    text = "Ünïcode — 'quotes' \n tabs\t & emoji 🙂"
    assert TOK.decode(TOK(text).input_ids) == text
    assert len(TOK) == 259 and TOK.pad_token_id != TOK.eos_token_id


def test_long_field_is_cut_and_the_answer_cue_survives():
    ids = encode_prompt(TOK, SPEC, {"input": "word " * 500}, max_tokens=64)
    text = TOK.decode(ids)
    assert len(ids) <= 64
    assert text.startswith("### Input:\nword") and text.endswith("\n### Sentiment:")


def test_short_prompt_is_untouched():
    ids = encode_prompt(TOK, SPEC, {"input": "great film"}, max_tokens=64)
    assert TOK.decode(ids) == "### Input:\ngreat film\n### Sentiment:"


def test_sft_labels_cover_only_target_and_eos():
    a = encode_example(TOK, SPEC, Example("a", {"input": "good"}, "positive"), 64, 16)
    b = encode_example(TOK, SPEC, Example("b", {"input": "a much longer review text"}, "negative"), 64, 16)
    batch = collate_sft([a, b], TOK.pad_token_id, TOK.eos_token_id)
    for i, e in enumerate([a, b]):
        labels = batch["labels"][i]
        n_prompt = len(e.prompt_ids)
        assert (labels[:n_prompt] == IGNORE_INDEX).all()
        real = labels[labels != IGNORE_INDEX].tolist()
        assert real == e.target_ids + [TOK.eos_token_id]
        assert TOK.decode(e.target_ids) == " " + e.example.target
    assert batch["attention_mask"][0].sum() == len(a.prompt_ids) + len(a.target_ids) + 1
    assert (batch["labels"][0][batch["attention_mask"][0] == 0] == IGNORE_INDEX).all()


def test_left_padding_aligns_the_last_tokens():
    ids, mask = pad([[1, 2, 3], [4]], pad_id=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_length_sorted_batches_cover_everything_once():
    lengths = [5, 1, 9, 3, 7]
    batches = list(LengthSortedBatches(lengths, 2))
    assert batches == [[2, 4], [0, 3], [1]]
