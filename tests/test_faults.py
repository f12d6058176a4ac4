"""Fault suite: kills, bad files, failing sweep jobs, no network, full disk. Nothing finished is lost,
nothing wrong is reported. `make test` runs each fault once; `make faults` repeats the kills
(TASKNEURONS_FAULT_REPEATS, default 1) at different random points.

What is killed, limited or compared across processes runs as a process of its own (``python -m``); the
runs around it (the uninterrupted reference, the resuming rerun, sweeps) run the same command line in
this process (``conftest.run_here``)."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, Ran, run_here

pytestmark = pytest.mark.faults
REPEATS = int(os.environ.get("TASKNEURONS_FAULT_REPEATS", "1"))
TINY = ["model=tiny_llama", "logger=csv", "data.max_train=32", "data.max_test=6", "neurons.max_examples=12",
        "eval.cls_scorers=[loglik]", "eval.gen_max_new_tokens=4"]
# kill once the job has finished some, but not all, of its steps (the files it keeps appear)
PROGRESS = {"train": "state/train/*/*.json", "evaluate": "state/evaluate/*/*.json", "identify": "neurons/**/*.json"}
KILL_WITHIN = {"train": 0.3, "evaluate": 1.0, "identify": 0.2}  # seconds after that progress
PROGRESS_STEPS = {"train": 2, "evaluate": 5, "identify": 2}  # kept steps the job makes before its last one
JOBS = {
    "train": ["taskneurons.train", *TINY, "task=[rotten_tomatoes,bbc_topic]", "train_tasks=[rotten_tomatoes]",
              "optim.max_steps=10", "optim.lr=1e-3", "checkpoint_every=2", "data.batch_size=4", "eval_before=true"],
    "evaluate": ["taskneurons.evaluate", *TINY, "intervention=deactivate", "intervention.source=matrix",
                 "intervention.sets=[task,random]"],
    "identify": ["taskneurons.identify", *TINY, "benchmark=starter"],
}


def env_for(output_root: Path, **extra: str) -> dict:
    return {**os.environ, "TASKNEURONS_OUTPUT": str(output_root), "WANDB_MODE": "offline", **extra}


def run_to_end(args: list[str], output_root: Path, run_dir: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env_for(output_root),
                          capture_output=True, text=True, timeout=600, **kw)


def run_here_to_end(args: list[str], output_root: Path, run_dir: Path) -> Ran:
    """``run_to_end`` in this process."""
    return run_here([*args, f"hydra.run.dir={run_dir}"], env={"TASKNEURONS_OUTPUT": str(output_root)})


def comparable(metrics: dict) -> dict:
    """What must be identical between an interrupted and an uninterrupted run (timings excluded)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if not (k.startswith("seconds") or k in ("seconds", "attribution_seconds", "resumed_from_batch",
                                                            "checksum", "attribution_examples",
                                                            "reused_from_state", "source", "path"))}
        return x
    return strip(metrics)


