"""The stage loop: a fresh Lightning Trainer per stage, one shared logger with a monotone step, every
task evaluated after every stage into ``a[stage][task]``, a checkpoint per finished stage.

Resume: a finished stage is kept in the job state as ``stage<i>`` (its payload, matrix row and step
count); a stage killed mid-training continues from ``stage<i>_train_checkpoint`` (trainable state,
optimizer, RNG, batches done). Every stage reseeds with ``seed + i``, so a resumed run ends with the
same matrix as an uninterrupted one.
"""

from __future__ import annotations

import gc
import io
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import mean
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, WandbLogger

from taskneurons.continual.methods import Method, Stage
from taskneurons.continual.metrics import summarize
from taskneurons.data.datamodule import TaskDataModule
from taskneurons.data.loading import TaskData
from taskneurons.lit.divergence import constant_prediction_warnings, loss_warnings, print_warnings
from taskneurons.lit.evaluation import run_test
from taskneurons.lit.fit import ResumableFit
from taskneurons.lit.losses import LossRecorder, tail_decline
from taskneurons.lit.module import CausalLMModule, flat_results
from taskneurons.models.fingerprint import model_fingerprint
from taskneurons.runtime.atomic import write_json_with_checksum
from taskneurons.runtime.distributed import (
    compute_device,
    gather_dict,
    is_global_zero,
    ranks_of,
    shard,
    world_size,
)
from taskneurons.runtime.progress import JobProgress

log = logging.getLogger(__name__)


class OffsetLogger(Logger):
    """The run's one logger, seen by each stage's fresh Trainer with the steps of earlier stages added,
    so the logged step never goes back."""

    def __init__(self, inner: Logger):
        super().__init__()
        self.inner, self.offset = inner, 0

    @property
    def name(self):
        return self.inner.name

    @property
    def version(self):
        return self.inner.version

    @property
    def save_dir(self):
        return self.inner.save_dir

    @property
    def experiment(self):
        return self.inner.experiment

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.inner is not None:
            self.inner.log_metrics(metrics, self.offset + (step or 0))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run's config was logged once when the logger started

    def save(self) -> None:
        if self.inner is not None:
            self.inner.save()

    def finalize(self, status: str) -> None:
        self.save()  # the run goes on after a stage; finish() closes it at the end


class StageState:
    """The job state seen by one stage: its names are prefixed with ``stage<i>_``."""

    def __init__(self, state: Any, prefix: str):
        self.state, self.prefix = state, prefix

    def put_tensors(self, name: str, obj: Any) -> None:
        self.state.put_tensors(f"{self.prefix}_{name}", obj)

    def get_tensors(self, name: str) -> Any:
        return self.state.get_tensors(f"{self.prefix}_{name}")

    def drop(self, name: str) -> None:
        for suffix in (".pt", ".pt.json"):
            (self.state.dir / f"{self.prefix}_{name}{suffix}").unlink(missing_ok=True)


