"""Evaluate a model on a benchmark's tasks: ``python -m taskneurons.evaluate model=... benchmark=...``.

Compose config -> validate config and data (before any model loads) -> load model -> Lightning test
loop over one dataloader per task -> metrics.json (atomic) + results table + W&B run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from taskneurons.config import checked_task_specs
from taskneurons.data.datamodule import TaskDataModule
from taskneurons.data.loading import load_tasks
from taskneurons.lit.module import CausalLMModule
from taskneurons.models.loading import load_model_and_tokenizer
from taskneurons.report.tables import print_results, summarize
from taskneurons.runtime.app import run_entry
from taskneurons.runtime.atomic import atomic_write_json
from taskneurons.runtime.loggers import build_logger, finish, log_results_table, to_container
from taskneurons.runtime.trainer import build_trainer

log = logging.getLogger("taskneurons.evaluate")


def evaluate_job(cfg: DictConfig, out: Path, meta: dict) -> dict[str, Any]:
    specs = checked_task_specs(cfg)
    data = load_tasks(
        specs, cfg.paths.data_dir, max_train=0, max_test=cfg.data.max_test, seed=int(cfg.data.sample_seed), splits=("test",)
    )
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    model, tok = load_model_and_tokenizer(cfg.model, cfg.paths.model_cache)
    logger = build_logger(cfg, out, {**to_container(cfg), "run_meta": meta})
    try:
        dm = TaskDataModule(tok, data, cfg.data, seed=int(cfg.seed))
        module = CausalLMModule(model, tok, cfg.eval)
        module.set_eval_tasks(specs)
        trainer = build_trainer(cfg, logger)
        trainer.test(module, dataloaders=dm.test_dataloader(), verbose=False)
        results = module.results
        metrics = {
            "job": "evaluate",
            "model": cfg.model.name,
            "benchmark": cfg.benchmark.name,
            "seed": int(cfg.seed),
            "tasks": results,
            "summary": summarize(results),
            "data_fingerprint": {n: td.fingerprint("test") for n, td in data.items()},
        }
        atomic_write_json(out / "samples.json", module.samples())
        atomic_write_json(out / "metrics.json", metrics)
        log_results_table(logger, results)
        if logger is not None:
            logger.log_metrics({f"summary/{k}": v for k, v in metrics["summary"].items()})
    finally:
        finish(logger)
    print_results(results, title=f"{cfg.model.name} on {cfg.benchmark.name} (zero-shot)", run_dir=out)
    return metrics


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run_entry(cfg, evaluate_job)


if __name__ == "__main__":
    main()
