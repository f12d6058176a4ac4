"""Shared fixtures: offline, seeded, tiny models built from the project's own model configs."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
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
    fixtures are built once). Without -n the order is pytest's own. The workers collect (xdist sets their
    numprocesses to None, so a worker is recognised by its workerinput) and the scheduler hands out modules
    in their collection order (`--no-loadscope-reorder`, pytest-xdist >= 3.8; the Makefile's test target)."""
    if not (config.getoption("numprocesses", default=None) or hasattr(config, "workerinput")):
        return

    def weight(item) -> int:  # the fault suite's kills and reruns run entry points too: as long as the e2e modules
        if item.get_closest_marker("slow"):
            return 0
        return 1 if item.get_closest_marker("e2e") or item.get_closest_marker("faults") else 2

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


@dataclass
class Ran:
    """What ``run_here`` saw: the fields of a ``subprocess.CompletedProcess`` the tests read, and how often
    the model was loaded (``assert_fails_cleanly`` checks it stayed 0, on top of the printed-output check)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    model_loads: int = 0


def run_here(args: list[str], env: dict | None = None) -> Ran:
    """``python -m <args[0]> <args[1:]>`` run in this process: ``runpy`` runs the module as ``__main__``, as
    ``python -m`` does (Hydra's decorated main parses the command line, runs single runs and sweeps with the
    basic launcher and its callbacks, then ``run_entry``), with the command's environment, working directory
    ``ROOT``, its stdout/stderr captured and its exit status as the return code (an exception that escapes
    is a traceback and 1, as in a process). Saves the ~6 s of imports a new interpreter costs. What a run
    changes in this process (environment, argv, cwd, logging handlers, signal handlers, torch threads,
    warning filters, Hydra's run config) is put back afterwards. ``env`` values of None remove that
    variable. Runs whose process is the point (signals, kill -9, resource limits, launchers that start
    processes, two processes compared or racing) stay subprocesses."""
    import contextlib
    import io
    import logging
    import runpy
    import signal
    import traceback
    import warnings

    import torch
    from hydra.core.hydra_config import HydraConfig

    import taskneurons.runtime.session as session

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv[:], os.getcwd()
    saved_threads = torch.get_num_threads()
    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
    saved_signals = {s: signal.getsignal(s) for s in stop_signals}
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger)]
    saved_loggers = {lg: (lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers}
    real_load, loads = session.load_model_and_tokenizer, []

    def counted_load(*a, **kw):
        loads.append(1)
        return real_load(*a, **kw)

    os.environ.update({"WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"})
    for k, v in (env or {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    sys.argv = [args[0], *args[1:]]  # argv[0] becomes the module's file, as under `python -m`
    os.chdir(ROOT)
    session.load_model_and_tokenizer = counted_load
    code = 0
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            # a module a test imported earlier runs again as __main__ (as `python -m` runs a fresh copy)
            warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package",
                                    category=RuntimeWarning)
            try:
                runpy.run_module(args[0], run_name="__main__", alter_sys=True)  # what `python -m` does
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, int | None):
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        session.load_model_and_tokenizer = real_load
        HydraConfig.instance().cfg = None  # outside a Hydra run again (run_dir(), in_multirun())
        for lg, (handlers, level, propagate, disabled) in saved_loggers.items():
            for h in lg.handlers:
                if h not in handlers:
                    h.close()
            lg.handlers[:] = handlers
            lg.level, lg.propagate, lg.disabled = level, propagate, disabled
        for s, handler in saved_signals.items():
            signal.signal(s, handler)
        torch.set_num_threads(saved_threads)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return Ran(list(args), code, out.getvalue(), err.getvalue(), len(loads))
