"""The identity of the code that computes a result: a hash of the package's own source files.

Every cached result (job state, neuron sets, report artefacts) is keyed on it, so an edit, committed or
not, means recomputing instead of reusing what the old code produced. It needs no git (a wheel install
has no .git); the git SHA stays in the run metadata for provenance only. The config files are not
hashed here: their content is already in the resolved config that the key is taken from.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

# the folder whose ``**/*.py`` is hashed; a test points it at a copy of the package
SOURCE_DIR = Path(__file__).resolve().parents[1]


def source_hash(root: Path) -> str:
    """16 hex digits of every ``*.py`` below ``root`` (their paths and bytes), read now."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        # the relative path is part of the hash: moving code between files is a change too
        data = path.read_bytes()
        h.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


@functools.cache
def _hash_once(root: Path) -> str:
    return source_hash(root)


def code_hash() -> str:
    """The source hash of the package, computed once per process: the code it runs does not change."""
    return _hash_once(SOURCE_DIR)
