"""Reliability on a cluster (issue 12): stop signals, unreachable or gated hubs, non-UTF-8 files, two
identical runs at once. What gets a signal, reads the hub settings at import or races another process
runs the entry point as a process of its own, as a user (or a scheduler) would; the runs around it (the
uninterrupted reference, the resuming rerun) and the one-line refusal of a bad file run the same command
line in this process (``conftest.run_here``). The longer signal cases run in `make faults` only
(TASKNEURONS_FAULT_REPEATS is set there)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, Ran, run_here

TINY = ["model=tiny_llama", "logger=csv", "data.max_train=32", "data.max_test=6", "neurons.max_examples=12",
        "eval.cls_scorers=[loglik]", "eval.gen_max_new_tokens=4"]
# the training run that gets the signal: long enough to be caught mid-way (sst2: short local rows)
TRAIN = ["taskneurons.train", *TINY, "benchmark=generalization12", "task=[sst2]", "optim.max_steps=30", "optim.lr=1e-3",
         "checkpoint_every=4", "data.batch_size=2", "trainer.enable_progress_bar=false"]
EVALUATE = ["taskneurons.evaluate", *TINY, "intervention=deactivate", "intervention.source=matrix",
            "intervention.sets=[task,random]", "benchmark=generalization12", "task=[sst2,qqp]"]
in_make_faults = pytest.mark.skipif("TASKNEURONS_FAULT_REPEATS" not in os.environ,
                                    reason="a longer case: `make faults` runs it")


def env_for(root: Path, **extra: str) -> dict:
    return {**os.environ, "TASKNEURONS_OUTPUT": str(root), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **extra}


def start(args: list[str], root: Path, run_dir: Path, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env_for(root, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(args: list[str], root: Path, run_dir: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env_for(root, **extra),
                          capture_output=True, text=True, timeout=600)


def run_in_process(args: list[str], root: Path, run_dir: Path, **extra: str) -> Ran:
    """``run`` in this process (``conftest.run_here``): the same command line, exit code and output."""
    return run_here([*args, f"hydra.run.dir={run_dir}"], env={"TASKNEURONS_OUTPUT": str(root), **extra})


def wait_for(proc: subprocess.Popen, pattern: str, root: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not list(root.glob(pattern)):
        assert proc.poll() is None, f"ended before {pattern} appeared: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"{pattern} did not appear"
        time.sleep(0.01)


def code_version() -> str:
    """The package's source hash, read afresh: resumable state is keyed by it, so an edit of the code
    during a test starts a fresh state."""
    from taskneurons.runtime.code_hash import SOURCE_DIR, source_hash

    return source_hash(SOURCE_DIR)


def comparable(metrics: dict) -> dict:
    """The result without timings and provenance: equal for an interrupted-and-resumed and an uninterrupted run."""
    skip = {"seconds", "attribution_seconds", "resumed_from_batch", "checksum", "attribution_examples",
            "reused_from_state", "source", "path"}
    if isinstance(metrics, dict):
        return {k: comparable(v) for k, v in metrics.items() if k not in skip and not k.startswith("seconds")}
    return metrics


def interrupted_then_resumed(tmp_path: Path, args: list[str], progress: str, sig: int) -> dict:
    """Signal a run once ``progress`` exists, check its exit, rerun; returns the resumed run's metrics."""
    root = tmp_path / "out"
    proc = start(args, root, tmp_path / "stopped")
    wait_for(proc, progress, root)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: interrupted by {signal.Signals(sig).name}") and "run the same command again" in last
    assert "Traceback" not in err and not (tmp_path / "stopped" / "metrics.json").exists()
    again = run_in_process(args, root, tmp_path / "resumed")  # resumes what the signalled process kept
    assert again.returncode == 0, again.stderr[-3000:]
    return json.loads((tmp_path / "resumed" / "metrics.json").read_text())


# --- 1. stop signals ----------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("accumulate", [1, pytest.param(2, marks=[pytest.mark.faults, in_make_faults])])
def test_sigterm_mid_training_checkpoints_now_exits_143_and_resumes_identically(tmp_path, accumulate):
    args = [*TRAIN, f"+trainer.accumulate_grad_batches={accumulate}"]
    ref = run_in_process(args, tmp_path / "ref", tmp_path / "ref_run")
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = json.loads((tmp_path / "ref_run" / "metrics.json").read_text())
    # the first periodic checkpoint (batch 4) is on disk: the signal comes during the batches after it
    code = code_version()
    resumed = interrupted_then_resumed(tmp_path, args, "state/train/*/train_checkpoint.pt.json", signal.SIGTERM)
    # mid-accumulation the checkpoint is the last optimizer step; either way the result is the same
    assert comparable(resumed) == comparable(reference)
    assert resumed["training"]["model_fingerprint"] == reference["training"]["model_fingerprint"]
    if code_version() != code:
        pytest.skip("the code changed during the test: the rerun started afresh, the resume point is not checked")
    start_batch = resumed["training"]["resumed_from_batch"]
    assert 4 <= start_batch < resumed["training"]["batches"] and start_batch % accumulate == 0
    if accumulate == 1:  # every batch is an optimizer step: saved at the signal, not at the next checkpoint_every
        assert start_batch > 4


