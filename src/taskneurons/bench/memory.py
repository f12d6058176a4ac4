"""Memory benchmarks: the peak RSS (VmHWM) of a fresh process per side, reset once the model is loaded."""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path
from typing import Any

import torch

from taskneurons import CONF_DIR
from taskneurons.bench.fixtures import load_models, reset_peak_rss, run_worker, status_mb, train_batches
from taskneurons.models.loss import target_only_loss
from taskneurons.neurons.attribution import attribute
from taskneurons.neurons.neuronset import NeuronSet, select_top
from taskneurons.neurons.pools import neuron_pools
from taskneurons.neurons.sparse_finetune import NeuronDeltas

STARTER = ["rotten_tomatoes", "bbc_topic", "bbc_title"]
ONE_TASK = ["bbc_title"]  # the largest of the three (longest targets)


def _measure(work) -> dict[str, float]:
    gc.collect()
    reset_peak_rss()
    base = status_mb("VmRSS")  # after the reset: the high-water mark then starts at or below it, never above
    work()
    peak = status_mb("VmHWM")
    return {"peak_rss_mb": round(peak, 1), "peak_extra_mb": round(peak - base, 1), "rss_after_loading_mb": round(base, 1)}


def demo_session(job: str, tasks: list[str], out: str, extra: tuple[str, ...] = ()):
    """The demo's configuration (SmolLM2, its caps) for ``tasks``, opened as the entry point opens it
    (``extra`` overrides, e.g. a tiny model for the benchmark's own test)."""
    from hydra import compose, initialize_config_dir

    from taskneurons.runtime.session import open_session

    overrides = ["experiment=demo", "logger=none", f"task=[{','.join(tasks)}]", "neurons.reuse=false",
                 f"paths.output_root={out}", "trainer.enable_progress_bar=false", *extra]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # the demo is an evaluate job: its config (and caps) serve both sides
        cfg = compose(config_name="evaluate", overrides=overrides)
    splits = ("train", "test") if job == "identify" else ("test",)
    return open_session(cfg, Path(out), {}, splits=splits)


def task_worker(job: str, tasks: list[str], extra: tuple[str, ...] = (), dtype: str | None = None) -> dict[str, Any]:
    """Identification or zero-shot evaluation of ``tasks`` with the demo's caps, in this process."""
    from taskneurons.lit.evaluation import run_test
    from taskneurons.neurons.identify import identify_task

    extra = (*extra, f"model.dtype={dtype}") if dtype else extra
    with tempfile.TemporaryDirectory() as out:
        session = demo_session(job, tasks, out, extra)
        if job == "identify":
            pools = neuron_pools(session.model, session.cfg.neurons.definition)

            def work():
                for name in tasks:
                    identify_task(session.model, session.tok, session.model_name, session.data[name],
                                  session.cfg.neurons, session.cfg.data, pools)
        else:
            def work():
                run_test(session, tasks)
        return {"tasks": tasks, **_measure(work)}


def bench_identify_memory(jobs: int = 1) -> dict[str, Any]:
    """Peak RSS of identifying the starter tasks vs evaluating them zero-shot (target <= 2.0 for one task
    and for three), and three tasks vs one (memory must not grow with the number of tasks).

    Each side is its own process, so ``jobs`` > 1 runs them side by side (the peaks do not change, the
    wall time does; mind the machine's memory: about 3 GB per process on SmolLM2)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = {f"{job}_{len(tasks)}": ("--task-worker", job, *tasks)
             for tasks in (ONE_TASK, STARTER) for job in ("evaluate", "identify")}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {name: pool.submit(run_worker, *args) for name, args in cases.items()}
        runs = {name: f.result() for name, f in futures.items()}
    rows: dict[str, Any] = {"runs": runs}
    for n in (1, 3):
        ratio = runs[f"identify_{n}"]["peak_rss_mb"] / runs[f"evaluate_{n}"]["peak_rss_mb"]
        rows[f"identify_vs_evaluate_{n}_task{'s' if n > 1 else ''}"] = {
            "ratio": round(ratio, 3), "target": 2.0, "verdict": "ok" if ratio <= 2.0 else "missed"}
    growth = runs["identify_3"]["peak_rss_mb"] / runs["identify_1"]["peak_rss_mb"]
    rows["identify_3_tasks_vs_1"] = {"ratio": round(growth, 3), "target": 1.1, "verdict": "ok" if growth <= 1.1 else "missed"}
    return rows


def ft_worker(model_name: str, mode: str) -> dict[str, Any]:
    """Peak RSS of three full or neuron-only (10 %) fine-tuning steps, in this process."""
    model, tok = load_models([model_name])[model_name]
    batches = train_batches(tok)
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        params = list(model.parameters())
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        pools = neuron_pools(model)
        scores, _ = attribute(model, batches[:1], pools)
        sizes = {p.key: p.size for p in pools}
        deltas = NeuronDeltas(pools, NeuronSet(select_top(scores, sizes, 0.1), sizes, {"definition": "output_units"}))
        deltas.attach()
        params = list(deltas.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    model.train()

    def steps():
        for _ in range(2):
            for b in batches:
                opt.zero_grad(set_to_none=True)
                target_only_loss(model, b).backward()
                opt.step()

    return {"trainable_params": sum(p.numel() for p in params), **_measure(steps)}


def bench_neuron_ft_memory(model_names: list[str]) -> dict[str, Any]:
    """Neuron-only fine-tuning at 10 % vs full fine-tuning: peak RSS, one process each (target <= 0.75)."""
    rows = {}
    for mname in model_names:
        full, neu = (run_worker("--ft-worker", mode, "--models", mname) for mode in ("full", "neurons"))
        ratio = neu["peak_rss_mb"] / full["peak_rss_mb"]
        rows[mname] = {"full": full, "neurons_10pct": neu, "ratio": round(ratio, 3),
                       "peak_extra_ratio": round(neu["peak_extra_mb"] / max(full["peak_extra_mb"], 1e-9), 3),
                       "target": 0.75, "verdict": "ok" if ratio <= 0.75 else "missed"}
    return rows
