"""One normalisation for every source: raw row -> Example, or a problem naming where it came from."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from taskneurons.data.tasks import TaskSpec


@dataclass(frozen=True)
class Example:
    id: str
    fields: dict[str, str]  # what the prompt template reads
    target: str  # label string or reference text
    references: tuple[str, ...] = field(default=())  # all references for generation metrics

    @property
    def all_references(self) -> tuple[str, ...]:
        return self.references or (self.target,)


def normalize_row(row: dict[str, Any], spec: TaskSpec, where: str) -> tuple[Example | None, str | None]:
    """Check and convert one row. ``where`` is ``file:line`` (or hub split:index) for the message."""
    if not isinstance(row, dict):
        return None, f"{where}: expected a JSON object, got {type(row).__name__}"
    fields: dict[str, str] = {}
    for name in spec.prompt_fields:
        value = row.get(name)
        if value is None:
            return None, f"{where}: missing field '{name}' that tasks.{spec.name}.prompt reads"
        value = value if isinstance(value, str) else str(value)
        if not value.strip():
            return None, f"{where}: field '{name}' is empty; drop the row or fill it"
        fields[name] = value
    target = row.get("target")
    if target is None or not str(target).strip():
        return None, f"{where}: missing or empty 'target'"
    target = str(target)
    if spec.labels is not None and target not in spec.labels:
        return None, (
            f"{where}: label '{target}' is not in tasks.{spec.name}.labels {list(spec.labels)}; "
            "fix the row or add the label to the task config"
        )
    refs = row.get("references") or ()
    if refs and (not isinstance(refs, list) or not all(isinstance(r, str) and r.strip() for r in refs)):
        return None, f"{where}: 'references' must be a list of non-empty strings"
    ex_id = str(row.get("id", where))
    return Example(ex_id, fields, target, tuple(refs)), None


def sample_examples(examples: list[Example], cap: int | None, seed: int, task: str, split: str) -> list[Example]:
    """At most ``cap`` examples: a seeded shuffle, the same in every process (string seeds hash stably)."""
    if cap is None or cap >= len(examples):
        return list(examples)
    rng = random.Random(f"{seed}:{task}:{split}")
    idx = sorted(rng.sample(range(len(examples)), cap))
    return [examples[i] for i in idx]