@pytest.mark.e2e
@pytest.mark.faults
@in_make_faults
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_evaluation_exits_128_plus_signal_and_resumes_identically(tmp_path, sig):
    ref = run_in_process(EVALUATE, tmp_path / "ref", tmp_path / "ref_run")
    assert ref.returncode == 0, ref.stderr[-3000:]
    # the baseline evaluation is kept: the signal comes during the deactivation evaluations after it
    code = code_version()
    resumed = interrupted_then_resumed(tmp_path, EVALUATE, "state/evaluate/*/baseline.json", sig)
    assert comparable(resumed) == comparable(json.loads((tmp_path / "ref_run" / "metrics.json").read_text()))
    if code_version() == code:  # the rerun continued in the stopped run's state (not a fresh one)
        assert len(list((tmp_path / "out").glob("state/evaluate/*/baseline.json"))) == 1


FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "$SCONTROL_LOG"
"""


@pytest.mark.e2e
def test_sigusr1_in_a_sweep_is_interrupted_in_the_summary_and_requeues_under_slurm(tmp_path):
    """SLURM's warning signal (sbatch --signal=B:USR1@...) with preemption=slurm_requeue: the job is
    recorded as interrupted, `scontrol requeue <job>` runs, the exit code is 128 + 10."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    log = tmp_path / "scontrol.log"
    sweep = tmp_path / "sweep"
    slurm = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SCONTROL_LOG": str(log), "SLURM_JOB_ID": "4242",
             "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "tn"}
    args = ["taskneurons.evaluate", "--multirun", *TINY, "benchmark=generalization12", "task=[sst2,qqp]",
            "preemption=slurm_requeue",
            "seed=1,2", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env_for(tmp_path / "out", **slurm),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The lock is taken after the handler is installed and long before the first job can end (model
    # loading follows); a fixed sleep here let a fast machine finish job 1 first (seen in CI).
    wait_for(proc, "state/evaluate/*/lock", tmp_path / "out")
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "the requeued job resumes" in err, err[-2000:]
    assert log.read_text().split() == ["requeue", "4242"]
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["interrupted"]  # the sweep stopped there
    assert "SIGUSR1" in summary["jobs"][0]["error"]


# --- 2. hubs that cannot be reached --------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("hub_env", [
    {"HF_HUB_OFFLINE": "1"},
    pytest.param({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, marks=[pytest.mark.faults, in_make_faults]),
], ids=["offline", "unreachable"])
def test_unavailable_hub_dataset_and_model_are_one_line_before_any_work(tmp_path, hub_env):
    out = tmp_path / "run"
    t0 = time.monotonic()
    r = run(["taskneurons.evaluate", "model=llama2_7b", "task=sst2", "tasks.sst2.source.type=hub"], tmp_path, out,
            HF_HOME=str(tmp_path / "hf"), **hub_env)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 2 problems: "), r.stderr[-3000:]
    line = lines[0]
    assert "hub dataset 'stanfordnlp/sst2'" in line and "hub model 'meta-llama/Llama-2-7b-hf'" in line
    why = "HF_HUB_OFFLINE=1 (offline mode)" if hub_env["HF_HUB_OFFLINE"] == "1" else "http://127.0.0.1:9 cannot be reached"
    assert line.count(why) == 2
    assert "tasks.sst2.source.hub.id=DIR" in line and "model.hf_id=DIR" in line  # the remedy: a local copy
    assert "Loading" not in r.stdout + r.stderr and not (out / "metrics.json").exists()
    assert time.monotonic() - t0 < 120


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers auth-check as the hub does for a gated repo (401 + X-Error-Code: GatedRepo) or an unknown one."""

    def do_GET(self):  # noqa: N802
        gated = "/gated-org/" in self.path
        self.send_response(401 if gated else 404)
        self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
        self.send_header("X-Error-Message", "Access to model is restricted" if gated else "Repository not found")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "no"}')

    def log_message(self, *args):
        pass


def test_gated_and_unknown_models_say_why_and_how(tmp_path, monkeypatch):
    from taskneurons.data.hub_access import hub_problem

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        # huggingface_hub reads HF_HUB_OFFLINE once, at import (earlier tests import it offline): go online
        # for this test only
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        gated = hub_problem("gated-org/big-model", "model", None, "model.hf_id", "set model.hf_id=DIR")
        assert gated.startswith("model.hf_id: hub model 'gated-org/big-model' cannot be downloaded: it is gated")
        assert "huggingface-cli login" in gated and "/gated-org/big-model" in gated
        unknown = hub_problem("someone/nope", "model", None, "model.hf_id", "set model.hf_id=DIR")
        assert "does not know it" in unknown and "model.hf_id=DIR" in unknown
        assert hub_problem(str(tmp_path), "model", None, "model.hf_id", "x") is None  # a local folder is fine
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
        down = hub_problem("someone/model", "model", None, "model.hf_id", "set model.hf_id=DIR")
        assert "the hub at http://127.0.0.1:9 cannot be reached (no network?" in down and "model.hf_id=DIR" in down
    finally:
        server.shutdown()


# --- 3. encodings -----------------------------------------------------------------------------------

@pytest.mark.e2e
def test_a_latin1_file_is_one_line_with_file_and_byte_offset_and_a_bom_is_accepted(tmp_path):
    data = tmp_path / "data" / "generalization12"
    rows_sst2 = [{"id": f"s{i}", "input": f"good film {i}", "target": "positive"} for i in range(3)]
    (data / "sst2").mkdir(parents=True)
    # UTF-8 with a byte-order mark (as some Windows tools write it): accepted
    (data / "sst2" / "test.jsonl").write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows_sst2).encode())
    (data / "qqp").mkdir(parents=True)
    first = json.dumps({"id": "q0", "input": "a", "input_1": "a", "input_2": "b", "target": "no"}) + "\n"
    second = '{"id": "q1", "input": "caf\xe9", "input_1": "caf\xe9", "input_2": "b", "target": "no"}\n'
    (data / "qqp" / "test.jsonl").write_bytes(first.encode() + second.encode("latin-1"))  # a Latin-1 export
    offset = len(first.encode()) + second.encode("latin-1").index(b"\xe9")
    out = tmp_path / "run"
    r = run_in_process(["taskneurons.evaluate", *TINY, "benchmark=generalization12", "task=[sst2,qqp]",
                        f"paths.data_dir={tmp_path / 'data'}"], tmp_path, out)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: {data / 'qqp' / 'test.jsonl'}: not UTF-8 text (byte 0xe9 at byte offset {offset}, line 2); "
                     "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8"], r.stderr[-3000:]
    assert not (out / "metrics.json").exists()


def test_bom_and_bad_bytes_in_the_reader(tmp_path):
    from taskneurons.data.loading import read_utf8_text

    p = tmp_path / "labels.json"
    p.write_bytes(b'\xef\xbb\xbf["a", "b"]\n')
    problems: list[str] = []
    assert json.loads(read_utf8_text(p, problems)) == ["a", "b"] and not problems
    p.write_bytes(b'["a",\n "\xff"]\n')  # binary garbage on line 2
    assert read_utf8_text(p, problems) is None
    assert problems == [f"{p}: not UTF-8 text (byte 0xff at byte offset 8, line 2); "
                        "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8"]


# --- 4. two identical runs at once -------------------------------------------------------------------

def _holder_pid(lock: Path) -> int | None:
    try:
        return int(json.loads(lock.read_text() or "{}").get("pid", 0)) or None
    except (OSError, ValueError):
        return None


@pytest.mark.e2e
def test_a_second_identical_run_waits_for_the_first_then_reuses_its_result(tmp_path):
    args = ["taskneurons.identify", *[a for a in TINY if not a.startswith("neurons.max_examples")],
            "neurons.max_examples=48", "benchmark=generalization12", "task=[sst2,qqp]"]
    root = tmp_path / "out"
    code = code_version()
    logs = [tmp_path / f"run{i}.out" for i in range(2)]

    def launch(i: int) -> subprocess.Popen:
        with logs[i].open("w") as f:
            return subprocess.Popen([sys.executable, "-m", *args, f"hydra.run.dir={tmp_path / f'run{i}'}"], cwd=ROOT,
                                    env=env_for(root), stdout=f, stderr=subprocess.STDOUT, text=True)

    # the first run takes the lock and is paused there (SIGSTOP: a slow first job, whatever this machine's
    # speed), the second one starts, must say whom it waits for, and must reuse the first one's result
    first = launch(0)
    deadline = time.monotonic() + 300
    while first.poll() is None and time.monotonic() < deadline:
        locks = list(root.glob("state/identify/*/lock"))
        if locks and _holder_pid(locks[0]) == first.pid:
            first.send_signal(signal.SIGSTOP)
            break
        time.sleep(0.01)
    assert first.poll() is None, "the first run ended before it could be paused holding the lock"
    assert not list(root.glob("state/identify/*/final*")), "the first run finished while being paused"
    second = launch(1)
    try:
        while second.poll() is None and time.monotonic() < deadline and "is being computed by PID" not in logs[1].read_text():
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGCONT)
    procs = [first, second]
    for p in procs:
        p.wait(timeout=600)
    outs = [f.read_text() for f in logs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    metrics = [json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()) for i in range(2)]
    assert comparable(metrics[0]) == comparable(metrics[1])
    if code_version() != code and len(list(root.glob("state/identify/*"))) == 2:
        pytest.skip("a commit landed between the two starts: they were two configurations (the key has the code version)")
    assert "is being computed by PID" not in outs[0]
    assert f"is being computed by PID {first.pid} " in outs[1] and "waiting for it, then reusing its result" in outs[1]
    assert "reused_from_state" in metrics[1] and "reused_from_state" not in metrics[0]


HOLD_LOCK = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": "h", "since": "then"}).encode())
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_left_by_a_killed_process_is_taken_over_and_a_live_one_is_waited_for(tmp_path, caplog):
    from taskneurons.runtime.resume import JobState

    state = JobState(tmp_path, "evaluate", "key")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(state.dir / "lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    got = threading.Event()

    def take():
        with state.lock(poll_seconds=0.05):
            got.set()

    waiter = threading.Thread(target=take)
    with caplog.at_level("WARNING", logger="taskneurons.runtime.resume"):
        waiter.start()
        time.sleep(0.5)
        assert not got.is_set()  # a live holder is waited for...
        holder.kill()  # ...and its lock is free the moment it dies (kill -9: no cleanup ran)
        holder.wait()
        waiter.join(timeout=30)
    assert got.is_set()
    text = caplog.text
    assert f"is being computed by PID {holder.pid} on h since then" in text
    assert f"taking over the lock of this configuration left by a process that ended (PID {holder.pid}" in text
    assert (state.dir / "lock").read_text() == ""  # released cleanly
    with state.lock():  # and free again
        pass


# --- the signal state machine, in process ------------------------------------------------------------

def test_deferred_signal_waits_for_the_block_then_interrupts():
    from taskneurons.runtime.signals import STOP, Interrupted, as_signal

    assert as_signal("TERM") == signal.SIGTERM and as_signal("sigusr1") == signal.SIGUSR1 and as_signal(2) == signal.SIGINT
    with pytest.raises(ValueError, match="unknown signal"):
        as_signal("SIGNOPE")
    STOP.install(["SIGUSR1"])
    try:
        done = []
        with pytest.raises(Interrupted) as e, STOP.deferred():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            done.append("the block ran to its end")
        assert done and e.value.exit_code == 128 + signal.SIGUSR1
        STOP.install(["SIGUSR1"])
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(1)  # outside a deferred block the signal interrupts at once
    finally:
        STOP.restore()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_a_signal_between_two_sweep_jobs_stops_the_next_job_instead_of_killing_the_sweep():
    """Found in CI: a sweep's jobs run in one process; with the default action restored between jobs, a
    SIGUSR1 landing there killed the process (no summary, no requeue). Now it is kept for the next job."""
    from taskneurons.runtime.signals import STOP, Interrupted

    STOP.install(["SIGUSR1"])
    try:
        STOP.between_jobs()
        os.kill(os.getpid(), signal.SIGUSR1)  # would end this test process under SIG_DFL
        time.sleep(0.05)
        assert STOP.requested
        STOP.install(["SIGUSR1"])  # the next job
        with pytest.raises(Interrupted) as e:
            STOP.check()
        assert e.value.signum == signal.SIGUSR1
        STOP.install(["SIGUSR1"])  # a job after a normal restore starts clean
        STOP.restore()
        STOP.install(["SIGUSR1"])
        STOP.check()
        assert not STOP.requested
    finally:
        STOP.restore()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.parametrize("entry", ["evaluate", "train", "identify", "continual", "analyze"])
def test_preemption_options_compose_and_build(entry):
    from omegaconf import OmegaConf

    from conftest import compose
    from taskneurons.errors import ConfigError
    from taskneurons.runtime.app import preemption_settings

    signals, requeue = preemption_settings(compose(entry))
    assert signals == [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1] and requeue is None
    signals, requeue = preemption_settings(compose(entry, ["preemption=slurm_requeue",
                                                           "preemption.requeue.requeue_signal=SIGUSR2"]))
    assert type(requeue).__name__ == "SLURMEnvironment" and requeue.auto_requeue
    assert signals[-1] == signal.SIGUSR2  # the requeue signal is handled too
    # an entry point whose config has no preemption group (e.g. a new one) gets the default signals
    assert preemption_settings(OmegaConf.create({"job": "x"}))[0] == [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1]
    with pytest.raises(ConfigError, match="preemption.signals"):
        preemption_settings(compose(entry, ["preemption.signals=[SIGNOPE]"]))
