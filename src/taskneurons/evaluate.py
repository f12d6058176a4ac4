"""Evaluate a model on a benchmark's tasks: ``python -m taskneurons.evaluate model=... benchmark=...``.

With ``intervention=deactivate neurons=task|random`` the tasks are also evaluated with a neuron set
switched off: each task with its own set (``intervention.source=same``), every task with every task's
set (``matrix``, the paper's Fig. 5), or every task with one task's set (``source=<task>``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from taskneurons.lit.evaluation import resumable_test
from taskneurons.neurons.identify import SET_KINDS, control_set, sets_for_tasks, validate_neurons_config
from taskneurons.neurons.masking import DeactivateNeurons
from taskneurons.neurons.pools import neuron_pools
from taskneurons.report.heatmap import save_change_heatmaps
from taskneurons.report.stats import mean_records
from taskneurons.report.tables import print_change_table, print_results, summarize
from taskneurons.runtime.app import run_entry
from taskneurons.runtime.atomic import atomic_write_json
from taskneurons.runtime.distributed import strategy_problems
from taskneurons.runtime.loggers import finish, log_image, log_results_table
from taskneurons.runtime.progress import JobProgress
from taskneurons.runtime.resume import JobState
from taskneurons.runtime.session import open_session

log = logging.getLogger("taskneurons.evaluate")
INTERVENTIONS = ("none", "deactivate")


def validate_intervention(cfg: DictConfig) -> list[str]:
    iv = cfg.intervention
    if iv.name not in INTERVENTIONS:
        return [f"intervention={iv.name} does not apply to evaluate; use one of {', '.join(INTERVENTIONS)} (training: taskneurons.train)"]
    if iv.name == "none":
        return []
    p = validate_neurons_config(cfg.neurons, cfg.model.name, list(cfg.get("tasks") or {}))
    tasks = list(cfg.get("tasks") or {})
    if iv.source not in ("same", "matrix", *tasks):
        p.append(f"intervention.source='{iv.source}' must be same, matrix or one of the selected tasks {tasks}")
    bad = [k for k in iv.sets if k not in SET_KINDS]
    if bad or not iv.sets:
        p.append(f"intervention.sets={list(iv.sets)} must be a non-empty subset of {list(SET_KINDS)}")
    if iv.path not in ("weights", "hooks"):
        p.append(f"intervention.path='{iv.path}' must be weights or hooks")
    if iv.replacement not in ("zero", "mean") or (iv.replacement == "mean" and iv.path == "weights"):
        p.append(f"intervention.replacement='{iv.replacement}' must be zero, or mean with intervention.path=hooks")
    return p


def evaluate_job(cfg: DictConfig, out: Path, meta: dict, state: JobState) -> dict[str, Any]:
    iv = cfg.intervention
    deactivate = iv.name == "deactivate"
    problems = validate_intervention(cfg) + strategy_problems(cfg, "evaluate")
    needs_train = deactivate and cfg.neurons.split == "train" and not cfg.neurons.get("path")
    strict_train = needs_train and not cfg.neurons.get("fallback_to_test")
    sources = list(cfg.tasks) if (not deactivate or iv.source in ("same", "matrix")) else [iv.source]
    session = open_session(cfg, out, meta, splits=("train", "test") if needs_train else ("test",),
                           need_train=sources if strict_train else (), problems=problems)
    try:
        metrics: dict[str, Any] = {"job": "evaluate", "model": cfg.model.name, "benchmark": cfg.benchmark.name,
                                   "seed": int(cfg.seed), "intervention": iv.name,
                                   "data_fingerprint": {n: td.fingerprint("test") for n, td in session.data.items()}}
        names = [s.name for s in session.specs]
        session.extra["progress"] = JobProgress(count_steps(cfg, sources))
        prepared = prepare_sets(session, sources) if deactivate else None
        base = {}
        if not deactivate or iv.baseline:
            base, samples = resumable_test(state, "baseline", session, names, title="no intervention")
            metrics["tasks"] = base
            metrics["summary"] = summarize(base)
            atomic_write_json(out / "samples.json", samples)
            log_results_table(session.logger, base)
        if deactivate:
            metrics.update(deactivation(session, names, sources, base, out, prepared, state))
        if session.logger is not None and metrics.get("summary"):
            session.logger.log_metrics({f"summary/{k}": v for k, v in metrics["summary"].items()})
    finally:
        finish(session.logger)
    session.extra["progress"].finish()
    if base:
        print_results(base, title=f"{cfg.model.name} on {cfg.benchmark.name}", run_dir=None if deactivate else out)
    if deactivate:
        print_change_table(metrics, run_dir=out)
    return metrics


def count_steps(cfg: DictConfig, sources: list[str]) -> int:
    """Steps of this job for the progress lines: baseline, one identification per source, each deactivation."""
    iv = cfg.intervention
    if iv.name != "deactivate":
        return 1
    draws = sum(int(cfg.neurons.get("control_seeds", 1)) if k == "random" else 1 for k in iv.sets)
    return int(bool(iv.baseline)) + len(sources) + draws * len(sources)


def prepare_sets(session, sources: list[str]):
    pools = neuron_pools(session.model, session.cfg.neurons.definition)
    progress = session.extra.get("progress")
    task_sets, infos = {}, {}
    for src in sources:  # one at a time, so that each identification is a step of its own
        if progress is not None:
            progress.step(f"identify {src}'s neurons")
        sets, info = sets_for_tasks(session, [src], pools)
        task_sets.update(sets)
        infos.update(info)
    return pools, task_sets, infos


def deactivation(session, names: list[str], sources: list[str], base: dict, out: Path, prepared,
                 state: JobState) -> dict[str, Any]:
    cfg = session.cfg
    iv = cfg.intervention
    pools, task_sets, infos = prepared
    results: dict[str, dict[str, dict[str, dict]]] = {}
    change: dict[str, dict[str, dict[str, float]]] = {}
    controls: dict[str, list[str]] = {}  # fingerprints of each source's random draws (all different)
    for kind in iv.sets:
        results[kind], change[kind] = {}, {}
        # a random control is drawn neurons.control_seeds times per source task; its score is their mean
        draws = int(cfg.neurons.get("control_seeds", 1)) if kind == "random" else 1
        for src in sources:
            targets = [src] if iv.source == "same" else names
            runs = []
            for d in range(draws):
                nset = control_set(kind, task_sets[src], pools, session.model_name, cfg.neurons, source=src, draw=d)
                if kind == "random":
                    controls.setdefault(src, []).append(nset.fingerprint())
                cb = DeactivateNeurons(pools, nset, replacement=iv.replacement, path=iv.path)
                step = f"deactivate_{kind}_{src}" if kind != "random" else f"deactivate_random_d{d}_{src}"
                whose = f"{src}'s task neurons" if kind == "task" else (
                    f"a random control for {src}" + (f" (draw {d + 1}/{draws})" if draws > 1 else "") if kind == "random"
                    else f"{kind} neurons")
                res, _ = resumable_test(state, step, session, targets, callbacks=[cb], title=f"deactivate {whose}",
                                        log_prefix=f"deactivate_{kind}/{src}" + (f"/draw{d}" if draws > 1 else ""))
                runs.append(res)
            results[kind][src] = runs[0] if draws == 1 else mean_of_draws(runs)
            if base:
                change[kind][src] = {t: round(res[t]["score"] - base[t]["score"], 2) for t in targets}
    out_metrics: dict[str, Any] = {"neuron_sets": infos, "deactivation": results, "source": iv.source,
                                   "random_controls": controls}
    if base:
        out_metrics["change"] = change
        # the paper's Table 1 rows: original, and each task with its own set (or the random control) off
        rows = {}
        for t in names:
            row = {"original": base[t]["score"]}
            for kind in iv.sets:
                if t in results[kind].get(t, {}):
                    row[f"deactivate_{kind}"] = results[kind][t][t]["score"]
            rows[t] = row
        out_metrics["table"] = rows
        if iv.source == "matrix":
            png = save_change_heatmaps(change, names, out / "deactivation_matrix.png",
                                       title=f"{cfg.model.name}: score change after deactivating task i's neurons")
            out_metrics["heatmap"] = png.name  # relative to the run directory
            log_image(session.logger, "deactivation_matrix", png)
    return out_metrics


def mean_of_draws(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Several random draws of one control: mean score, each draw's score, per-example means and draws."""
    out = {}
    for t, first in runs[0].items():
        scores = [r[t]["score"] for r in runs]
        entry = {**first, "score": round(sum(scores) / len(scores), 2), "draw_scores": scores}
        recs = [r[t].get("per_example") for r in runs]
        if all(recs):
            entry["per_example"] = mean_records(recs)
        out[t] = entry
    return out


def rerender(metrics: dict[str, Any], out: Path) -> None:
    """A reused result gets its figure drawn again in the new run directory."""
    if metrics.get("heatmap") and metrics.get("change"):
        names = list(next(iter(metrics["change"].values())))
        save_change_heatmaps(metrics["change"], names, out / metrics["heatmap"],
                             title=f"{metrics['model']}: score change after deactivating task i's neurons")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run_entry(cfg, evaluate_job, on_reuse=rerender)


if __name__ == "__main__":
    main()
