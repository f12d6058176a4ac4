"""What an analysis artefact records about the sweep behind it (its command, its caps), and the call into
the one artefact writer (``report/artefacts.py``: table.md, result.json, figures, W&B)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from taskneurons.report.artefacts import write_result

# caps recorded in result.json: the keys of a job's config that bound its cost
CAP_KEYS = ("data.max_train", "data.max_test", "data.max_prompt_tokens", "data.max_target_tokens", "data.batch_size",
            "neurons.max_examples", "optim.max_steps", "optim.lr", "eval.gen_max_new_tokens", "eval.cls_scorers")


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
    """An analysis artefact through the one writer (report/artefacts.py); ``markdown`` is its table.md body."""
    result = {"artefact": artefact, "scale": scale, "title": title, "tables": tables, "paper": paper,
              "figures": [p.name for p in figures], "commands": commands, "caps": caps, "model": model,
              "seeds": sorted(set(seeds)), "body_md": markdown}
    return write_result(result, out_dir, logger_cfg)
