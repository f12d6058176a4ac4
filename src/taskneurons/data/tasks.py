"""TaskSpec: one task as conf/task/<name>.yaml describes it (source, prompt, labels, metric)."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

KINDS = ("classification", "generation")
METRICS = {"classification": ("accuracy",), "generation": ("rougeL",)}
SOURCE_TYPES = ("package", "local", "hub")
CLS_SCORERS = ("loglik", "generate")  # how a classification answer is read (eval/scoring.py)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    prompt: str
    metric: str
    source: dict[str, Any]
    labels: tuple[str, ...] | None = None
    target_prefix: str = " "
    truncate_field: str = "input"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_fields(self) -> list[str]:
        """The row fields the prompt template reads."""
        return [f for _, f, _, _ in string.Formatter().parse(self.prompt) if f]

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"

    def render_prompt(self, fields: dict[str, str]) -> str:
        return self.prompt.format(**{k: fields[k] for k in self.prompt_fields})


def _key(task: str, k: str) -> str:
    return f"tasks.{task}.{k}"


def validate_task_config(name: str, cfg: Any) -> list[str]:
    """Problems with one task config, each naming its key; empty when fine."""
    p: list[str] = []
    if cfg.get("kind") not in KINDS:
        p.append(f"{_key(name, 'kind')}='{cfg.get('kind')}' must be one of {', '.join(KINDS)}")
        return p
    allowed = METRICS[cfg.kind]
    if cfg.get("metric") not in allowed:
        p.append(f"{_key(name, 'metric')}='{cfg.get('metric')}' must be one of {', '.join(allowed)} for a {cfg.kind} task")
    prompt = cfg.get("prompt")
    if not prompt or not isinstance(prompt, str):
        p.append(f"{_key(name, 'prompt')} is empty: give a template such as '### Input:\\n{{input}}\\n### Answer:'")
    else:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None]
        except ValueError as e:
            p.append(f"{_key(name, 'prompt')} is not a valid template ({e}); escape literal braces as {{{{ }}}}")
        else:
            if not any(fields):
                p.append(f"{_key(name, 'prompt')} has no {{field}} placeholder, so every example would be the same")
            elif any(f == "" or f.isdigit() for f in fields):
                p.append(f"{_key(name, 'prompt')} has a positional placeholder; name the row field, e.g. {{input}}")
    labels = cfg.get("labels")
    if cfg.kind == "classification":
        if not labels or len(labels) < 2:
            p.append(f"{_key(name, 'labels')} must list at least two label strings for a classification task")
        elif len(set(labels)) != len(labels) or any(not str(x).strip() for x in labels):
            p.append(f"{_key(name, 'labels')} has duplicate or empty label strings: {list(labels)}")
    elif labels:
        p.append(f"{_key(name, 'labels')} must be null for a generation task")
    source = cfg.get("source") or {}
    if source.get("type") not in SOURCE_TYPES:
        p.append(f"{_key(name, 'source.type')}='{source.get('type')}' must be one of {', '.join(SOURCE_TYPES)}")
    elif source.type == "local" and not source.get("path"):
        p.append(f"{_key(name, 'source.path')} is empty: the task folder under paths.data_dir, e.g. generalization12/sst2")
    elif source.type == "package" and not source.get("loader"):
        p.append(f"{_key(name, 'source.loader')} is empty: name a loader in taskneurons.data.package_sources")
    elif source.type == "hub" and not (source.get("hub") or {}).get("id"):
        p.append(f"{_key(name, 'source.hub.id')} is empty: the dataset id on the Hugging Face hub")
    return p


def task_spec_from_config(name: str, cfg: DictConfig | dict) -> TaskSpec:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    known = {"name", "kind", "prompt", "metric", "source", "labels", "target_prefix", "truncate_field", "description"}
    return TaskSpec(
        name=name,
        kind=cfg["kind"],
        prompt=cfg["prompt"],
        metric=cfg["metric"],
        source=dict(cfg["source"]),
        labels=tuple(str(x) for x in cfg["labels"]) if cfg.get("labels") else None,
        target_prefix=cfg.get("target_prefix", " "),
        truncate_field=cfg.get("truncate_field", "input"),
        description=cfg.get("description", ""),
        extra={k: v for k, v in cfg.items() if k not in known},
    )
