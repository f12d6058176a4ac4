"""Continual-learning benchmarks (``make bench`` calls ``run_benchmarks``; ratios measured side by side):

- ``stage_step``: an NCFT stage step vs a SeqFT stage step, both inside the stage loop's Lightning fit
  (ContinualModule, fresh Trainer, NeuronFinetuning at 10 %), interleaved pairs (target <= 0.75);
- ``stage_memory``: peak RSS (VmHWM, reset after the model loads) of an NCFT vs a SeqFT stage, a fresh
  process each (``python -m taskneurons.bench.continual --worker full|neurons``; target <= 0.75);
- ``wncft_eval``: evaluating task j with W-NCFT's weighted rows (built once for the task, written, the
  whole test set scored, restored) vs a plain evaluation, after 4 stages, the batches of both sides
  interleaved (target <= 1.1; a plain-vs-plain control shows the noise of whole evaluations);
- ``checkpoint``: bytes of an NCFT stage checkpoint (the changed rows) vs a full-model checkpoint at 10 %
  (target <= 0.15).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from taskneurons.continual.rows import rows_written, similarity_weights, snapshot, weighted_rows
from taskneurons.neurons.neuronset import NeuronSet, random_like, select_top
from taskneurons.neurons.pools import neuron_pools
from taskneurons.neurons.sparse_finetune import NeuronFinetuning
from taskneurons.runtime.quiet import quiet_libraries

PROPORTION = 0.1
STEPS = 3


def _smol():
    from taskneurons.bench.fixtures import load_models

    return load_models(["smollm2_135m"])["smollm2_135m"]


def _task_set(model, batches, seed: int) -> tuple[list, NeuronSet]:
    """A 10 % set per (layer, matrix): attribution for the first, same-count random sets for others."""
    from taskneurons.neurons.attribution import attribute

    pools = neuron_pools(model)
    sizes = {p.key: p.size for p in pools}
    if seed == 0:
        scores, _ = attribute(model, batches[:1], pools)
        return pools, NeuronSet(select_top(scores, sizes, PROPORTION), sizes, {"definition": "output_units"})
    counts = {k: max(1, int(round(PROPORTION * n))) for k, n in sizes.items()}
    return pools, NeuronSet(random_like(counts, sizes, seed), sizes, {"definition": "output_units"})


class _StepTimes(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._t)


def _stage_fit(model, tok, batches, mode: str, nset: NeuronSet | None, pools) -> list[float]:
    """One stage's fit as the loop runs it: a fresh Trainer, the SFT module, neuron deltas or full FT."""
    from taskneurons.continual.loop import ContinualModule

    eval_cfg = OmegaConf.create({"cls_scorers": ["loglik"], "primary_cls_scorer": "loglik"})
    optim = OmegaConf.create({"lr": 1e-5, "weight_decay": 0.0})
    module = ContinualModule(model, tok, eval_cfg, optim)
    callbacks: list = [_StepTimes()]
    if mode == "neurons":
        callbacks.append(NeuronFinetuning(pools, nset))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    quiet_libraries()  # the Trainer is built here directly, not through runtime.trainer.build_trainer
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         max_epochs=1, accelerator="cpu", devices=1, callbacks=callbacks)
    model.train()
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    model.eval()
    return callbacks[0].times


