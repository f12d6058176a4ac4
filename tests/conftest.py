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
# every run of the suite writes (runs, neuron store, resumable state) into a fresh folder of its own
os.environ["TASKNEURONS_OUTPUT"] = tempfile.mkdtemp(prefix="taskneurons-test-outputs-")
if "TASKNEURONS_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["TASKNEURONS_DATA"] = str(SHARED_DATA)


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
