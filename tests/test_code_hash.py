"""Cached results are keyed on the source of the code that computes them, so an uncommitted edit is not
answered with a result of the code before it (run state, neuron store, report artefacts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import compose
from taskneurons.runtime import code_hash as code_hash_module
from taskneurons.runtime.code_hash import SOURCE_DIR, code_hash, source_hash


def copy_package(dest: Path) -> Path:
    shutil.copytree(SOURCE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture()
def use_source(monkeypatch):
    """Point the hash at another copy of the package (as if that code were installed)."""

    def use(root: Path) -> str:
        monkeypatch.setattr(code_hash_module, "SOURCE_DIR", root)
        code_hash_module._hash_once.cache_clear()  # as a new process would: the cache lives per process
        return code_hash()

    yield use
    code_hash_module._hash_once.cache_clear()


def invert_decisions(root: Path) -> None:
    """The edit of the bug report: eval/scoring.py changed, nothing committed."""
    path = root / "eval" / "scoring.py"
    path.write_text(path.read_text() + "\n# every decision inverted (an uncommitted edit)\n")


def test_the_hash_is_stable_and_changes_with_any_python_file(tmp_path):
    root = copy_package(tmp_path / "pkg")
    first = source_hash(root)
    assert source_hash(root) == first == source_hash(SOURCE_DIR), "same files, same hash (also in another folder)"
    (root / "README.txt").write_text("not code")
    (root / "eval" / "scoring.pyc").write_bytes(b"\0")
    assert source_hash(root) == first, "only .py files count"
    seen = [first]
    for edit in (
        lambda: invert_decisions(root),
        lambda: (root / "data" / "new_module.py").write_text("X = 1\n"),
        lambda: (root / "data" / "new_module.py").rename(root / "models" / "new_module.py"),
    ):
        edit()
        seen.append(source_hash(root))
    assert len(set(seen)) == len(seen), f"every change to the .py files gives a new hash: {seen}"
    (root / "models" / "new_module.py").unlink()
    assert source_hash(root) == seen[1], "the same files give the same hash again"
    path = root / "eval" / "scoring.py"
    path.write_text(path.read_text().replace("\n# every decision inverted (an uncommitted edit)\n", ""))
    assert source_hash(root) == first, "undoing the edit gives the original hash back"


def test_code_hash_is_computed_once_per_process(tmp_path, use_source):
    root = copy_package(tmp_path / "pkg")
    before = use_source(root)
    invert_decisions(root)
    assert code_hash() == before, "cached: the running code did not change"


def test_an_uncommitted_edit_recomputes_a_finished_result_instead_of_reusing_it(tmp_path, data_dir, monkeypatch,
                                                                                use_source, capsys):
    from taskneurons.evaluate import evaluate_job
    from taskneurons.runtime.app import run_entry

    monkeypatch.chdir(tmp_path)
    root = copy_package(tmp_path / "pkg")
    use_source(root)

    def evaluate() -> dict:
        cfg = compose("evaluate", overrides=["model=tiny_llama", "task=sst2", "data.max_test=4", "logger=csv",
                                             f"paths.output_root={tmp_path}/out", "eval.cls_scorers=[loglik]"])
        return run_entry(cfg, evaluate_job)

    first = evaluate()
    assert "reused_from_state" not in first
    again = evaluate()
    assert again.get("reused_from_state"), "the same code reuses its finished result"
    invert_decisions(root)
    use_source(root)  # the next process runs the edited code
    edited = evaluate()
    assert "reused_from_state" not in edited, "the edited code must compute its own result"
    states = sorted(p.name for p in (tmp_path / "out" / "state" / "evaluate").iterdir())
    assert len(states) == 2 and Path(again["reused_from_state"]).name in states


def test_a_neuron_set_stored_by_other_code_is_identified_again(tmp_path, data_dir, tiny_llama, use_source):
    from taskneurons.analyze.sets import find_task_set
    from taskneurons.config import build_task_specs
    from taskneurons.data.loading import load_tasks
    from taskneurons.errors import ConfigError
    from taskneurons.neurons.attribution import attribute
    from taskneurons.neurons.identify import identify_task
    from taskneurons.neurons.neuronset import NeuronSet
    from taskneurons.neurons.pools import neuron_pools

    model, tok = tiny_llama
    root = copy_package(tmp_path / "pkg")
    old = use_source(root)
    calls = []

    def counting_attribute(*args, **kwargs):
        calls.append(1)
        return attribute(*args, **kwargs)

    def config(proportion: float = 0.01):
        return compose("identify", overrides=["model=tiny_llama", "task=[sst2]", "neurons.max_examples=4",
                                              f"neurons.store_dir={tmp_path}/store", f"neurons.proportion={proportion}"])

    def identify(proportion: float):
        cfg = config(proportion)
        specs, problems = build_task_specs(cfg)
        assert not problems
        data = load_tasks(specs, data_dir, max_train=8, max_test=1, seed=0)
        return identify_task(model, tok, "tiny_llama", data["sst2"], cfg.neurons, cfg.data, neuron_pools(model),
                             attribute_fn=counting_attribute)

    nset, info = identify(0.01)
    assert info["source"] == "attribution" and nset.meta["code_hash"] == old and len(calls) == 1
    assert identify(0.01)[1]["source"] == "store" and len(calls) == 1, "same code: the stored set is reused"
    assert identify(0.02)[1]["source"].startswith("re-selected") and len(calls) == 1
    assert find_task_set(tmp_path / "store", "tiny_llama", "sst2", config().neurons).is_file()
    invert_decisions(root)
    new = use_source(root)
    with pytest.raises(ConfigError, match="identified by this code"):  # analysis does not read the old sets
        find_task_set(tmp_path / "store", "tiny_llama", "sst2", config().neurons)
    nset, info = identify(0.01)
    assert info["source"] == "attribution" and len(calls) == 2, "a set stored by older code is not reused"
    assert nset.meta["code_hash"] == new and NeuronSet.load(info["path"]).meta["code_hash"] == new
    # the stored p=0.02 set is the old code's: it is re-selected from the new code's scores, not reused
    info02 = identify(0.02)[1]
    assert info02["source"] == f"re-selected from {Path(info['path']).name}" and len(calls) == 2
    assert NeuronSet.load(info02["path"]).meta["code_hash"] == new


def test_a_report_artefact_built_by_other_code_is_built_again(tmp_path, monkeypatch, use_source):
    from taskneurons.report import collect
    from taskneurons.report.artefacts import results_dir, write_result

    monkeypatch.setenv("TASKNEURONS_OUTPUT", str(tmp_path / "out"))
    root = copy_package(tmp_path / "pkg")
    use_source(root)
    write_result({"title": "t", "scale": "tiny", "tables": {}}, results_dir("table1", "tiny"))
    entries = [{"name": "table1", "target": "table1", "paper": "Table 1", "scales": ["tiny"]}]
    assert collect.run_missing(entries, "tiny", 1, {"table1"}, run=False)["table1"]["status"] == "reused"
    invert_decisions(root)
    use_source(root)
    status = collect.run_missing(entries, "tiny", 1, {"table1"}, run=False)["table1"]["status"]
    assert status == "missing: not run (--no-run)", status
