"""lm-evaluation-harness on a model with a neuron set switched off (optional extra: ``pip install taskneurons[lm-eval]``).

API: :func:`harness_evaluate` wraps the model object in lm-eval's ``HFLM(pretrained=model, tokenizer=...)``
and runs ``lm_eval.simple_evaluate`` on it, inside :func:`taskneurons.deactivated` when a set is given.

Entry point::

    python -m taskneurons.harness --model tiny_llama --tasks mytask --include-path my_tasks/ \\
        [--neurons store/…/per_module-p0.1.json] [--path weights|hooks] [--limit 50] [--out DIR]

evaluates the original model and, with ``--neurons``, the model with the set switched off; writes
``DIR/metrics.json`` (``{"original": {task: {metric: value}}, "deactivated": {...}, ...}``).
``--include-path`` holds lm-eval task YAMLs (e.g. a ``multiple_choice`` task over a local JSONL file).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from taskneurons.errors import ConfigError

INSTALL = "pip install 'taskneurons[lm-eval]' (or pip install lm-eval)"


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError(f"lm-evaluation-harness is not installed: {INSTALL}") from None
    return lm_eval, HFLM, TaskManager


@functools.cache
def _task_manager(include_path: str | None) -> Any:
    # indexing lm-eval's thousands of task YAMLs takes seconds: once per folder and process
    return _lm_eval()[2](include_path=include_path)


def harness_evaluate(model: Any, tokenizer: Any, tasks: list[str], nset: Any = None, path: str = "weights",
                     include_path: str | Path | None = None, limit: int | float | None = None,
                     batch_size: int = 8, num_fewshot: int | None = None, seed: int = 1234,
                     log_samples: bool = False) -> dict[str, Any]:
    """lm-eval's ``results`` per task (``{task: {"acc,none": …, …}}``), with ``nset`` switched off if given.

    ``tasks``: lm-eval task names (its own, or those of the YAMLs under ``include_path``). ``log_samples``
    adds lm-eval's per-example records (``samples``: prompts, responses, log-likelihoods).
    """
    from taskneurons.api import _check_model, deactivated

    _check_model(model)
    if isinstance(tasks, str) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"tasks: expected a non-empty list of lm-eval task names, got {tasks!r}")
    if include_path is not None and not Path(include_path).is_dir():
        raise ConfigError(f"include_path={include_path}: not a folder (it holds lm-eval task YAMLs)")
    lm_eval, HFLM, _ = _lm_eval()
    manager = _task_manager(str(Path(include_path).resolve()) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"tasks: lm-eval knows no task {', '.join(unknown)}; check the names "
                          f"(lm-eval --tasks list) or the YAMLs under include_path={include_path}")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(batch_size))
    ctx = deactivated(model, nset, path=path) if nset is not None else nullcontext()
    with ctx:
        out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                      num_fewshot=num_fewshot, log_samples=log_samples, random_seed=seed,
                                      numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                                      bootstrap_iters=0)
    result = {"results": out["results"], "n-samples": out.get("n-samples"), "versions": out.get("versions")}
    if log_samples:
        result["samples"] = out.get("samples")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m taskneurons.harness", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a packaged model config (tiny_llama, smollm2_135m, …), folder or hub id")
    ap.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    ap.add_argument("--include-path", help="a folder of lm-eval task YAMLs (local tasks)")
    ap.add_argument("--neurons", help="a saved NeuronSet (…/<stem>.json) to switch off")
    ap.add_argument("--path", choices=["weights", "hooks"], default="weights", help="how the set is switched off")
    ap.add_argument("--limit", type=float, help="at most this many examples per task (or a fraction < 1)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-fewshot", type=int)
    ap.add_argument("--dtype", help="auto | float32 | bfloat16 | float16 (default: the model config's)")
    ap.add_argument("--out", default="outputs/harness", help="folder for metrics.json")
    args = ap.parse_args(argv)
    from taskneurons.api import load_model, pools_for
    from taskneurons.neurons.neuronset import NeuronSet
    from taskneurons.runtime.atomic import atomic_write_json

    try:
        _lm_eval()
        nset = NeuronSet.load(args.neurons) if args.neurons else None
        model, tok = load_model(args.model, dtype=args.dtype)
        if nset is not None:
            pools_for(model, nset, "--neurons")  # the set belongs to this model: checked before any evaluation
        tasks = [t for t in args.tasks.split(",") if t]
        limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
        kw = {"include_path": args.include_path, "limit": limit, "batch_size": args.batch_size,
              "num_fewshot": args.num_fewshot}
        metrics: dict[str, Any] = {"model": args.model, "tasks": tasks}
        metrics["original"] = harness_evaluate(model, tok, tasks, **kw)["results"]
        if nset is not None:
            metrics["deactivated"] = harness_evaluate(model, tok, tasks, nset=nset, path=args.path, **kw)["results"]
            metrics["neurons"] = {"path": args.neurons, "count": nset.count(), "fingerprint": nset.fingerprint(),
                                  "task": nset.meta.get("task"), "definition": nset.meta.get("definition")}
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    print(json.dumps({k: metrics[k] for k in ("original", "deactivated") if k in metrics}, indent=1, default=str))
    print(f"metrics: {out / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
