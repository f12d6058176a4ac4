"""What a user sees during a job: one progress line per step, none of the libraries' repeated chatter."""

from __future__ import annotations

import io
import re

import pytest

from taskneurons.bench.timing import median_interval, verdict
from taskneurons.runtime.progress import JobProgress


def test_progress_lines_count_steps_and_estimate_what_is_left(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 30.0, 30.0, 40.0]).__next__
    monkeypatch.setattr("taskneurons.runtime.progress.time.monotonic", clock)
    out = io.StringIO()
    p = JobProgress(4, stream=out)
    p.step("identify a")            # t=0
    p.step("evaluate 3 tasks")      # t=10: one step of 10 s done, 3 left
    p.step("reused step", reused=True)  # t=30: mean of 10 s and 20 s = 15 s x 2 left
    p.step("last")                  # t=30: the reused step does not count towards the mean
    p.finish()                      # t=40
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/4] identify a  (elapsed 0s, estimating)"
    assert lines[1] == "[2/4] evaluate 3 tasks  (elapsed 10s, ~30s left)"
    assert lines[2] == "[3/4] reused step  (elapsed 30s, reused from an earlier run)"
    assert lines[3] == "[4/4] last  (elapsed 30s, ~15s left)"
    assert lines[4] == "[done] 4 steps in 40s"


def test_bench_verdict_needs_the_median_interval_on_one_side():
    # up to 5 pairs the 90 % sign-test interval of the median is the whole spread
    assert verdict([0.6, 0.7, 0.74], 0.75) == "ok"
    assert verdict([0.8, 0.9], 0.75) == "missed"
    assert verdict([0.7, 0.8], 0.75) == "noisy"
    assert verdict([0.6, 0.7, 0.7, 0.7, 0.76], 0.75) == "noisy"
    assert verdict([1.3, 1.4], 1.2, lower_is_better=False) == "ok"
    # 11 pairs: (x_3, x_9), coverage 1 - 2 P(Bin(11, 1/2) <= 2) = 93.5 %; 15 pairs: (x_4, x_12), 96.5 %
    eleven = [0.5, 0.6, 0.65, 0.66, 0.67, 0.68, 0.69, 0.7, 0.72, 0.9, 1.2]
    assert median_interval(eleven) == (0.65, 0.72) and verdict(eleven, 0.75) == "ok"
    assert median_interval(list(range(15))) == (3, 11)
    assert median_interval([1.0]) == (1.0, 1.0) and median_interval([2.0, 1.0]) == (1.0, 2.0)
    assert verdict([0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5], 0.75) == "missed"


@pytest.mark.e2e
def test_evaluate_prints_progress_and_no_library_chatter(tmp_path):
    from test_entrypoints import run

    r = run(["taskneurons.evaluate", "model=tiny_llama", "task=[rotten_tomatoes,bbc_topic]", "data.max_test=4",
             "data.max_train=8", "neurons.max_examples=4", "intervention=deactivate", "intervention.source=matrix",
             "eval.cls_scorers=[loglik]", f"hydra.run.dir={tmp_path}/run"])
    assert r.returncode == 0, r.stderr[-3000:]
    shown = r.stdout + r.stderr
    steps = re.findall(r"^\[(\d+)/(\d+)\] (.*?)  \(elapsed", r.stdout, flags=re.M)
    # 2 identifications, the baseline, 2 task sets, 2 sources x neurons.control_seeds random draws
    assert steps and all(int(n) == len(steps) for _, n, _ in steps), steps
    assert [int(i) for i, _, _ in steps] == list(range(1, len(steps) + 1))
    assert any("deactivate bbc_topic's task neurons, evaluate 2 tasks" in s for *_, s in steps)
    for chatter in ("GPU available", "TPU available", "Tip:", "LeafSpec", "anonymous setting"):
        assert chatter not in shown, f"'{chatter}' printed:\n{shown[-2000:]}"


def test_memory_benchmark_workers_measure_both_sides(tmp_path):
    """The identification / evaluation sides of `make bench`'s memory benchmark run and report a peak
    (on a tiny model here; the benchmark itself runs SmolLM2 with the demo's caps)."""
    from taskneurons.bench.memory import task_worker

    extra = ("model=tiny_llama", "neurons.max_examples=4", "data.max_test=3", "eval.gen_max_new_tokens=2")
    for job in ("identify", "evaluate"):
        row = task_worker(job, ["rotten_tomatoes", "bbc_title"], extra)
        assert row["tasks"] == ["rotten_tomatoes", "bbc_title"]
        assert row["peak_rss_mb"] >= row["rss_after_loading_mb"] > 0 and row["peak_extra_mb"] >= 0


def test_a_short_fit_logs_within_its_batches_instead_of_warning_each_stage():
    """A continual stage or a small training run has fewer batches than trainer.log_every_n_steps (10):
    Lightning then warned once per fit; build_trainer(batches=n) lowers the interval to n."""
    from conftest import compose
    from taskneurons.runtime.trainer import build_trainer

    cfg = compose(overrides=["model=tiny_llama"])
    assert int(cfg.trainer.log_every_n_steps) == 10
    assert build_trainer(cfg, None, batches=5).log_every_n_steps == 5
    assert build_trainer(cfg, None, batches=0).log_every_n_steps == 1
    assert build_trainer(cfg, None, batches=400).log_every_n_steps == 10
    assert build_trainer(cfg, None).log_every_n_steps == 10


def test_the_printed_results_path_keeps_the_sweeps_list_values(tmp_path, capsys):
    """Sweep folders are named by their overrides (task=[amazon,qqp]); rich read "[amazon,qqp]" as markup and
    printed "task=/metrics.json", a path that does not exist."""
    from taskneurons.report.tables import print_results

    run_dir = tmp_path / "experiment=x,task=[amazon,sst2,paws,gptnli,tweetqa,commongen,xsum],seed=1"
    print_results({"amazon": {"kind": "classification", "n": 8, "score": 50.0}}, "title", run_dir)
    shown = capsys.readouterr().out
    assert f"results: {run_dir / 'metrics.json'}" in shown.replace("\n", "")


def test_sweep_folder_names_are_cut_below_the_file_name_limit_and_stay_distinct():
    """A fig5 sweep with the README's caps named its job folder with 263 bytes: "File name too long"."""
    from omegaconf import OmegaConf

    from taskneurons.runtime.app import run_entry  # noqa: F401  (registers the resolver, as every entry point does)
    from taskneurons.runtime.dirnames import short_dirname

    assert short_dirname("seed=1,task=sst2") == "seed=1,task=sst2"
    long_a = "benchmark=starter,data.max_test=30," + "intervention.sets=[task]," * 10 + "neurons.matrices=W2"
    long_b = long_a.replace("W2", "W1")
    a, b = short_dirname(long_a), short_dirname(long_b)
    assert len(a.encode()) <= 200 and len(b.encode()) <= 200 and a != b
    assert a.startswith("benchmark=starter,data.max_test=30,") and a == short_dirname(long_a)
    cfg = OmegaConf.create({"name": long_a, "subdir": "${tn_dirname:${name}}"})
    assert cfg.subdir == a
