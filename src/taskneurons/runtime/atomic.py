"""Atomic writes: a result file is either complete or absent, never half-written; and the one
checksummed-JSON format with its reader (one stated policy for a damaged file, chosen by the caller)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_stream(path: str | Path, write: Callable[[BinaryIO], None],
                        before_replace: Callable[[str], None] | None = None) -> str:
    """``write(file)`` into a temp file beside ``path``, fsync, rename; returns the file's sha256.

    Large payloads (training checkpoints) go straight to the file: no second copy in memory.
    ``before_replace(digest)`` runs once the new content is on disk, before it replaces ``path`` (a
    sidecar that must know the new digest before the file changes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's PID is in the name, so a later cleanup can tell a dead writer's leftovers from live work
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should read like any other file
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            digest = _sha256_of_stream(f)
        if before_replace is not None:
            before_replace(digest)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_stream(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_of_stream(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_of_file(path: str | Path) -> str:
    """Read in chunks: a checkpoint's checksum never needs the whole file in memory."""
    with open(path, "rb") as f:
        return _sha256_of_stream(f)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_temp_files(folder: str | Path) -> int:
    """Remove temp files left by writers that died (``kill -9``) before renaming them."""
    n = 0
    for p in Path(folder).rglob(".*.tmp"):
        # ".<name>.<pid>.<random>.tmp": the writer's PID is the second field from the end
        pid_field = p.name[: -len(".tmp")].rsplit(".", 2)[-2]
        pid = int(pid_field) if pid_field.isdigit() else None
        if pid != os.getpid() and (pid is None or not _pid_alive(pid)):
            p.unlink(missing_ok=True)
            n += 1
    return n


def as_json(obj: Any) -> Any:
    """The value exactly as it reads back from JSON (int dict keys become strings, tuples lists), so
    a checksum taken before writing matches the one taken after reading."""
    return json.loads(json.dumps(obj, default=str))


def checksum_payload(payload: dict[str, Any]) -> str:
    """sha256 of a JSON document without its own ``checksum`` field."""
    body = as_json({k: v for k, v in payload.items() if k != "checksum"})
    return sha256_of(json.dumps(body, sort_keys=True).encode())


# The one checksummed-JSON format of the project (run metrics, neuron-set metadata, resumable job state):
# the payload's own fields plus ``checksum``, the sha256 of the rest as it reads back from JSON.
def write_json_with_checksum(path: str | Path, payload: dict[str, Any]) -> None:
    if not isinstance(payload, dict) or "checksum" in payload:
        raise TypeError(f"{path}: a checksummed JSON holds a dict without a 'checksum' key")
    payload = as_json(payload)
    atomic_write_json(path, {**payload, "checksum": checksum_payload(payload)})


DamagePolicy = Literal["raise", "set_aside"]


def read_json_with_checksum(path: str | Path, on_damage: DamagePolicy = "raise") -> dict[str, Any] | None:
    """A JSON written by ``write_json_with_checksum``, without its ``checksum`` field.

    A file that is not valid JSON (truncated) or whose checksum fails (edited, damaged) is never used;
    ``on_damage`` says what happens instead:

    - ``"raise"``: ValueError naming the file (an absent file: FileNotFoundError). For results a person or
      a report reads (``metrics.json``, a neuron set): the caller says what to do with it.
    - ``"set_aside"``: a warning, the file renamed to ``<name>.corrupt``, and None (an absent file: None).
      For resumable job state (``runtime/resume.py``): the step is computed again.
    """
    path = Path(path)
    if on_damage == "set_aside" and not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError:
        problem = "not valid JSON (truncated?)"
    else:
        if isinstance(doc, dict) and doc.get("checksum") == checksum_payload(doc):
            return {k: v for k, v in doc.items() if k != "checksum"}
        problem = "checksum mismatch (edited or damaged since it was written)"
    if on_damage == "raise":
        raise ValueError(f"{path}: {problem}")
    set_aside(path, problem)
    return None


def set_aside(path: Path, problem: str) -> None:
    """Keep a damaged file for inspection as ``<name>.corrupt``, out of the way of its recomputation."""
    log.warning("%s: %s; computing it again (the damaged file is kept as %s.corrupt)", path, problem, path.name)
    path.replace(path.with_name(path.name + ".corrupt"))
