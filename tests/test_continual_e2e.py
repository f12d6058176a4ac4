"""The continual entry point as a user runs it (subprocesses, tiny Llama, real cl_benchmark data):
every method through a 3-task order; a run killed mid-stage and again mid-sequence resumes to the
identical matrix; bad input is one line and exit 2 before any model loads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from test_entrypoints import assert_fails_cleanly, run

pytestmark = pytest.mark.e2e
METHODS = ["seqft", "seqlora", "olora", "ncft", "wncft", "pertask", "mtl"]
ORDER = "continual.order=[cl_dbpedia,cl_amazon,cl_yahoo]"
# the benchmark's fourth task (cl_agnews) stays in: it is evaluated after every stage though never trained
TINY = ["taskneurons.continual", "continual/scale=tiny", ORDER, "data.max_test=3", "optim.max_steps=2", "optim.lr=1e-2",
        "checkpoint_every=1", "continual.wncft.task_identity=inferred"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("continual")
    r = run([TINY[0], "--multirun", *TINY[1:], f"continual/method={','.join(METHODS)}", f"hydra.sweep.dir={root}/sweep"],
            env={"TASKNEURONS_OUTPUT": str(root / "out")}, timeout=1500)  # about 2 min on an idle 2-core CPU
    assert r.returncode == 0, r.stderr[-4000:]
    runs = {}
    for p in (root / "sweep").glob("*/metrics.json"):
        m = json.loads(p.read_text())
        runs[m["method"]] = {**m, "dir": p.parent}
    return runs


DDP2 = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def ddp_wncft(tmp_path_factory) -> tuple[dict, Path, subprocess.CompletedProcess]:
    """The sweep's W-NCFT run on 2 CPU ranks (gloo): (metrics, run dir, the finished process)."""
    root = tmp_path_factory.mktemp("continual_ddp")
    run_dir = root / "ddp"
    r = run([*TINY, "continual/method=wncft", *DDP2, f"hydra.run.dir={run_dir}"],
            env={"TASKNEURONS_OUTPUT": str(root / "out")}, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text()), run_dir, r


def test_wncft_on_two_cpu_ranks_equals_one_process(sweep, ddp_wncft):
    """trainer=ddp (2 gloo ranks): attribution split over the ranks, DDP neuron-only training, evaluation
    tasks (and W-NCFT's inferred-identity groups) split over the ranks and gathered. Same neuron sets,
    same trained rows (to float tolerance), same matrix as the one-process run of the sweep."""
    import torch

    ddp, run_dir, r = ddp_wncft
    one = sweep["wncft"]
    assert ddp["matrix"] == one["matrix"] and ddp["summary"] == one["summary"]
    assert [i["identity_accuracy"] for i in ddp["stage_info"]] == [i["identity_accuracy"] for i in one["stage_info"]]
    for a, b in zip(one["stage_info"], ddp["stage_info"], strict=True):
        assert b["loss_first"] == pytest.approx(a["loss_first"], rel=1e-5)
        assert b["trainable_params"] == a["trainable_params"]
    for i in range(3):
        rows_one = torch.load(Path(one["state_dir"]) / f"stage{i}.pt", weights_only=False)["payload"]["after"]
        rows_ddp = torch.load(Path(ddp["state_dir"]) / f"stage{i}.pt", weights_only=False)["payload"]["after"]
        assert rows_one.keys() == rows_ddp.keys()
        for k in rows_one:
            assert torch.equal(rows_ddp[k]["index"], rows_one[k]["index"]), f"stage {i} {k}: another neuron set"
            torch.testing.assert_close(rows_ddp[k]["values"], rows_one[k]["values"], rtol=1e-5, atol=1e-7)
    # rank 0 writes every file; rank 1 only logs
    assert (run_dir / "__main___rank1.log").is_file() and not list(run_dir.glob("*rank1*/metrics*"))
    assert r.stdout.count("[1/3]") == 1  # one progress line per stage, from rank 0


def test_every_method_runs_a_three_task_order(sweep):
    assert set(sweep) == set(METHODS)
    for method, m in sweep.items():
        assert m["complete"] and m["order"] == ["cl_dbpedia", "cl_amazon", "cl_yahoo"]
        assert m["tasks_evaluated"] == ["cl_dbpedia", "cl_amazon", "cl_yahoo", "cl_agnews"]  # unseen task too
        assert len(m["matrix"]) == (1 if method == "mtl" else 3) and all(len(r) == 4 for r in m["matrix"])
        assert m["summary"]["cl"] is not None
        # the base model's scores before stage 1, the same for every method (same seed, same test examples)
        assert set(m["zero_shot"]) == set(m["tasks_evaluated"])
        assert m["zero_shot"] == sweep["seqft"]["zero_shot"]
        assert (m["dir"] / "accuracy_matrix.png").stat().st_size > 1000
        assert (m["dir"] / "config.yaml").is_file()
        steps = [i["steps"] for i in m["stage_info"]]
        assert steps == ([6] if method == "mtl" else [2, 2, 2])
        if method != "mtl":
            assert m["summary"]["bwt"] is not None
    # what each method trains
    info = {k: v["stage_info"][0] for k, v in sweep.items()}
    assert info["ncft"]["trainable_params"] < info["seqlora"]["trainable_params"] * 50
    assert info["ncft"]["trainable_params"] < info["seqft"]["trainable_params"] / 5
    assert info["ncft"]["checkpoint_bytes"] < info["seqft"]["checkpoint_bytes"] * 0.15
    assert "identity_accuracy" in sweep["wncft"]["stage_info"][0]
    # per-task FT: the last row is each task on its own model (A_i)
    pt = sweep["pertask"]
    assert pt["summary"]["per_task_scores"] == pt["matrix"][-1][:3]
    # seqft changes the whole model every stage; olora's later stages keep earlier adapters frozen
    fps = [i["model_fingerprint"] for i in sweep["seqft"]["stage_info"]]
    assert len(set(fps)) == 3


