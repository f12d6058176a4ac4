"""``python -m taskneurons.analyze <command> [hydra overrides]``: overlap | similarity | correlate |
proportions | controlled (see ``analyze/jobs.py``). No model is loaded: the analyses read stored
neuron sets, saved weights (streamed layer by layer) and the metrics of finished runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from taskneurons.runtime.app import run_entry
from taskneurons.runtime.resume import JobState

USAGE = "usage: python -m taskneurons.analyze overlap|similarity|correlate|proportions|controlled [key=value ...]"


def analyze_job(cfg: DictConfig, out: Path, meta: dict, state: JobState) -> dict[str, Any]:
    from taskneurons.analyze.jobs import run_command

    return run_command(cfg, out)


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run_entry(cfg, analyze_job)


def cli() -> None:
    from taskneurons.analyze.jobs import COMMANDS

    args = sys.argv[1:]
    if args and args[0] in ("-h", "--help"):
        # Hydra's own help needs the command first: it shows that command's composed config
        print(f"{USAGE}\n\n{__doc__}\nHydra's help for one command (its config and overrides): "
              "python -m taskneurons.analyze <command> --help")
        return
    if not args or args[0] not in COMMANDS:
        given = args[0] if args else "nothing"
        print(f"error: the first argument must be a command ({', '.join(COMMANDS)}), got {given!r}; {USAGE}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], f"command={args[0]}", *args[1:]]
    main()


if __name__ == "__main__":
    cli()
