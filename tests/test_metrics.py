"""Per-task metrics: accuracy counts unmatched generations as wrong; ROUGE-L takes the best reference."""

from __future__ import annotations

from taskneurons.data.tasks import TaskSpec
from taskneurons.eval.metrics import TaskMetrics

CLS = TaskSpec("c", "classification", "{input}", "accuracy", {"type": "local", "path": "x"}, labels=("a", "b", "c"))
GEN = TaskSpec("g", "generation", "{input}", "rougeL", {"type": "local", "path": "x"})


def test_accuracy_with_invalid_generations():
    m = TaskMetrics(CLS, ("loglik", "generate"), "loglik")
    m.update_cls("loglik", [0, 1, 2, 2], [0, 1, 1, 1])
    m.update_cls("generate", [0, -1, -1, 1], [0, 1, 1, 1])
    r = m.compute()
    assert r["accuracy_loglik"] == 50.0 and r["accuracy_generate"] == 50.0
    assert r["invalid_rate_generate"] == 50.0
    assert r["score"] == 50.0 and r["n"] == 4
    assert r["majority_baseline"] == 75.0 and r["chance"] == 33.33


def test_rouge_l_known_answer_and_best_reference():
    m = TaskMetrics(GEN, ("loglik",), "loglik")
    # LCS("the cat sat", "the cat sat on the mat") = 3: P = 1, R = 0.5, F = 2/3
    m.update_gen(["the cat sat"], [("the cat sat on the mat", "dogs bark")])
    assert m.compute()["rougeL"] == 66.67
    assert m.compute()["score"] == 66.67
