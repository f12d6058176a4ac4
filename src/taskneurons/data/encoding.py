"""Token-level view of examples: prompt ids (long field truncated to fit), target ids, padding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from taskneurons.data.examples import Example
from taskneurons.data.tasks import TaskSpec

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    example: Example
    prompt_ids: list[int]
    target_ids: list[int]  # target_prefix + target, no EOS
    label_index: int  # index into spec.labels, -1 for generation tasks


def encode_prompt(tok, spec: TaskSpec, fields: dict[str, str], max_tokens: int) -> list[int]:
    """Render and tokenize the prompt; if too long, shorten ``spec.truncate_field`` so the template's
    instruction and answer cue (usually at the end) survive."""
    ids = tok(spec.render_prompt(fields), add_special_tokens=True).input_ids
    excess = len(ids) - max_tokens
    name = spec.truncate_field
    if excess > 0 and name in fields:
        field_ids = tok(fields[name], add_special_tokens=False).input_ids
        # Token boundaries move a little on re-tokenisation, so shrink until it fits (rarely > 2 rounds).
        keep = max(len(field_ids) - excess, 1)
        for _ in range(4):
            shorter = dict(fields, **{name: tok.decode(field_ids[:keep])})
            ids = tok(spec.render_prompt(shorter), add_special_tokens=True).input_ids
            if len(ids) <= max_tokens or keep == 1:
                break
            keep = max(keep - (len(ids) - max_tokens), 1)
    if len(ids) > max_tokens:  # other fields alone are too long: keep the end, where the answer cue is
        ids = ids[-max_tokens:]
    return ids


def encode_target(tok, spec: TaskSpec, text: str, max_tokens: int) -> list[int]:
    return tok(spec.target_prefix + text, add_special_tokens=False).input_ids[:max_tokens]


def encode_example(tok, spec: TaskSpec, ex: Example, max_prompt_tokens: int, max_target_tokens: int) -> Encoded:
    label_index = spec.labels.index(ex.target) if spec.labels else -1
    return Encoded(
        ex,
        encode_prompt(tok, spec, ex.fields, max_prompt_tokens),
        encode_target(tok, spec, ex.target, max_target_tokens),
        label_index,
    )


def pad(seqs: list[list[int]], pad_id: int, side: str, value: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence; returns (ids, attention_mask). ``value`` overrides the fill id."""
    width = max(len(s) for s in seqs)
    fill = pad_id if value is None else value
    ids = torch.full((len(seqs), width), fill, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not s:
            continue
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def collate_sft(batch: list[Encoded], pad_id: int, eos_id: int) -> dict[str, torch.Tensor]:
    """Prompt + target + EOS, right-padded; the loss sees only target and EOS tokens."""
    seqs = [e.prompt_ids + e.target_ids + [eos_id] for e in batch]
    labels = [[IGNORE_INDEX] * len(e.prompt_ids) + e.target_ids + [eos_id] for e in batch]
    input_ids, attention_mask = pad(seqs, pad_id, "right")
    label_ids, _ = pad(labels, pad_id, "right", value=IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}


def collate_eval(batch: list[Encoded]) -> list[Encoded]:
    # Scorers pad themselves (left for generation and shared-prompt scoring).
    return batch


class LengthSortedBatches(torch.utils.data.Sampler[list[int]]):
    """Evaluation batches of similar prompt length (longest first, so memory peaks at once)."""

    def __init__(self, lengths: list[int], batch_size: int):
        self.batches = []
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        for start in range(0, len(order), batch_size):
            self.batches.append(order[start : start + batch_size])

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
