"""Resumable work: what a finished step produced is kept under a key derived from the config and the
code (a hash of the package's source, ``runtime/code_hash.py``), so the same command, run again after a
crash or a kill, picks up where it stopped, and an edited package computes its own results.

State lives in ``<paths.output_root>/state/<job>/<config key>/``. Every file is written atomically and
carries a sha256 that is checked on load (the project's one checksummed-JSON format,
``runtime/atomic.py``); a file that fails the check is reported, moved aside and recomputed, never used
(its ``on_damage="set_aside"`` policy).

One process at a time computes a configuration: ``JobState.lock()`` holds ``<state dir>/lock`` (an
flock, released by the kernel when its process dies, so a lock left by a killed process is simply taken
over). A second process started with the same configuration says which process holds the lock, waits,
and then reuses the finished result.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from taskneurons import __version__
from taskneurons.runtime.atomic import (
    atomic_write_stream,
    cleanup_temp_files,
    read_json_with_checksum,
    set_aside,
    sha256_of_file,
    write_json_with_checksum,
)
from taskneurons.runtime.code_hash import code_hash
from taskneurons.runtime.signals import STOP

log = logging.getLogger(__name__)
# Keys that change where or how a run is logged (or checked before it starts), not what it computes.
_NOT_IN_KEY = ("logger", "hydra", "experiment_name", "paths", "preflight")


def config_key(cfg: Any) -> str:
    data = OmegaConf.to_container(cfg, resolve=True)
    for k in _NOT_IN_KEY:
        data.pop(k, None)
    data["paths"] = {"data_dir": str(cfg.paths.data_dir)}  # the data read is part of the result
    # other code may compute something else: its results are not reused (resume=false forces it). The source
    # hash, not the git SHA: an uncommitted edit is other code too, and a wheel install has no git
    data["code"] = {"version": __version__, "source": code_hash()}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _rank_zero() -> bool:
    # in a distributed job (trainer=ddp) the ranks compute the same state; rank 0 alone writes it
    from taskneurons.runtime.distributed import is_global_zero

    return is_global_zero()


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
        return read_json_with_checksum(self._path(name), on_damage="set_aside") if self.enabled else None

    def put(self, name: str, payload: Any) -> None:
        if self.enabled and _rank_zero():
            write_json_with_checksum(self._path(name), payload)

    # tensors (training checkpoints): torch.save streamed to the file (a full model with optimizer state
    # is GBs: no in-memory copy), with a sha256 sidecar
    def put_tensors(self, name: str, obj: Any) -> None:
        if not self.enabled or not _rank_zero():
            return
        blob, meta = self.dir / f"{name}.pt", self.dir / f"{name}.pt.json"
        # The blob and its sidecar are two files: a kill between replacing one and the other must not leave a
        # pair that disagrees (that set a whole checkpoint aside). So the sidecar first names both digests,
        # then the blob is replaced, then the sidecar names the new one only: whichever blob is on disk when
        # the process dies, its sidecar accepts it.
        previous = read_json_with_checksum(meta, on_damage="set_aside") if meta.is_file() else None

        def announce(digest: str) -> None:
            if previous is not None and previous.get("sha256") and blob.is_file():
                write_json_with_checksum(meta, {"sha256": digest, "previous": previous["sha256"]})

        with STOP.deferred():  # a stop signal between the files would leave a mismatched pair
            digest = atomic_write_stream(blob, lambda f: torch.save(obj, f), before_replace=announce)
            write_json_with_checksum(meta, {"sha256": digest})

    def get_tensors(self, name: str) -> Any | None:
        if not self.enabled:
            return None
        blob_path = self.dir / f"{name}.pt"
        meta = read_json_with_checksum(self.dir / f"{name}.pt.json", on_damage="set_aside")
        if meta is None or not blob_path.is_file():
            return None
        if sha256_of_file(blob_path) not in {meta["sha256"], meta.get("previous")}:
            set_aside(blob_path, "checksum mismatch (damaged)")
            return None
        return torch.load(blob_path, map_location="cpu", weights_only=False)

    @contextmanager
    def lock(self, poll_seconds: float = 1.0) -> Iterator[None]:
        """Hold this configuration's lock; while another live process holds it, say which and wait."""
        if not self.enabled:
            yield
            return
        path = self.dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not _acquire(fd, path, poll_seconds):
                yield  # this filesystem has no locks: run unguarded, as before
                return
            left = _holder_text(fd)
            if left:  # a clean release empties the file: the last holder was killed while holding it
                log.warning("taking over the lock of this configuration left by a process that ended (%s)", left)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_me()).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing releases the flock


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _holder_text(fd: int) -> str:
    raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    if not raw:
        return ""
    try:
        h = json.loads(raw)
        return f"PID {h['pid']} on {h['host']} since {h['since']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return raw[:100]


def _acquire(fd: int, path: Path, poll_seconds: float) -> bool:
    """Block until the flock is ours (True), or return False where the filesystem has no locks."""
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if said:
                log.warning("the other run of this configuration ended; continuing")
            return True
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                log.warning("%s: this filesystem has no file locks (%s); two identical runs are not kept apart",
                            path, e.strerror)
                return False
            raise
        if not said:
            holder = _holder_text(fd) or "another process"
            log.warning("this configuration is being computed by %s (lock %s): waiting for it, then reusing "
                        "its result (resume=false computes it here anyway)", holder, path)
            said = True
        time.sleep(poll_seconds)
