"""The analyze commands: each validates its inputs (no model is ever loaded), computes, prints, and
returns its metrics; with ``analyze.artefact`` set it also writes the paper artefact (``artefact.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console

from taskneurons.analyze import render
from taskneurons.analyze.controlled_table import controlled_table
from taskneurons.analyze.correlate import correlation
from taskneurons.analyze.overlap import PAIRS, overlap_sweep
from taskneurons.analyze.proportions import fig2_table, fig6_table
from taskneurons.analyze.sets import check_grid, load_task_sets
from taskneurons.analyze.similarity import (
    LAYER_REDUCE,
    OPTIONS,
    check_flattened,
    mean_curves,
    model_similarity,
)
from taskneurons.analyze.sweeps import load_jobs
from taskneurons.analyze.weights import SavedWeights, check_matches
from taskneurons.errors import ConfigError
from taskneurons.neurons.neuronset import at_proportion
from taskneurons.runtime.atomic import atomic_write_json

COMMANDS = ("overlap", "similarity", "correlate", "proportions", "controlled")
ARTEFACTS = {"overlap": ("table8",), "similarity": ("fig3",), "correlate": ("table4",), "proportions": ("fig2", "fig6"),
             "controlled": ("table9",)}
GROUP_KEYS = ("train_cls", "train_gen", "ood_cls", "ood_gen")


def groups_of(cfg: Any) -> dict[str, list[str]]:
    return {k: list(v) for k, v in OmegaConf.to_container(cfg.analyze.groups, resolve=True).items()}


def validate(cfg: Any) -> list[str]:
    a, cmd = cfg.analyze, cfg.command
    if cmd not in COMMANDS:
        return [f"command '{cmd}' must be one of {', '.join(COMMANDS)} (python -m taskneurons.analyze <command> ...)"]
    p: list[str] = []
    if a.artefact is not None and a.artefact not in ARTEFACTS[cmd]:
        p.append(f"analyze.artefact={a.artefact} is not made by '{cmd}'; use one of {list(ARTEFACTS[cmd])} or null")
    groups = groups_of(cfg)
    for k in GROUP_KEYS:
        if not groups.get(k):
            p.append(f"analyze.groups.{k} must list tasks (paper Table 3)")
    if cmd == "overlap":
        p += check_grid(a.proportions, "analyze.proportions")
    if cmd == "similarity":
        p += check_grid([a.proportion], "analyze.proportion")
        if a.similarity not in OPTIONS:
            p.append(f"analyze.similarity='{a.similarity}' must be one of {', '.join(OPTIONS)}")
        if a.layer_reduce not in LAYER_REDUCE:
            p.append(f"analyze.layer_reduce='{a.layer_reduce}' must be one of {', '.join(LAYER_REDUCE)}")
    return p


def jobs_of(cfg: Any, what: str) -> list[tuple[Path, dict]]:
    """The newest finished job per cell of analyze.sweep_dir, restricted to analyze.seeds when given."""
    seeds = sorted({int(s) for s in cfg.analyze.seeds}) if cfg.analyze.get("seeds") else None
    return load_jobs(cfg.analyze.sweep_dir, what, seeds)


def run_command(cfg: Any, out: Path) -> dict[str, Any]:
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    return {"overlap": overlap_job, "similarity": similarity_job, "correlate": correlate_job,
            "proportions": proportions_job, "controlled": controlled_job}[cfg.command](cfg, out)


# --- overlap (Table 8) ----------------------------------------------------------------------------

def overlap_job(cfg: Any, out: Path) -> dict[str, Any]:
    groups = groups_of(cfg)
    tasks = list(dict.fromkeys(t for k in GROUP_KEYS for t in groups[k]))
    scored = load_task_sets(tasks, str(cfg.model.name), cfg.neurons, dict(cfg.analyze.sets or {}))
    props = [float(p) for p in cfg.analyze.proportions]
    table = overlap_sweep(scored, groups, props, cfg.neurons.scope)
    metrics = {"job": "analyze", "command": "overlap", "model": str(cfg.model.name), "proportions": props,
               "groups": groups, "overlap": {pair: {str(p): v for p, v in by_p.items()} for pair, by_p in table.items()}}
    Console(width=160).print(render.overlap_rich(table, props))
    if cfg.analyze.artefact:
        render.table8_artefact(cfg, table, props, metrics)
    return metrics


# --- parameter similarity (Fig. 3) ------------------------------------------------------------------

def models_of(cfg: Any, train_tasks: list[str]) -> tuple[dict[str, Path], dict[str, dict]]:
    """training task -> saved model dir (analyze.models, else the full fine-tuning jobs of analyze.sweep_dir),
    and each model's job metrics when known (its OOD scores, for Table 4)."""
    explicit = {k: Path(v) for k, v in (cfg.analyze.models or {}).items()}
    if explicit:
        return explicit, {}
    models, metrics = {}, {}
    for job_dir, m in jobs_of(cfg, cfg.analyze.artefact or "fig3"):
        if m.get("job") == "train" and len(m.get("train_tasks", [])) == 1 and m.get("model_dir"):
            t = m["train_tasks"][0]
            models[t], metrics[t] = Path(m["model_dir"]), m
            if m.get("model") != cfg.model.name:
                raise ConfigError(f"{job_dir}: model '{m.get('model')}' does not match model={cfg.model.name} of the neuron sets")
    missing = [t for t in train_tasks if t not in models]
    if missing:
        raise ConfigError(f"no saved fully fine-tuned model for training tasks {missing} in {cfg.analyze.sweep_dir} "
                          "(train with intervention=finetune_full save_model=true train_tasks=[<task>])")
    return models, metrics


