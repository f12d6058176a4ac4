"""Resumable work: what a finished step produced is kept under a key derived from the config, so the
same command, run again after a crash or a kill, picks up where it stopped.

State lives in ``<paths.output_root>/state/<job>/<config key>/``. Every file is written atomically and
carries a sha256 that is checked on load; a file that fails the check is reported, moved aside and
recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from taskneurons import __version__
from taskneurons.runtime.atomic import as_json, atomic_write_bytes, atomic_write_json, cleanup_temp_files
from taskneurons.runtime.metadata import git_state

log = logging.getLogger(__name__)
# Keys that change where or how a run is logged, not what it computes.
_NOT_IN_KEY = ("logger", "hydra", "experiment_name", "paths")


def config_key(cfg: Any) -> str:
    data = OmegaConf.to_container(cfg, resolve=True)
    for k in _NOT_IN_KEY:
        data.pop(k, None)
    data["paths"] = {"data_dir": str(cfg.paths.data_dir)}  # the data read is part of the result
    # another code version may compute something else: its results are not reused (resume=false forces it)
    data["code"] = {"version": __version__, "git": git_state().get("sha")}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def write_checked_json(path: Path, payload: Any) -> None:
    """JSON with its own checksum: {"sha256": ..., "payload": ...} (digest of the value as it reads back)."""
    payload = as_json(payload)
    atomic_write_json(path, {"sha256": _digest(payload), "payload": payload})


def read_checked_json(path: Path) -> Any | None:
    """The payload, or None when absent; a damaged file is moved aside (``.corrupt``) and None returned."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if _digest(doc["payload"]) == doc["sha256"]:
            return doc["payload"]
    except (json.JSONDecodeError, KeyError, TypeError):
        pass
    log.warning("%s is damaged (checksum or JSON); recomputing it", path)
    path.replace(path.with_name(path.name + ".corrupt"))
    return None


class JobState:
    """Named, checksummed results of the finished steps of one job configuration."""

    def __init__(self, root: Path, job: str, key: str, enabled: bool = True):
        self.dir = Path(root) / "state" / job / key
        self.enabled = enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            cleanup_temp_files(self.dir)

    def _path(self, name: str) -> Path:
        return self.dir / (name.replace("/", "__") + ".json")

    def get(self, name: str) -> Any | None:
        return read_checked_json(self._path(name)) if self.enabled else None

    def put(self, name: str, payload: Any) -> None:
        if self.enabled:
            write_checked_json(self._path(name), payload)

    # tensors (training checkpoints): safetensors-free torch.save bytes with a sha256 sidecar
    def put_tensors(self, name: str, obj: Any) -> None:
        if not self.enabled:
            return
        import io

        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
        atomic_write_bytes(self.dir / f"{name}.pt", data)
        write_checked_json(self.dir / f"{name}.pt.json", {"sha256": hashlib.sha256(data).hexdigest()})

    def get_tensors(self, name: str) -> Any | None:
        if not self.enabled:
            return None
        blob_path, meta = self.dir / f"{name}.pt", read_checked_json(self.dir / f"{name}.pt.json")
        if meta is None or not blob_path.is_file():
            return None
        data = blob_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            log.warning("%s is damaged (checksum); starting that step again", blob_path)
            blob_path.replace(blob_path.with_name(blob_path.name + ".corrupt"))
            return None
        import io

        return torch.load(io.BytesIO(data), weights_only=False)
