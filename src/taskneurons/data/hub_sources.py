"""Hub datasets (the paper's originals), mapped onto the same row shape as the local JSONL files.

Only ``map_hub_row`` is pure; it is what the tests check. Downloading needs the network or the local
cache; ``data/hub_access.py`` checks that before any work and explains a failure in one line.
"""

from __future__ import annotations

from typing import Any

from taskneurons.data.hub_access import hub_problem
from taskneurons.errors import ConfigError


def map_hub_row(raw: dict[str, Any], hub: dict[str, Any], index: int, split: str) -> dict[str, Any]:
    """Rename fields (``fields: {ours: theirs}``), map labels (``label_map``), join list fields."""
    row: dict[str, Any] = {"id": f"{hub['id']}-{split}-{index}"}
    for ours, theirs in (hub.get("fields") or {}).items():
        value = raw.get(theirs)
        if isinstance(value, list) and ours != "references":
            value = hub.get("list_separator", ", ").join(str(v) for v in value)
        row[ours] = value
    label_map = hub.get("label_map")
    if label_map and row.get("target") is not None:
        key = row["target"]
        row["target"] = label_map.get(key, label_map.get(str(key)))
    if isinstance(row.get("references"), list) and not row.get("target"):
        row["target"] = row["references"][0] if row["references"] else None
    return row


def load_hub_rows(hub: dict[str, Any], split: str) -> list[dict[str, Any]]:
    import datasets

    hub_split = (hub.get("splits") or {}).get(split)
    if hub_split is None:
        return []
    try:
        ds = datasets.load_dataset(hub["id"], hub.get("config"), split=hub_split, revision=hub.get("revision"))
    except (OSError, ConnectionError) as e:  # cache, network or login: say which, in one line
        why = hub_problem(str(hub["id"]), "dataset", hub.get("revision"), "source.hub.id",
                          "point the task's source at a local copy (source.type=local)")
        raise ConfigError(why or f"source.hub.id: hub dataset '{hub['id']}' could not be loaded: {e}") from None
    return [map_hub_row(dict(r), hub, i, split) for i, r in enumerate(ds)]
