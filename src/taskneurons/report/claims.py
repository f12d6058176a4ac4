"""The claim registry (experiments/claims.yaml): loaded and checked in one place.

A bad registry is one ``ConfigError`` naming the entry and the field, before anything is measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taskneurons import EXPERIMENTS_DIR
from taskneurons.errors import ConfigError

UNITS = ("points", "r", "cosine")
NEEDED = ("id", "paper", "artefact", "claim", "measure", "direction", "sesoi", "units", "test")


@dataclass(frozen=True)
class Premise:
    id: str
    text: str
    check: dict[str, Any]


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    artefact: str
    claim: str
    measure: dict[str, Any]
    direction: int
    sesoi: float
    units: str
    test: str
    paper_effect: float | None = None
    premises: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Registry:
    claims: tuple[Claim, ...]
    premises: dict[str, Premise]


def load_registry(path: Path | None = None, artefacts: list[str] | None = None,
                  measures: set[str] | None = None, checks: set[str] | None = None) -> Registry:
    """Read and validate the registry; ``artefacts``/``measures``/``checks`` are the names that exist."""
    path = path or EXPERIMENTS_DIR / "claims.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the claim registry ({e})") from None
    problems: list[str] = []
    premises: dict[str, Premise] = {}
    for p in raw.get("premises") or []:
        if not isinstance(p, dict) or not {"id", "text", "check"} <= set(p) or "kind" not in (p.get("check") or {}):
            problems.append(f"{path}: premise {p!r} needs id, text and check: {{kind: ...}}")
            continue
        if checks is not None and p["check"]["kind"] not in checks:
            problems.append(f"{path}: premise {p['id']}: unknown check kind {p['check']['kind']!r} "
                            f"(choose from {', '.join(sorted(checks))})")
        premises[p["id"]] = Premise(p["id"], p["text"], dict(p["check"]))
    claims: list[Claim] = []
    seen: set[str] = set()
    for c in raw.get("claims") or []:
        if not isinstance(c, dict):
            problems.append(f"{path}: claim {c!r} is not a mapping")
            continue
        name = c.get("id", "?")
        missing = [k for k in NEEDED if k not in c]
        if missing:
            problems.append(f"{path}: claim {name} lacks {', '.join(missing)}")
            continue
        if name in seen:
            problems.append(f"{path}: claim id {name} appears twice")
        seen.add(name)
        if c["direction"] not in (1, -1):
            problems.append(f"{path}: claim {name}: direction must be 1 or -1 (got {c['direction']!r})")
        if c["units"] not in UNITS:
            problems.append(f"{path}: claim {name}: units must be one of {', '.join(UNITS)} (got {c['units']!r})")
        if not isinstance(c["sesoi"], int | float) or c["sesoi"] <= 0:
            problems.append(f"{path}: claim {name}: sesoi must be a number > 0 (got {c['sesoi']!r})")
        kind = (c["measure"] or {}).get("kind") if isinstance(c["measure"], dict) else None
        if kind is None or (measures is not None and kind not in measures):
            problems.append(f"{path}: claim {name}: measure.kind {kind!r} is not one of "
                            f"{', '.join(sorted(measures or []))}")
        if artefacts is not None and c["artefact"] not in artefacts:
            problems.append(f"{path}: claim {name}: artefact {c['artefact']!r} is not in experiments/artefacts.yaml")
        unknown = [p for p in c.get("premises") or [] if p not in premises]
        if unknown:
            problems.append(f"{path}: claim {name}: unknown premise {', '.join(unknown)} (define it under premises:)")
        claims.append(Claim(id=name, paper=c["paper"], artefact=c["artefact"], claim=c["claim"],
                            measure=dict(c["measure"]) if isinstance(c["measure"], dict) else {},
                            direction=c["direction"], sesoi=c["sesoi"], units=c["units"], test=c["test"],
                            paper_effect=c.get("paper_effect"), premises=tuple(c.get("premises") or ())))
    if problems:
        raise ConfigError(problems)
    if not claims:
        raise ConfigError(f"{path}: the registry has no claims")
    return Registry(tuple(claims), premises)