class ContinualModule(CausalLMModule):
    """The SFT module with an optional extra loss term (O-LoRA) and a per-method learning rate."""

    def __init__(self, *args: Any, regularizer=None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.regularizer = regularizer

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.sft_loss(batch)  # under DDP: the global batch's loss (same update as one process)
        n = batch["input_ids"].shape[0]
        if self.regularizer is not None:
            reg = self.regularizer()
            self.log("train/regularizer", reg.detach(), batch_size=n)
            loss = loss + reg
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss


@dataclass
class Context:
    """What a method sees: the session (model, tokenizer, data), the order and the evaluation."""

    session: Any
    state: Any
    order: list[str]
    eval_tasks: list[str]
    logger: Any
    extra: dict = field(default_factory=dict)

    @property
    def cfg(self) -> Any:
        return self.session.cfg

    @property
    def model(self) -> Any:
        return self.session.model

    @property
    def tok(self) -> Any:
        return self.session.tok

    @property
    def model_name(self) -> str:
        return self.session.model_name

    @property
    def trainer_logger(self) -> Any:
        return self.logger if self.logger.inner is not None else None

    @property
    def state_dir(self) -> Path:
        return Path(self.state.dir)

    def test(self, tasks: list[str], subset: dict[str, list[int]] | None = None,
             log_prefix: str | None = "eval", local: bool = False) -> tuple[dict[str, dict], dict]:
        """Evaluate ``tasks`` on their test splits (only the given example positions with ``subset``);
        the per-task metrics are logged under ``log_prefix`` (None: not logged).

        Under ``trainer=ddp`` the tasks are split over the ranks and every rank gets every result;
        ``local=True`` evaluates here only (a caller whose own loop is split with ``shard``)."""
        if local or world_size() == 1:
            return self._test(tasks, subset, log_prefix)
        results, samples = self._test(shard(tasks), subset, None)
        merged = gather_dict({t: (results[t], samples.get(t, [])) for t in results})
        results = {t: merged[t][0] for t in tasks}
        if log_prefix:
            self.log_results(results, log_prefix)
        return results, {t: merged[t][1] for t in tasks}

    def log_results(self, results: dict[str, dict], log_prefix: str) -> None:
        """Per-task metrics gathered from the ranks, logged once (rank 0) at this stage's step."""
        if self.trainer_logger is not None and is_global_zero():
            self.logger.log_metrics(flat_results(results, log_prefix), 0)

    def _test(self, tasks: list[str], subset: dict[str, list[int]] | None,
              log_prefix: str | None) -> tuple[dict[str, dict], dict]:
        data = {}
        for t in tasks:
            td = self.session.data[t]
            test = td.test if not subset or t not in subset else [td.test[i] for i in subset[t]]
            data[t] = TaskData(td.spec, [], test)  # no training split: nothing to encode but the test set
        view = replace(self.session, data=data)
        self.model.eval()
        logger = self.trainer_logger if log_prefix else None
        return run_test(view, tasks, log_prefix=log_prefix or "eval", logger=logger)


def stage_steps(cfg: Any, method: Method, stage: Stage, dm: TaskDataModule) -> tuple[int, int]:
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    max_steps = int(cfg.optim.max_steps)
    if max_steps > 0:
        n_batches = max_steps * method.steps_factor(stage) * accumulate
    else:
        n_batches = int(cfg.trainer.max_epochs) * dm.batches_per_epoch()
    return n_batches, accumulate


def train_stage(ctx: Context, method: Method, stage: Stage) -> dict[str, Any]:
    cfg = ctx.cfg
    seed = int(cfg.seed) + stage.index
    dm = TaskDataModule(ctx.tok, {t: ctx.session.data[t] for t in stage.train_tasks}, cfg.data, seed=seed)
    optim = cfg.optim if method.mcfg.get("lr") is None else {**cfg.optim, "lr": float(method.mcfg.lr)}
    module = ContinualModule(ctx.model, ctx.tok, cfg.eval, _AttrDict(optim), regularizer=method.regularizer(ctx, stage))
    callbacks = method.callbacks(ctx, stage)
    n_batches, accumulate = stage_steps(cfg, method, stage, dm)
    fit = ResumableFit(StageState(ctx.state, f"stage{stage.index}"), n_batches, accumulate)
    start = fit.start
    losses = LossRecorder()
    t0 = time.perf_counter()
    # killed after training, before the stage was recorded: the fit restores the trained state
    fit.run(cfg, module, callbacks, losses, ctx.trainer_logger, lambda: dm.train_dataloader(start, n_batches, ranks_of(cfg)),
            what=f"stage {stage.index + 1} ({stage.name}: {', '.join(stage.train_tasks)})")
    ctx.model.eval()
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if hasattr(module, "neuron_deltas"):
        del module.neuron_deltas  # merged; the next stage builds its own
    for p in ctx.model.parameters():
        p.grad = None  # the last step's gradients: a whole model's size for full fine-tuning
    # The Trainer, its optimizer state and the module form reference cycles: free them before the next
    # stage allocates its own (else two stages' optimizer states coexist for a while)
    module = None  # (the Trainer returned by the fit is not kept: only the module refers to it)
    gc.collect()
    return {"steps": n_batches // accumulate, "batches": n_batches, "resumed_from_batch": start,
            "seconds": round(time.perf_counter() - t0, 2), "trainable_params": trainable,
            "loss_first": losses.first(), "loss_last": losses.last(),
            "tail_decline": tail_decline(losses.losses), "losses": losses.curve(),
            "warnings": loss_warnings(losses.losses, getattr(ctx.model.config, "vocab_size", None),
                                      where=f"stage {stage.index + 1} ({stage.name})")}


class _AttrDict(dict):
    __getattr__ = dict.get


class ContinualRun:
    """Runs (or resumes) every stage of ``method`` over ``order`` and returns the metrics."""

    def __init__(self, ctx: Context, method: Method, out: Path, meta: dict, header: dict):
        self.ctx, self.method, self.out, self.meta, self.header = ctx, method, out, meta, header
        self.stages = method.stages(ctx.order)
        self.rows: list[dict[str, dict]] = []
        self.infos: list[dict] = []
        self.zero_shot: dict[str, float] | None = None

    def run(self) -> dict[str, Any]:
        ctx, method = self.ctx, self.method
        device = compute_device(ctx.cfg.trainer.get("accelerator", "auto"))
        ctx.model.to(device)  # task vectors and attribution run outside Lightning, where the model is
        if ctx.cfg.continual.get("zero_shot", False):
            self.zero_shot = self.score_zero_shot()
        method.setup(ctx)
        progress = JobProgress(len(self.stages), stream=None if is_global_zero() else io.StringIO())
        for stage in self.stages:
            done = ctx.state.get_tensors(f"stage{stage.index}")
            progress.step(f"{method.name}: train on {stage.name}, evaluate {len(ctx.eval_tasks)} tasks",
                          reused=done is not None)
            if done is not None:
                method.restore(ctx, stage, done["payload"], done["row"])
                info = {**done["info"], "replayed_from_checkpoint": True}
                ctx.logger.offset += int(info["steps"])
            else:
                pl.seed_everything(int(ctx.cfg.seed) + stage.index, workers=True, verbose=False)
                ctx.model.to(device)  # Lightning left it on the CPU after the last fit / test
                method.prepare(ctx, stage)
                info = train_stage(ctx, method, stage)
                ctx.logger.offset += int(info["steps"])  # this stage's evaluation is logged after its training
                payload = method.finish(ctx, stage)
                t0 = time.perf_counter()
                info["model_fingerprint"] = model_fingerprint(ctx.model)
                row, extra = method.evaluate(ctx, stage)
                info.update(extra, eval_seconds=round(time.perf_counter() - t0, 2),
                            checkpoint_bytes=_payload_bytes(payload))
                info["warnings"] = info["warnings"] + [
                    {**w, "message": f"stage {stage.index + 1}: {w['message']}"}
                    for w in constant_prediction_warnings(row, list(stage.train_tasks))]
                if is_global_zero():
                    print_warnings(info["warnings"])
                done = {"payload": payload, "row": row, "info": info}
                ctx.state.put_tensors(f"stage{stage.index}", done)  # rank 0 only (JobState)
                if is_global_zero():
                    StageState(ctx.state, f"stage{stage.index}").drop("train_checkpoint")
                row = done["row"]
            self.rows.append(done["row"])
            payload = done = None  # written to the state; a full model's copy must not live through the next stage
            self.infos.append(info)
            if is_global_zero():  # the other ranks of trainer=ddp compute the same rows and write nothing
                self.log_stage(stage)
                write_json_with_checksum(self.out / "metrics.json", self.metrics(complete=False))
        progress.finish()
        return self.metrics(complete=True)

    def score_zero_shot(self) -> dict[str, float]:
        """Every evaluated task scored by the base model, once per run (kept in the state, so a resumed run
        does not score it again): the row a premise compares Per-Task FT with (report/measures.py)."""
        kept = self.ctx.state.get("zero_shot")
        if kept is not None:
            return kept
        results, _ = self.ctx.test(list(self.ctx.eval_tasks), log_prefix="zero_shot")
        scores = {t: float(r["score"]) for t, r in results.items()}
        self.ctx.state.put("zero_shot", scores)
        return scores

    def matrix(self) -> list[list[float]]:
        return [[float(r[t]["score"]) for t in self.ctx.eval_tasks] for r in self.rows]

    def metrics(self, complete: bool) -> dict[str, Any]:
        order, tasks = self.ctx.order, self.ctx.eval_tasks
        mat = self.matrix()
        sq = [row[: len(order)] for row in mat]  # the order's tasks come first
        if len(self.stages) == 1 and len(order) > 1:  # mtl: one joint stage
            summary = {"cl": round(mean(sq[0]), 3), "bwt": None, "avg_forgetting": None}
        elif len(sq) == len(order):
            summary = summarize(sq)
        else:
            summary = {"seen_average": summarize([r[: len(sq)] for r in sq[: len(sq)]])["seen_average"]} if sq else {}
        if len(sq) == len(order):
            summary.update(self.method.extra_summary(sq))
        compare = {}
        if self.infos and "compare" in self.infos[0] and len(sq) == len(order):
            # W-NCFT with continual.wncft.compare: the same trained stages read with other variants/identity
            for key in self.infos[0]["compare"]:
                cm = [[float(i["compare"][key]["scores"][t]) for t in tasks] for i in self.infos]
                compare[key] = {"matrix": cm, "summary": summarize([r[: len(order)] for r in cm]),
                                "identity_accuracy": [i["compare"][key].get("identity_accuracy") for i in self.infos]}
        return {
            **self.header, **({"compare": compare} if compare else {}),
            **({"zero_shot": self.zero_shot} if self.zero_shot is not None else {}),
            "stages": [s.name for s in self.stages][: len(mat)], "stage_names": [s.name for s in self.stages],
            "tasks_evaluated": tasks, "matrix": mat,
            "results": [{t: {k: v for k, v in r[t].items() if k != "per_example"} for t in tasks} for r in self.rows],
            "stage_info": self.infos, "summary": summary, "stages_done": len(mat),
            "warnings": [w for i in self.infos for w in i.get("warnings", [])],
            "complete": complete and len(mat) == len(self.stages),
        }

    def log_stage(self, stage: Stage) -> None:
        lg = self.ctx.logger
        row = self.rows[-1]
        seen = list(dict.fromkeys(t for s in self.stages[: stage.index + 1] for t in s.train_tasks))  # trained so far
        scalars = {f"cl/acc/{t}": float(row[t]["score"]) for t in self.ctx.eval_tasks}
        scalars["cl/stage"] = float(stage.index + 1)
        scalars["cl/seen_average"] = mean(float(row[t]["score"]) for t in seen)
        for k in ("seconds", "eval_seconds", "identity_accuracy"):
            if k in self.infos[-1]:
                scalars[f"cl/{k}"] = float(self.infos[-1][k])
        lg.log_metrics(scalars, 0)
        lg.save()  # flushed per stage: a killed run keeps what its finished stages logged
        # imported here: matplotlib loads only once a stage is done
        from taskneurons.continual.heatmap import save_matrix_heatmap

        png = save_matrix_heatmap(self.matrix(), [s.name for s in self.stages][: len(self.rows)], self.ctx.eval_tasks,
                                  self.out / "accuracy_matrix.png",
                                  title=f"{self.header['method']} on {self.header['order_name']} ({self.header['model']})")
        if isinstance(lg.inner, WandbLogger):
            lg.inner.log_image(key="cl/accuracy_matrix", images=[str(png)], step=lg.offset)


def _payload_bytes(payload: Any) -> int:
    if isinstance(payload, torch.Tensor):
        return payload.numel() * payload.element_size()
    if isinstance(payload, dict):
        return sum(_payload_bytes(v) for v in payload.values())
    if isinstance(payload, list | tuple):
        return sum(_payload_bytes(v) for v in payload)
    return 0
