"""``python -m taskneurons.bench [--only NAME ...] [--models ...]``: run the benchmarks, write JSON, print verdicts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from taskneurons import PROJECT_ROOT
from taskneurons.bench import memory, speed
from taskneurons.bench.fixtures import load_models
from taskneurons.runtime.atomic import atomic_write_json

OUT = PROJECT_ROOT / "outputs" / "bench"
IN_PROCESS: dict[str, Callable[[dict], dict]] = {
    "loglik": speed.bench_loglik,
    "identify": speed.bench_identify,
    "deactivated_eval": speed.bench_deactivated_eval,
    "neuron_ft": speed.bench_neuron_ft_speed,
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
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", default=ALL, choices=ALL)
    ap.add_argument("--models", nargs="*", default=["smollm2_135m", "mid_llama"])
    ap.add_argument("--jobs", type=int, default=1, help="memory benchmarks: fresh processes run side by side")
    ap.add_argument("--ft-worker", choices=["full", "neurons"], help=argparse.SUPPRESS)
    ap.add_argument("--task-worker", nargs="+", metavar=("JOB", "TASK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.ft_worker:
        print(json.dumps(memory.ft_worker(args.models[0], args.ft_worker)))
        return
    if args.task_worker:
        print(json.dumps(memory.task_worker(args.task_worker[0], args.task_worker[1:])))
        return
    models = load_models(args.models) if any(n in IN_PROCESS for n in args.only) else {}
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
