"""Writing a paper artefact (the contract every artefact target follows): ``table.md`` with our numbers
beside the paper's (or its stated trend), PNG figures and ``result.json`` in
``<results_dir>/<artefact>/<scale>/``, and the same tables and images in an (offline) W&B run."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from taskneurons import EXPERIMENTS_DIR
from taskneurons.runtime.atomic import atomic_write_json, atomic_write_text
from taskneurons.runtime.metadata import git_state

log = logging.getLogger(__name__)
# caps recorded in result.json: the keys of a job's config that bound its cost
CAP_KEYS = ("data.max_train", "data.max_test", "data.max_prompt_tokens", "data.max_target_tokens", "data.batch_size",
            "neurons.max_examples", "optim.max_steps", "optim.lr", "eval.gen_max_new_tokens", "eval.cls_scorers")


def paper_numbers(key: str) -> dict[str, Any]:
    path = EXPERIMENTS_DIR / "paper_numbers.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get(key, {}) if path.is_file() else {}


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(columns: list[str], rows: list[list[Any]], digits: int = 1) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(c, digits) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def sweep_command(sweep_dir: Path) -> str | None:
    """The multirun that filled ``sweep_dir``, from Hydra's own record of it."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
        h = doc["hydra"]
        return f"python -m taskneurons.{h['job']['name'].split('.')[-1]} --multirun " + " ".join(
            shlex.quote(o) for o in h["overrides"]["task"])
    except (KeyError, TypeError, yaml.YAMLError):
        return None


def job_caps(config_yaml: Path) -> dict[str, Any]:
    if not config_yaml.is_file():
        return {}
    cfg = yaml.safe_load(config_yaml.read_text())
    out = {}
    for key in CAP_KEYS:
        v: Any = cfg
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is not None:
            out[key] = v
    return out


def this_command() -> str:
    args = list(sys.argv[1:])
    if args and args[0].startswith("command="):  # put back as the user typed it: the command comes first
        args[0] = args[0].split("=", 1)[1]
    return "python -m taskneurons.analyze " + " ".join(shlex.quote(a) for a in args)


def write_artefact(out_dir: Path, *, artefact: str, scale: str, title: str, tables: dict[str, dict],
                   paper: dict[str, Any], figures: list[Path], commands: list[str], caps: dict[str, Any],
                   model: str, seeds: list[int], markdown: str, logger_cfg: Any = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"artefact": artefact, "scale": scale, "title": title, "tables": tables, "paper": paper,
              "figures": [p.name for p in figures], "commands": commands, "caps": caps,
              "git_sha": git_state().get("sha"), "model": model, "seeds": sorted(set(seeds))}
    atomic_write_text(out_dir / "table.md", f"# {title}\n\n{markdown}\n\nModel: {model}; scale: {scale}; seeds: "
                      f"{result['seeds']}; caps: {json.dumps(caps, sort_keys=True)}\n\nCommands:\n\n"
                      + "\n".join(f"    {c}" for c in commands) + "\n")
    atomic_write_json(out_dir / "result.json", result)
    log_to_wandb(out_dir, result, figures, logger_cfg)
    return out_dir / "result.json"


def log_to_wandb(out_dir: Path, result: dict[str, Any], figures: list[Path], logger_cfg: Any) -> None:
    """Tables and images in a W&B run (offline by default); never costs the result."""
    if logger_cfg is None or logger_cfg.get("type") != "wandb":
        return
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project=logger_cfg.get("project") or "taskneurons", mode=os.environ.get("WANDB_MODE", logger_cfg.get("mode")),
                         dir=str(out_dir), job_type="analyze", group=f"{result['artefact']}_{result['scale']}",
                         name=f"{result['artefact']}-{result['scale']}", config={k: result[k] for k in ("caps", "commands", "model", "seeds", "git_sha")},
                         reinit=True)
        payload: dict[str, Any] = {}
        for name, t in result["tables"].items():
            payload[f"{result['artefact']}/{name}"] = wandb.Table(columns=[str(c) for c in t["columns"]],
                                                                  data=[[None if c is None else c for c in r] for r in t["rows"]])
        for p in figures:
            payload[f"{result['artefact']}/{p.stem}"] = wandb.Image(str(p))
        run.log(payload)
        run.finish()
    except Exception as e:  # W&B failing must not fail the artefact
        log.warning("W&B logging of %s skipped: %s", result["artefact"], e)
