"""Sweep folder names that always fit the file system.

Sweeps name each job's folder by its overrides (``hydra.sweep.subdir=${hydra.job.override_dirname}``), which
keeps folders readable and stable across reruns. With a few list overrides the name passes the 255-byte limit
of a file name and the job dies with "File name too long" before it starts. ``${tn_dirname:...}`` keeps a
short name as it is and cuts a long one, adding a digest of the whole name so that jobs stay distinct.
"""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

MAX_NAME_BYTES = 200  # below the usual 255 (ext4, xfs), with room for temp-file prefixes and suffixes


def short_dirname(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """``name`` if it fits in ``limit`` bytes, else its first bytes + "~" + 12 hex digits of its sha256."""
    raw = name.encode()
    if len(raw) <= limit:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    head = raw[: limit - len(digest) - 1].decode(errors="ignore")
    return f"{head}~{digest}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("tn_dirname"):
        OmegaConf.register_new_resolver("tn_dirname", lambda name: short_dirname(str(name)))