def orphans(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


@pytest.mark.parametrize("job", list(JOBS))
def test_sigkill_and_rerun_gives_the_uninterrupted_result(tmp_path, job):
    args = JOBS[job]
    ref = run_here_to_end(args, tmp_path / "ref", tmp_path / "ref_run")
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = json.loads((tmp_path / "ref_run" / "metrics.json").read_text())
    rng = random.Random(f"{job}-{REPEATS}")
    kills = 0
    for attempt in range(REPEATS):
        # each attempt: a fresh output root, one SIGKILL at a random point, then the same command to the end
        root = tmp_path / f"faulted_{attempt}"
        # a random point; if the job was already done by then, once more at the earliest point
        for wait_for, delay in ((rng.randint(1, PROGRESS_STEPS[job]), rng.uniform(0.0, KILL_WITHIN[job])), (1, 0.0)):
            proc = subprocess.Popen([sys.executable, "-m", *args, f"hydra.run.dir={tmp_path / f'killed_{attempt}'}"],
                                    cwd=ROOT, env=env_for(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline and len(list(root.glob(PROGRESS[job]))) < wait_for:
                time.sleep(0.02)
            time.sleep(delay)
            killed = proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            if killed:
                break
            shutil.rmtree(root)  # finished untouched: start this attempt again from nothing
        final = run_here_to_end(args, root, tmp_path / f"final_{attempt}")  # resumes what the killed one kept
        assert final.returncode == 0, final.stderr[-3000:]
        resumed = json.loads((tmp_path / f"final_{attempt}" / "metrics.json").read_text())
        assert comparable(resumed) == comparable(reference), f"{job}: resumed result differs (attempt {attempt})"
        assert not orphans(root), f"temp files left behind: {orphans(root)}"
    print(f"\n{job}: {kills} of {REPEATS} runs SIGKILLed mid-run; every resumed result identical to the uninterrupted one")
    assert kills >= max(1, REPEATS // 2), f"only {kills} of {REPEATS} runs could be killed before they finished"


def test_a_damaged_state_file_is_recomputed_not_used(tmp_path):
    from taskneurons.runtime.resume import JobState

    state = JobState(tmp_path, "evaluate", "k")
    state.put("per_layer", {i: i for i in range(12)})  # int keys read back as strings, in another order
    assert state.get("per_layer") == {str(i): i for i in range(12)}
    state.put("baseline", {"results": {"t": {"score": 50.0}}})
    path = state.dir / "baseline.json"
    path.write_text(path.read_text().replace("50.0", "99.0"))  # an edited number
    assert state.get("baseline") is None
    assert (state.dir / "baseline.json.corrupt").exists() and not path.exists()
    state.put("baseline", {"results": {"t": {"score": 50.0}}})
    path.write_text(path.read_text()[:20])  # truncated
    assert state.get("baseline") is None


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not an Exception, so no handler swallows it)."""


@pytest.mark.parametrize("dies", ["before the blob is replaced", "after the blob is replaced"])
def test_a_checkpoint_killed_between_its_two_files_keeps_a_usable_pair(tmp_path, monkeypatch, dies):
    """A training checkpoint is a blob and its sha256 sidecar. A kill between replacing one and the other
    used to leave a pair that disagreed, and the whole checkpoint was set aside (seen under load: a resumed
    continual stage restarted from batch 0). Now the sidecar first names both digests: the old checkpoint
    or the new one is read back, whichever the blob is, never neither."""
    import taskneurons.runtime.atomic as atomic
    from taskneurons.runtime.resume import JobState

    state = JobState(tmp_path, "train", "k")
    state.put_tensors("train_checkpoint", {"batches_done": 1})
    real_replace = atomic.os.replace

    def replace_then_die(src, dst):  # os.replace is also how the sidecar is written: only the blob's dies
        if not str(dst).endswith(".pt"):
            return real_replace(src, dst)
        if dies == "after the blob is replaced":
            real_replace(src, dst)
        raise _Killed

    monkeypatch.setattr(atomic.os, "replace", replace_then_die)
    with pytest.raises(_Killed):
        state.put_tensors("train_checkpoint", {"batches_done": 2})
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    expected = 2 if dies == "after the blob is replaced" else 1
    assert JobState(tmp_path, "train", "k").get_tensors("train_checkpoint") == {"batches_done": expected}
    state.put_tensors("train_checkpoint", {"batches_done": 3})  # the next write leaves one digest again
    meta = json.loads((state.dir / "train_checkpoint.pt.json").read_text())
    assert "previous" not in meta and state.get_tensors("train_checkpoint") == {"batches_done": 3}


def test_one_checksummed_json_format_and_the_policy_for_a_damaged_file(tmp_path, caplog):
    from taskneurons.runtime.atomic import read_json_with_checksum, write_json_with_checksum
    from taskneurons.runtime.resume import JobState

    # job state and run metrics are one format: either reader reads the other's file
    state = JobState(tmp_path, "evaluate", "k")
    state.put("final", {"tasks": {"t": {"score": 50.0}}})
    assert read_json_with_checksum(state.dir / "final.json") == {"tasks": {"t": {"score": 50.0}}}
    write_json_with_checksum(state.dir / "other.json", {"x": 1})
    assert state.get("other") == {"x": 1}
    for damage in (lambda t: t.replace("50.0", "99.0"), lambda t: t[:15], lambda t: "[1, 2]"):
        path = state.dir / "final.json"
        state.put("final", {"tasks": {"t": {"score": 50.0}}})
        path.write_text(damage(path.read_text()))
        with pytest.raises(ValueError, match=str(path)):
            read_json_with_checksum(path)  # the default policy: raise, naming the file; the file stays
        assert path.exists()
        with caplog.at_level("WARNING", logger="taskneurons.runtime.atomic"):
            assert read_json_with_checksum(path, on_damage="set_aside") is None
        assert not path.exists() and (state.dir / "final.json.corrupt").exists() and "final.json" in caplog.text
    assert read_json_with_checksum(tmp_path / "absent.json", on_damage="set_aside") is None
    with pytest.raises(FileNotFoundError):
        read_json_with_checksum(tmp_path / "absent.json")
    with pytest.raises(TypeError):
        write_json_with_checksum(tmp_path / "bad.json", {"checksum": "mine"})  # would be overwritten


def test_failing_sweep_job_does_not_stop_the_others_and_rerun_redoes_only_it(tmp_path):
    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY if not a.startswith("data.max_test")]
    args = ["taskneurons.evaluate", "--multirun", *tiny, "task=rotten_tomatoes", "data.max_test=4,0,5",
            f"hydra.sweep.dir={sweep}"]
    r = run_here(args, env={"TASKNEURONS_OUTPUT": str(tmp_path / "out")})
    assert r.returncode != 0  # the sweep reports its failure...
    summary = json.loads((sweep / "summary.json").read_text())
    status = {next(o for o in j["overrides"] if o.startswith("data.max_test=")): j for j in summary["jobs"]}
    assert [j["status"] for j in summary["jobs"]] == ["completed", "failed", "completed"]  # ...after running the rest
    assert "data.max_test=0 must be a positive" in status["data.max_test=0"]["error"]
    assert (sweep / "2" / "metrics.json").is_file() and not (sweep / "1" / "metrics.json").exists()
    first = (sweep / "0" / "metrics.json").read_text()
    r2 = run_here(args, env={"TASKNEURONS_OUTPUT": str(tmp_path / "out")})
    again = json.loads((sweep / "summary.json").read_text())
    assert [j["status"] for j in again["jobs"]] == ["reused", "failed", "reused"], r2.stderr[-2000:]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["tasks"] == json.loads(first)["tasks"]


@pytest.mark.parametrize("wandb_env", [
    {"WANDB_MODE": "disabled"},
    {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40, "WANDB_INIT_TIMEOUT": "8"},
])
def test_runs_complete_without_wandb(tmp_path, wandb_env):
    args = ["taskneurons.evaluate", *[a for a in TINY if a != "logger=csv"], "logger=wandb", "task=rotten_tomatoes",
            f"hydra.run.dir={tmp_path / 'run'}"]
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env={**env_for(tmp_path), **wandb_env},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["tasks"]["rotten_tomatoes"]["n"] == 6


def test_same_seed_same_metrics_in_two_processes(tmp_path):
    outs = []
    for i, runner in enumerate((run_to_end, run_here_to_end)):  # a process of its own, and this one
        r = runner(["taskneurons.evaluate", *TINY, "task=[rotten_tomatoes,bbc_title]"], tmp_path / f"o{i}",
                   tmp_path / f"r{i}")
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(comparable(json.loads((tmp_path / f"r{i}" / "metrics.json").read_text())))
    assert outs[0] == outs[1]


def test_disk_full_is_a_clear_error_and_corrupts_nothing(tmp_path):
    root = tmp_path / "out"
    ok = run_here_to_end(["taskneurons.identify", *TINY, "task=rotten_tomatoes"], root, tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr[-2000:]
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def small_files():  # any write past 4 KB fails with EFBIG, as on a full disk (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    full = run_to_end(["taskneurons.identify", *TINY, "task=[rotten_tomatoes,bbc_topic]", "hydra.output_subdir=null",
                       "hydra/job_logging=disabled"], root, tmp_path / "full", preexec_fn=small_files)
    assert full.returncode == 2, full.stderr[-2000:]
    assert "cannot write" in full.stderr and "disk full" in full.stderr
    assert not (tmp_path / "full" / "metrics.json").exists()
    for p, data in before.items():
        assert p.read_bytes() == data, f"{p} changed"
    assert not orphans(root) and not orphans(tmp_path / "full")


def test_only_dead_writers_temp_files_are_removed(tmp_path):
    from taskneurons.runtime.atomic import cleanup_temp_files

    dead = tmp_path / ".per_module-p0.1.json.999999.ab12cd.tmp"  # no such process
    mine = tmp_path / f".metrics.json.{os.getpid()}.zz.tmp"  # a live writer (this process)
    for p in (dead, mine):
        p.write_text("partial")
    assert cleanup_temp_files(tmp_path) == 1
    assert not dead.exists() and mine.exists()


def test_edited_metrics_and_neuron_set_metadata_are_detected(tmp_path):
    import torch

    from taskneurons.errors import ConfigError
    from taskneurons.neurons.neuronset import NeuronSet
    from taskneurons.runtime.atomic import read_json_with_checksum, write_json_with_checksum

    # int keys (per-layer counts) sort differently once they are strings: the checksum must not care
    write_json_with_checksum(tmp_path / "metrics.json", {"tasks": {"t": {"score": 50.0}}, "per_layer": {i: i for i in range(12)}})
    assert read_json_with_checksum(tmp_path / "metrics.json")["tasks"]["t"]["score"] == 50.0
    (tmp_path / "metrics.json").write_text((tmp_path / "metrics.json").read_text().replace("50.0", "90.0"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_json_with_checksum(tmp_path / "metrics.json")
    sizes = {(0, "m"): 4}
    NeuronSet({(0, "m"): torch.tensor([1])}, sizes, {"definition": "output_units", "model": "a"}).save(tmp_path / "s")
    meta = tmp_path / "s.json"
    meta.write_text(meta.read_text().replace('"model": "a"', '"model": "b"'))
    with pytest.raises(ConfigError, match="checksum mismatch"):
        NeuronSet.load(tmp_path / "s")
