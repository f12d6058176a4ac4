"""``python -m taskneurons.continual model=<m> benchmark=<b> continual/order=order1 continual/method=ncft``

Trains the tasks of an order one stage at a time with one method (seqft, seqlora, olora, ncft, wncft,
pertask, mtl), evaluates every task of the benchmark after every stage into the accuracy matrix, and
writes metrics.json (after every stage; complete once config.yaml is beside it). A custom order:
``"continual.order=[cl_sst2,cl_rte,cl_qqp]"`` (tasks of the chosen benchmark).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from taskneurons.continual.loop import Context, ContinualRun, OffsetLogger
from taskneurons.continual.methods import build_method
from taskneurons.continual.orders import order_name, run_dir_problems, validate_continual
from taskneurons.report.tables import print_results
from taskneurons.runtime.app import run_entry
from taskneurons.runtime.distributed import (
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


def continual_job(cfg: DictConfig, out: Path, meta: dict, state: JobState) -> dict[str, Any]:
    # trainer=ddp: the job starts its ranks once; every stage fits on them (fsdp/deepspeed: one line)
    problems = (validate_continual(cfg) + run_dir_problems(out, meta.get("config_key"))
                + strategy_problems(cfg, "continual"))
    order = [str(t) for t in cfg.continual.order]
    if not problems and "name" in cfg.logger:  # the W&B run is named by what it runs, custom orders included
        cfg.logger.name = f"continual-{cfg.continual.method.name}-{order_name(cfg)}-{cfg.model.name}"
    session = open_session(cfg, out, meta, splits=("train", "test"), need_train=order if not problems else (),
                           problems=problems)
    try:
        eval_tasks = order + [t for t in cfg.tasks if t not in order]  # the order's tasks first
        ctx = Context(session, state, order, eval_tasks, OffsetLogger(session.logger))
        header = {"job": "continual", "method": str(cfg.continual.method.name), "order_name": order_name(cfg),
                  "order": order, "benchmark": str(cfg.benchmark.name), "model": str(cfg.model.name),
                  "seed": int(cfg.seed), "config_key": meta.get("config_key"), "state_dir": str(state.dir)}
        if header["method"] == "wncft":
            header["wncft"] = {k: str(v) for k, v in cfg.continual.wncft.items()}
        run = ContinualRun(ctx, build_method(cfg), out, meta, header)
        if is_distributed(cfg):
            # every rank runs the whole stage loop: training is DDP, attribution and evaluation are split
            # over the ranks and gathered; rank 0 writes every file
            metrics = run_on_ranks(build_trainer(cfg, None, distributed=True), lambda strategy: run.run())
            if not is_global_zero():
                return {"rank": global_rank()}
        else:
            metrics = run.run()
    finally:
        finish(session.logger)
    last = {t: {**r, "in_domain": t in order} for t, r in metrics["results"][-1].items()}
    print_results(last, title=f"{header['method']} on {header['order_name']} after the last stage "
                              f"(CL {metrics['summary'].get('cl')}, BWT {metrics['summary'].get('bwt')})", run_dir=out)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="continual")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    return run_entry(cfg, continual_job)


if __name__ == "__main__":
    main()
