"""Can a Hugging Face hub repository be used here? Asked before any other work, answered in one line.

A repository is usable when it is a local folder, when it is in the local cache (hub snapshots; for
datasets also the ``datasets`` cache), or when the hub answers that this machine may read it. Otherwise
the problem says what is missing, why (offline mode, no network, gated without a login, not found) and
the remedy (a local copy, or logging in).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_TRUE = {"1", "on", "yes", "true"}
LOGIN = "`huggingface-cli login` (huggingface_hub >= 1.0: `hf auth login`) or set HF_TOKEN"


def offline(repo_type: str) -> str | None:
    """The environment variable that puts this kind of repository offline, if one is set."""
    names = ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE" if repo_type == "dataset" else "TRANSFORMERS_OFFLINE"]
    return next((n for n in names if os.environ.get(n, "").strip().lower() in _TRUE), None)


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def is_cached(repo_id: str, repo_type: str, revision: str | None) -> bool:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_files_only=True)
        return True
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if repo_type == "dataset":  # a dataset prepared earlier by `datasets` is usable offline as well
        import datasets

        return (Path(datasets.config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")).is_dir()
    return False


def access_error(repo_id: str, repo_type: str) -> str | None:
    """Ask the hub whether this machine may read the repository; the reason when not."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    url = endpoint()
    try:
        HfApi(endpoint=url).auth_check(repo_id, repo_type=repo_type)
    except GatedRepoError:
        page = f"{url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        return f"it is gated and this machine is not logged in with an account that accepted its terms ({page})"
    except RepositoryNotFoundError:
        return f"{url} does not know it (a typo, or a private repository that needs a login)"
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        return f"the hub at {url} answered HTTP {status}"
    except Exception as e:  # httpx/requests connection errors and timeouts: no network, or no hub there
        return f"the hub at {url} cannot be reached (no network? {type(e).__name__})"
    return None


def hub_problem(repo_id: str, repo_type: str, revision: str | None, key: str, local_copy: str) -> str | None:
    """One line when ``repo_id`` cannot be used here, naming ``key``; None when it can.

    ``local_copy`` says how to point the config at a local copy instead.
    """
    if Path(repo_id).expanduser().is_dir():
        return None
    if is_cached(repo_id, repo_type, revision):
        return None
    kind = "dataset" if repo_type == "dataset" else "model"
    download = f"download it once where the hub is reachable (`hf download {repo_id}{' --repo-type dataset' if kind == 'dataset' else ''} --local-dir DIR`)"
    flag = offline(repo_type)
    if flag:
        return (f"{key}: hub {kind} '{repo_id}' is not in the local cache and {flag}=1 (offline mode): "
                f"{download} and {local_copy}, or unset {flag}")
    why = access_error(repo_id, repo_type)
    if why is None:
        return None
    if "gated" in why:
        return f"{key}: hub {kind} '{repo_id}' cannot be downloaded: {why}; accept them there, then {LOGIN}"
    return f"{key}: hub {kind} '{repo_id}' cannot be downloaded: {why}; {download} and {local_copy}"


def dataset_problems(tasks: list[Any]) -> list[str]:
    """Problems of the tasks that read hub datasets (``source.type=hub``)."""
    out = []
    for spec in tasks:
        if spec.source.get("type") != "hub":
            continue
        hub = spec.source["hub"]
        local = (f"set tasks.{spec.name}.source.hub.id=DIR, or use JSONL files under paths.data_dir: "
                 f"tasks.{spec.name}.source.type=local tasks.{spec.name}.source.path=<folder>")
        p = hub_problem(str(hub["id"]), "dataset", hub.get("revision"), f"tasks.{spec.name}.source.hub.id", local)
        if p:
            out.append(p)
    return out
