"""lm-evaluation-harness through HFLM(pretrained=<model object>) with a neuron set switched off, on a local
YAML task over a JSONL file (offline). Skipped where the optional extra lm-eval is not installed."""

from __future__ import annotations

import json

import pytest
import torch

import taskneurons as tn

lm_eval = pytest.importorskip("lm_eval")

ROWS = [{"input": f"the film was {w}", "target": t}
        for w, t in [("great", "positive"), ("awful", "negative"), ("superb", "positive"), ("dull", "negative")] * 2]
TASK_YAML = """task: tn_sent
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: "Review: {{{{input}}}}\\nSentiment:"
doc_to_choice: ["positive", "negative"]
doc_to_target: "{{{{target}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture
def local_task(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "sent.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "sent.yaml").write_text(TASK_YAML.format(jsonl=folder / "sent.jsonl"))
    return folder


def logliks(out) -> list[float]:
    return [float(r[0]) for s in out["samples"]["tn_sent"] for r in s["filtered_resps"]]


def test_harness_sees_the_set_switched_off_and_the_model_comes_back(tmp_path, local_task, monkeypatch):
    from taskneurons.harness import harness_evaluate, main

    model, tok = tn.load_model("tiny_llama")
    task = tn.make_task({"name": "sent", "kind": "classification", "metric": "accuracy",
                         "prompt": "Review: {input}\nSentiment:", "labels": ["positive", "negative"]})
    nset = tn.select(tn.score_neurons(model, tok, task, ROWS), 0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = {"include_path": local_task, "log_samples": True}
    base = harness_evaluate(model, tok, ["tn_sent"], **kw)
    off_w = harness_evaluate(model, tok, ["tn_sent"], nset=nset, **kw)
    off_h = harness_evaluate(model, tok, ["tn_sent"], nset=nset, path="hooks", **kw)
    assert len(logliks(base)) == 2 * len(ROWS) and base["results"]["tn_sent"]["acc,none"] in {i / 8 for i in range(9)}
    assert logliks(off_w) != logliks(base)
    assert logliks(off_w) == pytest.approx(logliks(off_h), abs=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(tn.ConfigError, match="lm-eval knows no task nosuch"):
        harness_evaluate(model, tok, ["nosuch"], include_path=local_task)

    stem = nset.save(tmp_path / "sent")
    monkeypatch.chdir(tmp_path)
    metrics = main(["--model", "tiny_llama", "--tasks", "tn_sent", "--include-path", str(local_task),
                    "--neurons", str(stem), "--out", "run"])
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(written) >= {"original", "deactivated", "neurons"} and written["neurons"]["count"] == nset.count()
    assert written["original"]["tn_sent"]["acc,none"] == metrics["original"]["tn_sent"]["acc,none"]
