"""``python -m taskneurons.bench [--only NAME ...] [--models ...]``: run the benchmarks, write JSON, print verdicts."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from taskneurons.bench import memory, precision, speed
from taskneurons.bench.fixtures import load_models
from taskneurons.runtime.atomic import atomic_write_json

# beside the runs ($TASKNEURONS_OUTPUT or ./outputs), so an installed package writes where it is run
OUT = Path(os.environ.get("TASKNEURONS_OUTPUT") or "outputs") / "bench"
IN_PROCESS: dict[str, Callable[[dict], dict]] = {
    "loglik": speed.bench_loglik,
    "identify": speed.bench_identify,
    "deactivated_eval": speed.bench_deactivated_eval,
    "neuron_ft": speed.bench_neuron_ft_speed,
    "precision": precision.bench_precision,
}
SUBPROCESS = ("identify_memory", "neuron_ft_memory", "continual")
ALL = [*IN_PROCESS, *SUBPROCESS]


def _continual(_models: Any) -> dict[str, Any]:
    from taskneurons.bench.continual import run_benchmarks

    return run_benchmarks()


def _print(name: str, results: dict[str, Any]) -> None:
    def walk(prefix: str, row: Any) -> None:
        if not isinstance(row, dict):
            return
        if "verdict" in row:
            spread = (f"min {row['ratio_min']:.3f} median {row['ratio_median']:.3f} max {row['ratio_max']:.3f} "
                      f"({row['pairs']} pairs)") if "ratio_median" in row else f"{row.get('ratio')}"
            print(f"{name:18s} {prefix:42s} ratio {spread}  target {row.get('target')}  {row['verdict']}")
        for k, v in row.items():
            if isinstance(v, dict) and k != "runs":
                walk(f"{prefix}/{k}" if prefix else k, v)

    walk("", results)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m taskneurons.bench", description=__doc__)
    ap.add_argument("--only", nargs="*", default=ALL, choices=ALL)
    ap.add_argument("--models", nargs="*", default=["smollm2_135m", "smollm2_135m_fp32", "mid_llama"],
                    help="smollm2_135m (model.dtype=auto), smollm2_135m_fp32, mid_llama (random init, fp32)")
    ap.add_argument("--jobs", type=int, default=1, help="memory benchmarks: fresh processes run side by side")
    ap.add_argument("--ft-worker", choices=["full", "neurons"], help=argparse.SUPPRESS)
    ap.add_argument("--task-worker", nargs="+", metavar=("JOB", "TASK"), help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)  # the task worker's model.dtype
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.ft_worker:
        print(json.dumps(memory.ft_worker(args.models[0], args.ft_worker)))
        return
    if args.task_worker:
        print(json.dumps(memory.task_worker(args.task_worker[0], args.task_worker[1:], dtype=args.dtype)))
        return
    wanted = [*args.models, "smollm2_135m_fp32"] if "precision" in args.only else args.models
    models = load_models(list(dict.fromkeys(wanted))) if any(n in IN_PROCESS for n in args.only) else {}
    for name in args.only:
        if name == "identify_memory":
            results = memory.bench_identify_memory(args.jobs)
        elif name == "neuron_ft_memory":
            results = memory.bench_neuron_ft_memory(args.models)
        elif name == "continual":
            try:
                results = _continual(models)
            except ImportError as e:
                print(f"{name:18s} skipped: {e}")
                continue
        else:
            results = IN_PROCESS[name](models)
        path = Path(OUT) / f"{name}.json"
        atomic_write_json(path, {"benchmark": name, "threads": torch.get_num_threads(), "results": results})
        _print(name, results)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
