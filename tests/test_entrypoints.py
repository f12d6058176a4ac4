"""The entry points run as a user runs them: tiny models, real shared data. ``python -m`` in a subprocess
where the process is the point (one full evaluate run, the one-line error of a bad data file); the rest
through the same command line in this process (``conftest.run_here``: no interpreter start per run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Ran, run_here

pytestmark = pytest.mark.e2e


def run(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def test_evaluate_tiny_on_cl_standard_writes_metrics(tmp_path):
    out = tmp_path / "run"
    r = run(["taskneurons.evaluate", "model=tiny_llama", "benchmark=cl_standard", "data.max_test=16",
             f"hydra.run.dir={out}"])
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"cl_dbpedia", "cl_amazon", "cl_yahoo", "cl_agnews"}
    for res in metrics["tasks"].values():
        assert res["n"] == 16 and {"accuracy_loglik", "accuracy_generate", "score"} <= set(res)
    meta = json.loads((out / "run_meta.json").read_text())
    assert meta["seed"] == 1234 and meta["packages"]["torch"] and "git" in meta
    assert "data.max_test=16" in meta["overrides"]
    assert (out / "config.yaml").is_file()
    assert list((out / "wandb").glob("offline-run-*")), "an offline W&B run is logged"
    assert "cl_dbpedia" in r.stdout  # the printed results table


def test_multirun_sweep_writes_one_result_per_job(tmp_path):
    r = run_here(["taskneurons.evaluate", "--multirun", "model=tiny_gpt2", "task=rotten_tomatoes", "data.max_test=4",
             "logger=csv", "seed=1,2", f"hydra.sweep.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    seeds = sorted(json.loads((tmp_path / str(i) / "metrics.json").read_text())["seed"] for i in (0, 1))
    assert seeds == [1, 2]


def assert_fails_cleanly(r: subprocess.CompletedProcess | Ran, out: Path, needle: str) -> None:
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "Loading weights" not in r.stderr + r.stdout, "the model must not load before the error"
    assert getattr(r, "model_loads", 0) == 0, "the model must not load before the error"
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["model=nope"], "model/nope"),
        (["task=nope"], "task/nope"),
        (["benchmark=nope"], "benchmark/nope"),
        (["benchmark=cl_standard", "data.max_test=0"], "data.max_test=0 must be a positive"),
        (["benchmark=cl_standard", "paths.data_dir=/nonexistent"], "paths.data_dir='/nonexistent' does not exist"),
        (["eval.cls_scorers=[vote]"], "eval.cls_scorers"),
    ],
)
def test_bad_input_fails_before_the_model_loads(tmp_path, overrides, needle):
    out = tmp_path / "run"
    r = run_here(["taskneurons.evaluate", "model=smollm2_135m", *overrides, f"hydra.run.dir={out}"])
    assert_fails_cleanly(r, out, needle)


def test_bad_jsonl_row_is_named_by_file_and_line(tmp_path):
    data = tmp_path / "data"
    folder = data / "generalization12" / "sst2"
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text('["positive", "negative"]')
    (folder / "test.jsonl").write_text('{"id": "a", "input": "fine", "target": "positive"}\n'
                                       '{"id": "b", "input": "", "target": "negative"}\n')
    out = tmp_path / "run"
    r = run(["taskneurons.evaluate", "model=smollm2_135m", "benchmark=generalization12", "task=sst2",
             f"paths.data_dir={data}", f"hydra.run.dir={out}"])
    assert_fails_cleanly(r, out, "sst2/test.jsonl:2: field 'input' is empty")
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: "), r.stderr


def test_missing_data_root_is_explained(tmp_path):
    out = tmp_path / "run"
    r = run_here(["taskneurons.evaluate", "model=tiny_llama", "benchmark=cl_standard", f"hydra.run.dir={out}"],
                 env={"TASKNEURONS_DATA": None})
    assert_fails_cleanly(r, out, "paths.data_dir is not set")
    assert "TASKNEURONS_DATA" in r.stderr