def _state_dir(root: Path) -> Path | None:
    dirs = list((root / "state" / "continual").glob("*"))
    return dirs[0] if dirs else None


def _run_until(args: list[str], root: Path, run_dir: Path, pattern: str) -> bool:
    """Start the run, SIGKILL it as soon as a file matching ``pattern`` appears in its state; True if killed."""
    env = {**os.environ, "TASKNEURONS_OUTPUT": str(root), "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        d = _state_dir(root)
        if d is not None and list(d.glob(pattern)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.wait()
    return False


def test_killed_mid_stage_and_mid_sequence_resumes_to_the_same_matrix(sweep, tmp_path):
    ref = sweep["wncft"]
    args = [*TINY, "continual/method=wncft"]
    root, run_dir = tmp_path / "out", tmp_path / "run"
    # killed in the middle of the sequence (stage 0 recorded) and of stage 1 (its first mid-stage checkpoint)
    assert _run_until(args, root, run_dir, "stage1_train_checkpoint.pt.json")
    state = _state_dir(root)
    assert (state / "stage0.pt.json").exists() and not (state / "stage1.pt.json").exists()
    # the same command resumes: stage 0 replayed from its checkpoint, stage 1 from its batch, stage 2 fresh
    r = run([*args, f"hydra.run.dir={run_dir}"], env={"TASKNEURONS_OUTPUT": str(root)}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    # one progress line per stage; the replayed stage says so; no per-stage Lightning warning
    assert re.search(r"^\[1/3\] wncft: train on cl_dbpedia, evaluate 4 tasks .*reused from an earlier run", r.stdout, re.M)
    assert re.search(r"^\[3/3\] wncft: train on cl_yahoo, evaluate 4 tasks ", r.stdout, re.M), r.stdout[-2000:]
    assert "logging interval" not in r.stderr
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["matrix"] == ref["matrix"]
    assert [i["model_fingerprint"] for i in m["stage_info"]] == [i["model_fingerprint"] for i in ref["stage_info"]]
    assert m["stage_info"][0].get("replayed_from_checkpoint")
    assert m["stage_info"][1]["resumed_from_batch"] >= 1
    assert not m["stage_info"][2].get("replayed_from_checkpoint")


@pytest.mark.faults
@pytest.mark.skipif("TASKNEURONS_FAULT_REPEATS" not in os.environ, reason="a longer case: `make faults` runs it")
def test_two_rank_run_killed_mid_stage_resumes_to_the_uninterrupted_two_rank_result(ddp_wncft, tmp_path):
    ref = ddp_wncft[0]
    args = [*TINY, "continual/method=wncft", *DDP2]
    root, run_dir = tmp_path / "out", tmp_path / "run"
    # rank 0 SIGKILLed at stage 1's first mid-stage checkpoint; rank 1 loses its peer and ends too
    assert _run_until(args, root, run_dir, "stage1_train_checkpoint.pt.json")
    r = run([*args, f"hydra.run.dir={run_dir}"], env={"TASKNEURONS_OUTPUT": str(root)}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["matrix"] == ref["matrix"]
    # bit-identical weights after every stage: every rank resumed from rank 0's checkpoint with the same batches
    assert [i["model_fingerprint"] for i in m["stage_info"]] == [i["model_fingerprint"] for i in ref["stage_info"]]
    assert m["stage_info"][0].get("replayed_from_checkpoint") and m["stage_info"][1]["resumed_from_batch"] >= 1


def test_bad_continual_input_is_one_line_and_exit_2(tmp_path):
    # each kind of bad input is named by validate_continual (test_continual.py); here, as a user sees it
    out = tmp_path / "run"
    r = run(["taskneurons.continual", "model=smollm2_135m", "continual.order=[cl_dbpedia,cl_rte,cl_dbpedia]",
             f"hydra.run.dir={out}"])
    assert r.returncode == 2
    assert_fails_cleanly(r, out, "['cl_rte'] not in benchmark cl_standard")
    assert "['cl_dbpedia'] repeated" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1
