"""Shared fixtures: offline, seeded, tiny models built from the project's own model configs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from taskneurons import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores; one compute thread each (and in the processes they start)
    # instead of N x cores threads fighting over them
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
# every run of the suite writes (runs, neuron store, resumable state) into a fresh folder of its own
os.environ["TASKNEURONS_OUTPUT"] = tempfile.mkdtemp(prefix="taskneurons-test-outputs-")
if "TASKNEURONS_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["TASKNEURONS_DATA"] = str(SHARED_DATA)


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadscope`` a worker takes a whole module at a time, in collection order:
    the modules with the longest tests (real SmolLM2, entry points as subprocesses) go first, so that no
    worker is left alone with a long one at the end. Each module stays in one piece (its module-scoped
    fixtures are built once). Without -n the order is pytest's own."""
    if not config.getoption("numprocesses", default=None):
        return

    def weight(item) -> int:
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("e2e") else 2

    first: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        first[module] = min(first.get(module, 2), weight(item))
    items.sort(key=lambda item: first[item.nodeid.split("::", 1)[0]])  # stable: a module keeps its order


def compose(config_name: str = "evaluate", overrides: list[str] | None = None):
    """Compose a config exactly as the entry point does (hydra.* resolvable)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)


@pytest.fixture(scope="session")
def data_dir() -> str:
    path = os.environ.get("TASKNEURONS_DATA")
    if not path or not Path(path).is_dir():
        pytest.fail("TASKNEURONS_DATA must point at the benchmark data (shared/data); `make test` sets it")
    return path


def tiny(name: str):
    from taskneurons.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(compose(overrides=[f"model={name}"]).model)


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny("tiny_llama")


@pytest.fixture(scope="session")
def tiny_bloom():
    return tiny("tiny_bloom")


@pytest.fixture(scope="session")
def tiny_gpt2():
    return tiny("tiny_gpt2")


@pytest.fixture(params=["tiny_llama", "tiny_bloom", "tiny_gpt2"])
def tiny_model(request):
    return request.getfixturevalue(request.param)


def quickstart_code(tag: str) -> str:
    """The ```python <tag> code block of docs/quickstart.md (the tests run what a user copies)."""
    import re

    text = (ROOT / "docs" / "quickstart.md").read_text()
    blocks = re.findall(rf"^```python {re.escape(tag)}\n(.*?)^```$", text, flags=re.M | re.S)
    assert len(blocks) == 1, f"docs/quickstart.md must hold one ```python {tag} block, found {len(blocks)}"
    return blocks[0]
