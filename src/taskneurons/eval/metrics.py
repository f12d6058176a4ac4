"""Per-task metric state (torchmetrics), filled batch by batch, read once at the end.

Scores are reported in percent, like the paper's tables.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.text import rouge_score
from torchmetrics.text import ROUGEScore

# CLS_SCORERS is defined with the task vocabulary (the config checks below runtime read it)
from taskneurons.data.tasks import CLS_SCORERS, TaskSpec  # noqa: F401


@dataclass
class TaskMetrics:
    spec: TaskSpec
    scorers: tuple[str, ...]
    primary: str
    accuracy: dict[str, MulticlassAccuracy] = field(default_factory=dict)
    rouge: ROUGEScore | None = None
    seconds: Counter = field(default_factory=Counter)
    invalid: Counter = field(default_factory=Counter)
    gold: Counter = field(default_factory=Counter)
    predicted: Counter = field(default_factory=Counter)  # primary scorer's predictions (-1: no label named)
    n: int = 0
    samples: list[dict] = field(default_factory=list)
    # per test example: id and primary score in percent (0/100 for classification), so that intervals
    # and paired tests over the same examples can be computed later (report/stats.py)
    example_ids: list[str] = field(default_factory=list)
    example_scores: list[float] = field(default_factory=list)
    # the loglik scorer's score of the gold label, summed over examples: a continuous reading of the same
    # decisions (two models with equal accuracy rarely have equal means; export verification compares it)
    gold_loglik_sum: float = 0.0

    def __post_init__(self) -> None:
        # Never synced over a process group: under trainer=ddp each rank scores whole tasks of its own
        # (continual: tasks split over the ranks), and a sync would mix different tasks' states.
        if self.spec.is_classification:
            # One extra class stands for "generated text names no label": always wrong.
            n_cls = len(self.spec.labels) + 1
            self.accuracy = {s: MulticlassAccuracy(num_classes=n_cls, average="micro", sync_on_compute=False)
                             for s in self.scorers}
        else:
            self.rouge = ROUGEScore(rouge_keys="rougeL", accumulate="best", sync_on_compute=False)

    def update_cls(self, scorer: str, pred: list[int], gold: list[int], ids: list[str] | None = None,
                   gold_scores: list[float] | None = None) -> None:
        invalid = len(self.spec.labels)
        p = torch.tensor([x if x >= 0 else invalid for x in pred])
        self.accuracy[scorer].update(p, torch.tensor(gold))
        self.invalid[scorer] += sum(x < 0 for x in pred)
        if scorer == self.scorers[0]:
            self.n += len(gold)
            self.gold.update(gold)
        if scorer == self.primary:
            self.predicted.update(pred)
        if gold_scores is not None:
            self.gold_loglik_sum += float(sum(gold_scores))
        if scorer == self.primary and ids is not None:
            self.example_ids += list(ids)
            self.example_scores += [100 if a == b else 0 for a, b in zip(pred, gold, strict=True)]

    def update_gen(self, preds: list[str], refs: list[tuple[str, ...]], ids: list[str] | None = None) -> None:
        self.rouge.update(preds, [list(r) for r in refs])
        self.n += len(preds)
        if ids is not None:
            self.example_ids += list(ids)
            for p, r in zip(preds, refs, strict=True):
                f = rouge_score(p, [list(r)], rouge_keys="rougeL", accumulate="best")["rougeL_fmeasure"]
                self.example_scores.append(round(100 * float(f), 2))

    def timed(self, scorer: str):
        metrics = self

        class _Timer:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                metrics.seconds[scorer] += time.perf_counter() - self.t

        return _Timer()

    def compute(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {"kind": self.spec.kind, "n": self.n, "metric": self.spec.metric}
        if self.spec.is_classification:
            for s in self.scorers:
                out[f"accuracy_{s}"] = round(100 * float(self.accuracy[s].compute()), 2)
                out[f"seconds_{s}"] = round(self.seconds[s], 3)
                if s == "generate":
                    out["invalid_rate_generate"] = round(100 * self.invalid[s] / max(self.n, 1), 2)
            if "loglik" in self.scorers:
                out["gold_loglik"] = round(self.gold_loglik_sum / max(self.n, 1), 4)
            out["score"] = out[f"accuracy_{self.primary}"]
            out["scorer"] = self.primary
            out["majority_baseline"] = round(100 * max(self.gold.values()) / max(self.n, 1), 2) if self.gold else 0.0
            out["chance"] = round(100 / len(self.spec.labels), 2)
            # 1: every example got the same answer (a collapsed model; lit/divergence.py warns after training)
            out["predicted_classes"] = len(self.predicted)
        else:
            out["rougeL"] = round(100 * float(self.rouge.compute()["rougeL_fmeasure"]), 2)
            out["seconds_generate"] = round(self.seconds["generate"], 3)
            out["score"] = out["rougeL"]
            out["scorer"] = "generate"
        if self.example_ids:
            out["per_example"] = {"ids": self.example_ids, "scores": self.example_scores}
        return out
