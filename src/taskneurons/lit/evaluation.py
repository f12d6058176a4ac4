"""One Lightning test loop over some tasks: the evaluation every entry point shares."""

from __future__ import annotations

from typing import Any

from taskneurons.data.datamodule import TaskDataModule
from taskneurons.lit.module import CausalLMModule
from taskneurons.runtime.trainer import build_trainer


def run_test(session: Any, task_names: list[str], callbacks: list | None = None, log_prefix: str = "test",
             logger: Any = "session") -> tuple[dict[str, dict], dict[str, list]]:
    """Evaluate ``task_names`` (their test splits); returns (results per task, sample generations)."""
    cfg = session.cfg
    data = {n: session.data[n] for n in task_names}
    dm = TaskDataModule(session.tok, data, cfg.data, seed=int(cfg.seed))
    module = CausalLMModule(session.model, session.tok, cfg.eval, log_prefix=log_prefix)
    module.set_eval_tasks([session.spec(n) for n in task_names])
    trainer = build_trainer(cfg, session.logger if logger == "session" else logger, callbacks=callbacks or [])
    trainer.test(module, dataloaders=dm.test_dataloader(), verbose=False)
    return module.results, module.samples()


def resumable_test(state: Any, step: str, session: Any, task_names: list[str], title: str | None = None,
                   **kwargs: Any) -> tuple[dict, dict]:
    """``run_test``, kept in the job state: a rerun after a kill skips the evaluations already done.

    When the session carries a ``JobProgress`` (``session.extra["progress"]``), the step is announced
    with ``title`` (default: which tasks are evaluated)."""
    done = state.get(step)
    progress = session.extra.get("progress") if hasattr(session, "extra") else None
    if progress is not None:
        what = f"evaluate {len(task_names)} task{'s' if len(task_names) != 1 else ''}"
        progress.step(f"{title}, {what}" if title else what, reused=done is not None)
    if done is not None:
        return done["results"], done["samples"]
    results, samples = run_test(session, task_names, **kwargs)
    state.put(step, {"results": results, "samples": samples})
    return results, samples