def similarity_job(cfg: Any, out: Path) -> dict[str, Any]:
    groups = groups_of(cfg)
    train = groups["train_cls"] + groups["train_gen"]
    tests = groups["ood_cls"] + groups["ood_gen"]
    scored = load_task_sets(list(dict.fromkeys(train + tests)), str(cfg.model.name), cfg.neurons, dict(cfg.analyze.sets or {}))
    k = float(cfg.analyze.proportion)
    sets = {t: at_proportion(s, k, cfg.neurons.scope) for t, s in scored.items()}
    if cfg.analyze.similarity == "flattened":
        problems = check_flattened(sets)
        if problems:
            raise ConfigError(problems)
    models, job_metrics = models_of(cfg, train)
    weights, problems = {}, []
    pools = next(iter(sets.values())).pool_sizes
    for t in train:  # every model checked from its file headers before any weight is read
        try:
            weights[t] = SavedWeights(models[t])
            problems += check_matches(weights[t], pools, cfg.neurons.definition, str(models[t]))
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    per_model = {t: model_similarity(weights[t], sets[t], {j: sets[j] for j in tests}, cfg.neurons.definition,
                                     cfg.analyze.similarity, cfg.analyze.layer_reduce) for t in train}
    panels = {"a": ("CLS test tasks, all models", train, groups["ood_cls"]),
              "b": ("GEN test tasks, all models", train, groups["ood_gen"]),
              "c": ("GEN test tasks, GEN-trained models", groups["train_gen"], groups["ood_gen"])}
    curves = {name: mean_curves(per_model, models_, tests_) for name, (_, models_, tests_) in panels.items()}
    scores = {t: {j: m["tasks"][j]["score"] for j in tests if j in m.get("tasks", {})} for t, m in job_metrics.items()}
    metrics = {"job": "analyze", "command": "similarity", "model": str(cfg.model.name), "proportion": k,
               "option": cfg.analyze.similarity, "layer_reduce": cfg.analyze.layer_reduce, "groups": groups,
               "per_model": per_model, "curves": curves, "panels": {n: p[0] for n, p in panels.items()},
               "models": {t: str(p) for t, p in models.items()}, "scores": scores}
    atomic_write_json(out / "similarity.json", metrics)
    Console(width=160).print(render.similarity_rich(curves, panels))
    if cfg.analyze.artefact:
        render.fig3_artefact(cfg, metrics, panels)
    return metrics


# --- correlation (Table 4) --------------------------------------------------------------------------

def correlate_job(cfg: Any, out: Path) -> dict[str, Any]:
    import json

    path = Path(cfg.analyze.similarity_file) if cfg.analyze.similarity_file else None
    if path is None or not path.is_file():
        raise ConfigError(f"analyze.similarity_file={path} is missing; run python -m taskneurons.analyze similarity first "
                          "(make fig3 writes it)")
    sim = json.loads(path.read_text())
    scores = sim.get("scores") or {}
    if cfg.analyze.sweep_dir:  # scores from another sweep of the same models
        scores = {m["train_tasks"][0]: {j: r["score"] for j, r in m["tasks"].items()}
                  for _, m in jobs_of(cfg, "table4") if len(m.get("train_tasks", [])) == 1}
    band = list(cfg.analyze.band) if cfg.analyze.band else None
    rows = {}
    for j in sim["groups"]["ood_cls"] + sim["groups"]["ood_gen"]:
        xs, ys = [], []
        for model_task, per_test in sim["per_model"].items():
            if j in per_test and j in scores.get(model_task, {}):
                layers = per_test[j][band[0]:band[1] + 1] if band else per_test[j]
                xs.append(sum(layers) / len(layers))
                ys.append(scores[model_task][j])
        rows[j] = {**correlation(xs, ys, f"Table 4, test task {j}"), "similarity": xs, "scores": ys}
    metrics = {"job": "analyze", "command": "correlate", "model": sim.get("model"), "similarity_file": str(path),
               "layers": band or "all", "correlation": rows}
    Console(width=160).print(render.table4_rich(rows))
    if cfg.analyze.artefact:
        render.table4_artefact(cfg, metrics)
    return metrics


# --- proportion sweeps (Figs. 2 and 6) and controlled overlap (Tables 9-11) --------------------------

def proportions_job(cfg: Any, out: Path) -> dict[str, Any]:
    what = cfg.analyze.artefact or "fig2"
    jobs = jobs_of(cfg, what)
    if what == "fig6":
        table6 = fig6_table([m for _, m in jobs])
        metrics = {"job": "analyze", "command": "proportions", "artefact": "fig6", "fig6": table6}
        Console(width=160).print(render.fig6_rich(table6))
        if cfg.analyze.artefact:
            render.fig6_artefact(cfg, table6, jobs)
        return metrics
    table = fig2_table([m for _, m in jobs], groups_of(cfg))
    metrics = {"job": "analyze", "command": "proportions", "artefact": "fig2",
               "fig2": {g: {str(p): row for p, row in by_p.items()} for g, by_p in table.items()}}
    Console(width=160).print(render.fig2_rich(table))
    if cfg.analyze.artefact:
        render.fig2_artefact(cfg, table, jobs)
    return metrics


def controlled_job(cfg: Any, out: Path) -> dict[str, Any]:
    jobs = jobs_of(cfg, cfg.analyze.artefact or "table9")
    table = controlled_table([m for _, m in jobs], groups_of(cfg))
    metrics = {"job": "analyze", "command": "controlled", "controlled": table}
    Console(width=160).print(render.controlled_rich(table))
    if cfg.analyze.artefact:
        render.table9_artefact(cfg, table, jobs)
    return metrics


__all__ = ["COMMANDS", "PAIRS", "run_command"]