def bench_stage_step(model, tok) -> dict[str, Any]:
    from taskneurons.bench.fixtures import train_batches
    from taskneurons.bench.timing import paired_ratio

    batches = train_batches(tok, n_batches=STEPS)
    pools, nset = _task_set(model, batches, 0)

    def median_step(mode: str) -> float:  # one stage's fit; its median step (the first carries Lightning's setup)
        return sorted(_stage_fit(model, tok, batches, mode, nset, pools))[len(batches) // 2]

    # interleaved pairs (machine drift hits both sides alike), more of them while the verdict is unclear
    row = paired_ratio(lambda: median_step("full"), lambda: median_step("neurons"), target=0.75,
                       max_pairs=15, returns_seconds=True)
    row["seqft_step_s"], row["ncft_step_s"] = row.pop("baseline_s"), row.pop("candidate_s")
    return {**row, "steps_per_stage": len(batches)}


def worker(mode: str) -> dict[str, Any]:
    """Peak RSS of one stage (``STEPS`` steps) in this process, counted from after the model loaded."""
    from taskneurons.bench.fixtures import reset_peak_rss, status_mb, train_batches

    model, tok = _smol()
    batches = train_batches(tok, n_batches=STEPS)
    pools, nset = _task_set(model, batches, 0) if mode == "neurons" else (neuron_pools(model), None)
    reset_peak_rss()
    base = status_mb("VmRSS")  # after the reset, so that the peak is never below it
    _stage_fit(model, tok, batches, mode, nset, pools)
    peak = status_mb("VmHWM")
    return {"loaded_rss_mb": round(base, 1), "peak_rss_mb": round(peak, 1), "peak_extra_mb": round(peak - base, 1)}


def bench_stage_memory() -> dict[str, Any]:
    runs = {}
    for mode in ("full", "neurons"):
        r = subprocess.run([sys.executable, "-m", "taskneurons.bench.continual", "--worker", mode],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"continual bench worker {mode} failed:\n{r.stderr[-3000:]}")
        runs[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    ratio = runs["neurons"]["peak_rss_mb"] / runs["full"]["peak_rss_mb"]
    return {"seqft": runs["full"], "ncft": runs["neurons"], "ratio": round(ratio, 3),
            "peak_extra_ratio": round(runs["neurons"]["peak_extra_mb"] / max(runs["full"]["peak_extra_mb"], 1e-9), 3),
            "target": 0.75, "verdict": "ok" if ratio <= 0.75 else "missed"}


@torch.no_grad()
def bench_wncft_eval(model, tok) -> dict[str, Any]:
    """After 4 NCFT stages (4 sets of 10 %, their rows perturbed as training would), evaluate a task.

    A W-NCFT evaluation = build the task's weighted rows + write them + score every batch + restore. On a
    shared 2-core CPU two identical plain evaluations differ by up to ±15 % (the "plain_vs_plain" control
    below), more than the effect measured, so within each pair the batches are interleaved: each batch is
    scored with the plain rows and with the weighted rows back to back (alternating which goes first), the
    rows switched between them outside the clock, and the one-time build/write/restore timed and added to
    the W-NCFT side. Drift then hits both sides batch by batch.
    """
    from taskneurons.bench.fixtures import starter_batches, train_batches
    from taskneurons.bench.timing import adaptive_pairs, paired_ratio
    from taskneurons.continual.rows import current_rows, write_rows
    from taskneurons.eval.scoring import label_loglik

    batches, labels = starter_batches(tok, "bbc_topic", 64, 16, 128)
    train = train_batches(tok, n_batches=1)
    after, before, vectors = [], [], []
    for k in range(4):
        pools, nset = _task_set(model, train, k)
        before.append(snapshot(pools, nset))
        rows = snapshot(pools, nset)
        gen = torch.Generator().manual_seed(k)
        for r in rows.values():
            r["values"] = r["values"] + 1e-3 * torch.randn(r["values"].shape, generator=gen)
        after.append(rows)
        vectors.append(torch.randn(model.config.hidden_size, generator=gen))

    def score(b) -> float:
        t = time.perf_counter()
        label_loglik(model, b, labels, tok.pad_token_id)
        return time.perf_counter() - t

    def pair(i: int) -> tuple[float, float]:
        plain = weighted = 0.0
        t = time.perf_counter()  # the one-time part of W-NCFT's evaluation of a task
        rows = weighted_rows(after, before, similarity_weights(vectors[0], vectors), "normalized")
        with rows_written(pools, rows):
            pass  # write + restore, as around a real evaluation
        weighted += time.perf_counter() - t
        saved = current_rows(pools, rows)
        for n, b in enumerate(batches):
            first_plain = (i + n) % 2 == 0
            for side in ((0, 1) if first_plain else (1, 0)):
                if side:
                    write_rows(pools, rows)
                    weighted += score(b)
                    write_rows(pools, saved)
                else:
                    plain += score(b)
        return plain, weighted

    def plain_eval():
        for b in batches:
            label_loglik(model, b, labels, tok.pad_token_id)

    pair(0)  # warm-up
    row = adaptive_pairs(pair, target=1.1, max_pairs=11)
    # the noise floor of whole-evaluation timing on this machine: the same evaluation twice
    control = paired_ratio(plain_eval, plain_eval, target=1.1, min_pairs=3, max_pairs=3)
    return {"prompts": sum(len(b) for b in batches), "stages": 4, **row,
            "plain_vs_plain": {k: control[k] for k in ("ratios", "ratio_min", "ratio_max")}}


def bench_checkpoint(model, tok) -> dict[str, Any]:
    from taskneurons.bench.fixtures import train_batches

    pools, nset = _task_set(model, train_batches(tok, n_batches=1), 0)

    def size(obj: Any) -> int:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return len(buf.getvalue())

    stage = size({"after": snapshot(pools, nset)})
    full = size(model.state_dict())
    return {"ncft_stage_bytes": stage, "full_model_bytes": full, "proportion": PROPORTION,
            "ratio": round(stage / full, 4), "target": 0.15, "verdict": "ok" if stage / full <= 0.15 else "missed"}


def run_benchmarks() -> dict[str, Any]:
    """Every continual benchmark on SmolLM2-135M (CPU), as ``{name: row with ratio/target/verdict}``."""
    torch.manual_seed(0)
    model, tok = _smol()
    out = {"checkpoint": bench_checkpoint(model, tok), "wncft_eval": bench_wncft_eval(model, tok),
           "stage_step": bench_stage_step(model, tok)}
    del model
    out["stage_memory"] = bench_stage_memory()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", choices=["full", "neurons"], help="measure one stage's peak RSS in this process")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    print(json.dumps(run_benchmarks(), indent=1))


if __name__ == "__main__":
    main()
