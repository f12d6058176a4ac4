"""Identify task-specific neurons: ``python -m taskneurons.identify model=<m> task=<t> neurons.proportion=0.1``.

For each selected task: gradient attribution on its training data -> top-k % per (layer, matrix) ->
a NeuronSet saved in the store (``neurons.store_dir``) and logged as a W&B artifact. metrics.json holds
each set's size, fingerprint, per-layer counts and path, and the pairwise overlap (Jaccard).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from taskneurons.neurons.ddp_attribution import attribute_on_ranks
from taskneurons.neurons.identify import sets_for_tasks, validate_neurons_config
from taskneurons.neurons.pools import neuron_pools
from taskneurons.report.tables import matrix_table, print_results_path
from taskneurons.runtime.app import run_entry
from taskneurons.runtime.distributed import (
    compute_device,
    global_rank,
    is_distributed,
    is_global_zero,
    run_on_ranks,
    strategy_problems,
)
from taskneurons.runtime.loggers import finish
from taskneurons.runtime.resume import JobState
from taskneurons.runtime.session import open_session
from taskneurons.runtime.trainer import build_trainer


def identify_job(cfg: DictConfig, out: Path, meta: dict, state: JobState) -> dict[str, Any]:
    problems = validate_neurons_config(cfg.neurons, cfg.model.name, list(cfg.get("tasks") or {}))
    if cfg.neurons.get("path"):
        problems.append("neurons.path is for using a saved set; identify computes sets (drop neurons.path)")
    problems += strategy_problems(cfg, "identify")
    names = list(cfg.get("tasks") or {})
    split = cfg.neurons.split
    session = open_session(cfg, out, meta, splits=("train", "test") if split == "train" else ("test",),
                           need_train=names if split == "train" and not cfg.neurons.get("fallback_to_test") else (), problems=problems)
    try:
        pools = neuron_pools(session.model, cfg.neurons.definition)
        ranks = 1
        if is_distributed(cfg):  # trainer=ddp: the attribution batches are split over the ranks, scores summed
            trainer = build_trainer(cfg, None, distributed=True)
            ranks = trainer.world_size

            def on_rank(strategy: Any) -> tuple[dict, dict]:
                session.model.to(strategy.root_device)  # in place: this rank's device
                return sets_for_tasks(session, names, pools, attribute_fn=attribute_on_ranks)

            sets, infos = run_on_ranks(trainer, on_rank)
            if not is_global_zero():
                return {"rank": global_rank()}  # rank 0 writes every file
        else:
            session.model.to(compute_device(cfg.trainer.get("accelerator", "auto")))  # attribution on the GPU if any
            sets, infos = sets_for_tasks(session, names, pools)
        overlap = {a: {b: round(sets[a].jaccard(sets[b]), 4) for b in names} for a in names}
        metrics = {"job": "identify", "model": cfg.model.name, "seed": int(cfg.seed),
                   "neurons": {k: v for k, v in cfg.neurons.items() if k != "store_dir"},
                   "tasks": infos, "overlap_jaccard": overlap, "attribution_ranks": ranks}
        if session.logger is not None:
            session.logger.log_metrics({f"identify/{t}/count": float(i["count"]) for t, i in infos.items()})
    finally:
        finish(session.logger)
    print_identify(metrics, out)
    return metrics


def print_identify(metrics: dict[str, Any], out: Path) -> None:
    table = Table(title=f"task-specific neurons of {metrics['model']} (p={metrics['neurons']['proportion']})")
    for c in ("task", "neurons", "of", "fingerprint", "source", "set file"):
        table.add_column(c)
    for t, i in metrics["tasks"].items():
        table.add_row(t, str(i["count"]), str(i["total"]), i["fingerprint"], i["source"], i["path"])
    console = Console(width=200)
    console.print(table)
    if len(metrics["overlap_jaccard"]) > 1:
        console.print(matrix_table(metrics["overlap_jaccard"], "overlap (Jaccard) between task sets", "", "{:.3f}"))
    print_results_path(console, out)


@hydra.main(version_base="1.3", config_path="conf", config_name="identify")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run_entry(cfg, identify_job)


if __name__ == "__main__":
    main()
