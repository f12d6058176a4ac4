"""What a reader needs to reproduce a run: resolved config, overrides, code version, packages, seed."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys
import time
from typing import Any

from taskneurons import PROJECT_ROOT
from taskneurons.runtime.code_hash import code_hash

PACKAGES = (
    "taskneurons", "torch", "transformers", "pytorch-lightning", "hydra-core", "omegaconf",
    "datasets", "wandb", "torchmetrics", "safetensors", "tokenizers", "accelerate", "gguf",
)


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        if not (PROJECT_ROOT / ".git").exists():
            return None  # an installed package: no checkout (a repository around site-packages is not ours)
        try:
            r = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return []


def run_metadata(seed: int, job: str) -> dict[str, Any]:
    return {
        "job": job,
        "seed": seed,
        "overrides": hydra_overrides(),
        "command": " ".join(sys.argv),
        "git": git_state(),  # provenance only; results are keyed on code_hash
        "code_hash": code_hash(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
