"""Fine-tune on one or several tasks, then evaluate in-domain and out-of-domain tasks.

``python -m taskneurons.train model=<m> benchmark=<b> intervention=finetune_neurons neurons=task|random
neurons.proportion=<p>`` trains only the rows of the training tasks' neuron sets (their union), an
equal-size random set, or every FFN unit (``neurons=all_ffn``); ``intervention=finetune_full`` trains
every parameter. The trained weights are merged into an ordinary HF model (``save_model=true`` saves it).
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import mean
from typing import Any

import hydra
from omegaconf import DictConfig

from taskneurons.data.datamodule import TaskDataModule
from taskneurons.lit.divergence import constant_prediction_warnings, loss_warnings, print_warnings
from taskneurons.lit.evaluation import resumable_test
from taskneurons.lit.fit import ResumableFit
from taskneurons.lit.losses import LossRecorder, tail_decline
from taskneurons.lit.module import CausalLMModule
from taskneurons.models.fingerprint import model_fingerprint
from taskneurons.neurons.controlled import check_controlled, controlled_set
from taskneurons.neurons.identify import control_set, sets_for_tasks, union_all, validate_neurons_config
from taskneurons.neurons.per_task import PerTaskMasks, per_task_loader
from taskneurons.neurons.pools import neuron_pools
from taskneurons.neurons.sparse_finetune import NeuronFinetuning
from taskneurons.report.tables import print_results, summarize
from taskneurons.runtime.app import run_entry
from taskneurons.runtime.atomic import atomic_write_json
from taskneurons.runtime.distributed import (
    compute_device,
    distributed_info,
    global_rank,
    is_global_zero,
    ranks_of,
    strategy_problems,
)
from taskneurons.runtime.loggers import finish, log_results_table
from taskneurons.runtime.resume import JobState
from taskneurons.runtime.session import open_session

INTERVENTIONS = ("finetune_neurons", "finetune_full")


def training_tasks(cfg: DictConfig) -> list[str]:
    names = list(cfg.get("tasks") or {})
    if cfg.get("train_tasks"):
        return list(cfg.train_tasks)
    preferred = [t for t in names if t in (cfg.benchmark.get("train_tasks") or [])]
    return preferred or names


def validate_train(cfg: DictConfig) -> list[str]:
    p: list[str] = []
    if cfg.intervention.name not in INTERVENTIONS:
        p.append(f"intervention={cfg.intervention.name} does not train; use one of {', '.join(INTERVENTIONS)}")
    elif cfg.intervention.name == "finetune_neurons":
        p += validate_neurons_config(cfg.neurons, cfg.model.name)
        p += validate_set_source(cfg)
    names = list(cfg.get("tasks") or {})
    unknown = [t for t in training_tasks(cfg) if t not in names]
    if unknown:
        p.append(f"train_tasks {unknown} are not among the selected tasks {names}; add them with task=[...]")
    if float(cfg.optim.lr) <= 0:
        p.append(f"optim.lr={cfg.optim.lr} must be > 0")
    if float(cfg.optim.weight_decay) < 0:
        p.append(f"optim.weight_decay={cfg.optim.weight_decay} must be >= 0")
    return p + strategy_problems(cfg, "train")


def validate_set_source(cfg: DictConfig) -> list[str]:
    """neurons=controlled (Tables 9-11) and intervention.combine=per_task: checks that need no model."""
    p: list[str] = []
    combine = cfg.intervention.get("combine", "union")
    if combine not in ("union", "per_task"):
        p.append(f"intervention.combine='{combine}' must be union or per_task")
    elif combine == "per_task" and cfg.neurons.set != "task":
        p.append(f"intervention.combine=per_task needs neurons=task (each task's own set), not neurons.set={cfg.neurons.set}")
    if cfg.neurons.set == "controlled":
        c = cfg.neurons.get("controlled")
        if c is None:
            return p + ["neurons.set=controlled needs neurons.controlled (use neurons=controlled)"]
        p += check_controlled(c, len(c.get("test_tasks") or []), float(c.get("test_proportion") or 0))
        missing = [t for t in (c.get("test_tasks") or []) if t not in (cfg.get("tasks") or {})]
        if missing:
            p.append(f"neurons.controlled.test_tasks {missing} are not among the selected tasks; add them with task=[...]")
    return p


def train_job(cfg: DictConfig, out: Path, meta: dict, state: JobState) -> dict[str, Any]:
    problems = validate_train(cfg)
    train_names = training_tasks(cfg)
    session = open_session(cfg, out, meta, splits=("train", "test"), need_train=train_names, problems=problems)
    try:
        model = session.model
        total = sum(p.numel() for p in model.parameters())
        callbacks, set_info = [], {}
        if cfg.intervention.name == "finetune_neurons":
            pools = neuron_pools(model, cfg.neurons.definition)
            reference = None
            if cfg.neurons.set == "controlled":
                nset, info = controlled_set(session, pools, cfg.neurons)
                set_info["controlled"] = {**info, "test_tasks": list(cfg.neurons.controlled.test_tasks)}
            else:
                if cfg.neurons.set != "all_ffn":
                    model.to(compute_device(cfg.trainer.get("accelerator", "auto")))  # attribution on the GPU if any
                    task_sets, set_info = sets_for_tasks(session, train_names, pools)
                    reference = union_all([task_sets[t] for t in train_names])
                # Train-Random: one draw per (training tasks, seed); SEEDS=n sweeps give n different draws
                nset = control_set(cfg.neurons.set, reference, pools, session.model_name, cfg.neurons,
                                   source="+".join(train_names))
            callbacks.append(NeuronFinetuning(pools, nset))
            set_info["trained_set"] = {"kind": cfg.neurons.set, "count": nset.count(), "fingerprint": nset.fingerprint()}
        else:
            for p in model.parameters():
                p.requires_grad_(True)
        before = (resumable_test(state, "before", session, list(cfg.tasks), log_prefix="before")[0]
                  if cfg.get("eval_before") and is_global_zero() else None)
        dm = TaskDataModule(session.tok, {t: session.data[t] for t in train_names}, cfg.data, seed=int(cfg.seed))
        module = CausalLMModule(model, session.tok, cfg.eval, cfg.optim)
        losses = LossRecorder()
        accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
        max_steps = int(cfg.optim.max_steps)
        n_batches = max_steps * accumulate if max_steps > 0 else int(cfg.trainer.max_epochs) * dm.batches_per_epoch()
        per_task = cfg.intervention.name == "finetune_neurons" and cfg.intervention.get("combine") == "per_task"
        if per_task and max_steps <= 0:
            n_batches = int(cfg.trainer.max_epochs) * per_task_loader(dm, train_names, int(cfg.data.batch_size),
                                                                      int(cfg.seed))[1].per_epoch
        fit = ResumableFit(state, n_batches, accumulate)
        start = fit.start
        if per_task:  # task-homogeneous batches, each updating only its task's rows of the union
            loader, sampler = per_task_loader(dm, train_names, int(cfg.data.batch_size), int(cfg.seed), start, n_batches)
            callbacks.append(PerTaskMasks([task_sets[t] for t in train_names], sampler))
            set_info["combine"] = "per_task"
        t0 = time.perf_counter()
        trainer = fit.run(cfg, module, callbacks, losses, session.logger,
                          lambda: loader if per_task else dm.train_dataloader(start, n_batches, ranks_of(cfg)),
                          what=f"task(s) {', '.join(train_names)}")
        distributed = distributed_info(trainer) if trainer is not None else None
        if trainer is not None and not is_global_zero():
            return {"rank": global_rank()}  # rank 0 evaluates and writes every file
        model.eval()
        train_seconds = time.perf_counter() - t0
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        results, samples = resumable_test(state, "after", session, list(cfg.tasks))
        for t, r in results.items():
            r["in_domain"] = t in train_names
        metrics = {
            "job": "train", "model": cfg.model.name, "benchmark": cfg.benchmark.name, "seed": int(cfg.seed),
            "intervention": cfg.intervention.name, "neurons": cfg.neurons.set if cfg.intervention.name == "finetune_neurons" else "all_params",
            "proportion": float(cfg.neurons.proportion), "train_tasks": train_names,
            "training": {"steps": n_batches // accumulate, "batches": n_batches, "resumed_from_batch": start,
                         "seconds": round(train_seconds, 2), "model_fingerprint": model_fingerprint(model),
                         "trainable_params": trainable, "total_params": total,
                         "trainable_fraction": round(trainable / total, 6),
                         "loss_first": losses.first(), "loss_last": losses.last(), "distributed": distributed,
                         "tail_decline": tail_decline(losses.losses), "losses": losses.curve()},
            "neuron_sets": set_info, "tasks": results, "before": before,
            "summary": {**summarize(results), **domain_summary(results)},
        }
        # finished, but did it learn? (lit/divergence.py): kept beside the result and printed after the table
        run_warnings = (loss_warnings(losses.losses, getattr(model.config, "vocab_size", None))
                    + constant_prediction_warnings(results, train_names))
        metrics["warnings"] = run_warnings
        atomic_write_json(out / "samples.json", samples)
        if cfg.save_model:
            model.save_pretrained(out / "model")
            session.tok.save_pretrained(out / "model")
            metrics["model_dir"] = str(out / "model")
        log_results_table(session.logger, results)
    finally:
        finish(session.logger)
    print_results(results, title=f"{cfg.model.name} after {metrics['intervention']} ({metrics['neurons']}) on {train_names}",
                  run_dir=out, flagged=train_names if run_warnings else ())
    print_warnings(run_warnings)
    return metrics


def domain_summary(results: dict[str, dict]) -> dict[str, float]:
    out = {}
    for flag, name in ((True, "in_domain"), (False, "out_of_domain")):
        for kind, short in (("classification", "cls"), ("generation", "gen")):
            s = [r["score"] for r in results.values() if r["in_domain"] == flag and r["kind"] == kind]
            if s:
                out[f"{name}_{short}"] = round(mean(s), 2)
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run_entry(cfg, train_job)


if __name__ == "__main__":
    main()
