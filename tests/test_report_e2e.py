"""make report SCALE=tiny (really runs Table 1 on tiny models), compare, and bad input as a user meets it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from taskneurons.runtime.atomic import write_json_with_checksum
from test_entrypoints import ROOT, run

pytestmark = pytest.mark.e2e


def make(args: list[str], out: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TASKNEURONS_OUTPUT": str(out), "WANDB_MODE": "offline"}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_make_report_tiny_runs_table1_as_the_paper_did_then_reuses_it(tmp_path):
    out = tmp_path / "outputs"
    # the cheap artefact at tiny scale: multi-task full fine-tuning, then identification + deactivation
    # (the sweep jobs log to CSV to keep the test short; the report run itself logs to W&B)
    r = make(["report", "SCALE=tiny", "ARTEFACTS=table1", "HYDRA_ARGS=logger=csv"], out)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads((out / "results" / "table1" / "tiny" / "result.json").read_text())
    assert res["artefact"] == "table1" and res["scale"] == "tiny" and res["seeds"] == [1]
    assert res["model"] == "tiny_llama_multitask" and "multitask" in res["runs"][0]
    assert (out / "multiruns" / "table1_tiny" / "finetune" / "seed1" / "model" / "config.json").is_file()
    ours = res["tables"]["ours"]
    assert [row[0] for row in ours["rows"]] == ["Original", "Deactivate-Random", "Deactivate-Task"]
    assert "table1/task_vs_random/rotten_tomatoes" in res["cells"]
    assert 0 <= res["cells"]["table1/task_vs_random/all"]["p"] <= 1
    readme = (out / "report" / "README.md").read_text()
    assert "Table 1" in readme and "Deactivate-Task" in readme and "| `table1` | Table 1 | ran |" in readme
    assert list((out / "report" / "wandb").glob("offline-run-*")), "one offline W&B report run"
    # the report opens with the claims' verdicts: Table 1's from its cells, its premise from the fine-tuning
    # runs' zero-shot scores; the artefacts not built here are "no data"
    assert readme.index("## Verdicts") < readme.index("| artefact | paper | status |")
    verdicts = {v["claim"]: v for v in json.loads((out / "report" / "verdicts.json").read_text())["verdicts"]}
    t1 = verdicts["E1.deactivate.task_below_random"]
    cell = res["cells"]["table1/task_vs_random/all"]
    assert t1["effect"] == cell["mean"] and t1["p"] == cell["p"]
    assert (t1["mde"] is None) == (cell["hi"] <= cell["lo"])  # no MDE from a zero-width interval
    learnt = next(p for p in t1["premises"] if p["id"] == "table1_original_learnt")
    assert learnt["ok"] is False and "smallest gain" in learnt["detail"]  # 6 steps of a random-init model learn little
    assert t1["verdict"] == "inconclusive" and "table1_original_learnt failed" in t1["reason"]
    assert verdicts["E4.table5.wncft_above_ncft"]["reason"].startswith("no data: no result for `table5`")
    r = make(["report", "SCALE=tiny", "ARTEFACTS=table1"], out)
    assert r.returncode == 0 and "table1     reused" in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize("args,needle", [
    (["table1", "SEEDS=0"], "SEEDS=0 must be a whole number >= 1"),
    (["report", "SCALE=huge"], "SCALE=huge must be tiny, small or paper"),
    (["report", "SCALE=tiny", "ARTEFACTS=table99"], "unknown artefact table99"),
])
def test_bad_report_input_is_one_line_and_exit_2(tmp_path, args, needle):
    r = make(args, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("make")]
    assert len(lines) <= 1 and needle in r.stderr, r.stderr
    assert not (tmp_path / "multiruns").exists()


def fake_run(d: Path, seed: int, scores: dict[str, list[int]], deact: dict[str, dict[str, list[int]]], **caps) -> None:
    """A finished evaluate run (Table 1 shape) written as the entry point writes it."""
    ids = [f"e{i}" for i in range(len(next(iter(scores.values()))))]
    rec = lambda s: {"ids": ids, "scores": s, "draws": [s]}  # noqa: E731
    d.mkdir(parents=True)
    m = {"job": "evaluate", "source": "same", "seed": seed, "model": caps.get("model", "m"),
         "tasks": {t: {"score": sum(s) / len(s), "per_example": rec(s)} for t, s in scores.items()},
         "table": {t: {} for t in scores},
         "deactivation": {k: {t: {t: {"score": sum(v[t]) / len(v[t]), "per_example": rec(v[t])}} for t in scores}
                          for k, v in deact.items()}}
    write_json_with_checksum(d / "metrics.json", m)
    cfg = {"seed": seed, "model": {"name": caps.get("model", "m")}, "data": {"max_test": caps.get("max_test", 4)},
           "tasks": {t: {} for t in scores}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_compare_two_runs_and_refuse_mixed_caps(tmp_path):
    base = {"sst2": [100, 100, 0, 100]}
    fake_run(tmp_path / "a", 1, base, {"task": {"sst2": [0, 0, 0, 100]}, "random": {"sst2": [100, 100, 0, 100]}})
    fake_run(tmp_path / "b", 1, base, {"task": {"sst2": [0, 0, 0, 0]}, "random": {"sst2": [100, 100, 100, 100]}})
    r = run(["taskneurons.report", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "c.json")])
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["cell"]: row for row in json.loads((tmp_path / "c.json").read_text())["rows"]}
    assert rows["deactivate_task/sst2"]["diff"]["mean"] == pytest.approx(-25)
    assert rows["deactivate_random/sst2"]["how"] == "paired" and rows["original/sst2"]["p"] == 1.0
    # effects (cell - original): A's task effect -50, B's -75, so B - A = -25; random: A 0, B +25
    eff = {e["effect"]: e for e in json.loads((tmp_path / "c.json").read_text())["effects"]}
    task = eff["deactivate_task/sst2 - original"]
    assert (task["a"]["mean"], task["b"]["mean"], task["diff"]["mean"]) == (-50, -75, -25)
    assert task["same_outcome_pct"] == 75.0 and eff["deactivate_random/sst2 - original"]["diff"]["mean"] == 25
    assert "effects (cell - reference)" in r.stdout
    # a sweep whose runs of one cell used different caps: one line, exit 2
    fake_run(tmp_path / "mixed" / "0", 1, base, {"task": {"sst2": [0] * 4}}, max_test=4)
    fake_run(tmp_path / "mixed" / "1", 2, base, {"task": {"sst2": [0] * 4}}, max_test=8)
    for args in (["compare", str(tmp_path / "a"), str(tmp_path / "mixed")],
                 ["table1", str(tmp_path / "mixed"), "--scale", "tiny"]):
        r = run(["taskneurons.report", *args], env={"TASKNEURONS_OUTPUT": str(tmp_path / "o")})
        assert r.returncode == 2 and r.stderr.startswith("error: runs of different models or caps"), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_table1_report_from_seeds_gives_intervals_and_paired_p(tmp_path):
    for s in (1, 2, 3):
        fake_run(tmp_path / "sweep" / f"seed{s}", s, {"sst2": [100] * 20},
                 {"task": {"sst2": [0] * 10 + [100] * 10}, "random": {"sst2": [100] * 19 + [0]}})
    r = run(["taskneurons.report", "table1", str(tmp_path / "sweep"), "--scale", "tiny", "--seeds", "1,2,3"],
            env={"TASKNEURONS_OUTPUT": str(tmp_path / "o")})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "o" / "results" / "table1" / "tiny" / "result.json").read_text())
    cell = res["cells"]["table1/task_vs_random/sst2"]
    assert cell["mean"] == pytest.approx(-45) and cell["method"] == "t over 3 seeds"
    # per seed 10 pairs where task is wrong and random right, 1 the other way: McNemar on 30 vs 3
    from scipy.stats import binomtest

    assert cell["p"] == pytest.approx(binomtest(3, 33, 0.5).pvalue)
    assert res["tables"]["ours"]["rows"][0] == ["Original", "100.0 ± 0.0", "100.0 ± 0.0"]
    assert (tmp_path / "o" / "results" / "table1" / "tiny" / "table.md").read_text().startswith("# Table 1")
