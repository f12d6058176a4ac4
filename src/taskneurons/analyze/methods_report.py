"""``python -m taskneurons.report methods --scale tiny|small [key=value ...]`` (``make methods``): the scorers
against exact ablation (analyze/methods.py) on one model and its tasks, written as the artefact
``outputs/results/methods/<scale>/`` (table.md, result.json, ablation_curves.png).

- tiny: tiny_llama, the starter tasks rotten_tomatoes and bbc_topic, every unit exact-ablated (seconds);
- small: SmolLM2-135M, rotten_tomatoes, bbc_topic + sst2, paws, mnli (generalization12), a seeded
  sample of ``neurons.ablation_sample`` = 2000 units per task.
Overrides after the scale (Hydra syntax, the identify config) change either, e.g. ``neurons.max_examples=32``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taskneurons import PROJECT_ROOT
from taskneurons.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"overrides": ["model=tiny_llama", "task=[rotten_tomatoes,bbc_topic]", "neurons.max_examples=8",
                           "neurons.ablation_sample=null", "data.max_prompt_tokens=64"], "eval_examples": 16, "draws": 3},
    "small": {"overrides": ["model=smollm2_135m", "task=[rotten_tomatoes,bbc_topic,sst2,paws,mnli]",
                            "neurons.max_examples=64", "neurons.ablation_sample=2000"],
              "eval_examples": 200, "draws": 3},
}
PROPORTIONS = (0.01, 0.03, 0.1)


def compose_config(scale: str, overrides: list[str], out: Path):
    from hydra import compose, initialize_config_dir

    if scale not in PRESETS:
        raise ConfigError(f"--scale={scale} must be one of {', '.join(PRESETS)} for the methods artefact")
    from taskneurons.runtime.precision import apply_precision

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="identify", overrides=[*PRESETS[scale]["overrides"], "logger=none",
                                                         f"paths.output_root={out}", *overrides])
    # as every entry point does before its memory check: `auto` becomes the dtype this device computes fast
    apply_precision(cfg)
    return cfg


def run_methods(scale: str, overrides: list[str], out: Path, n_boot: int = 1000,
                eval_examples: int | None = None, draws: int | None = None) -> dict[str, Any]:
    """Open the model and tasks as identify does, compare the scorers, return the artefact's result."""
    from taskneurons.analyze.methods import compare_methods, eval_set
    from taskneurons.neurons.identify import attribution_batches, validate_neurons_config
    from taskneurons.neurons.pools import neuron_pools
    from taskneurons.runtime.distributed import compute_device
    from taskneurons.runtime.session import open_session

    cfg = compose_config(scale, overrides, out)
    names = list(cfg.get("tasks") or {})
    problems = validate_neurons_config(cfg.neurons, cfg.model.name, names)
    if len(names) < 2:
        problems.append(f"the methods artefact compares tasks (specificity, LAPE): select >= 2, got {names}")
    session = open_session(cfg, out, {}, need_train=names, problems=problems)
    session.model.to(compute_device(cfg.trainer.get("accelerator", "auto")))
    pools = neuron_pools(session.model, cfg.neurons.definition)
    sample = cfg.neurons.get("ablation_sample")
    total = sum(p.size for p in pools)
    if sample is not None and int(sample) > total:
        raise ConfigError(f"neurons.ablation_sample={sample} exceeds {cfg.model.name}'s {total} units "
                          "(checked after loading the model, before any scoring)")
    batches = {t: attribution_batches(session.tok, session.data[t], cfg.neurons, cfg.data)[0] for t in names}
    preset = {**PRESETS[scale], **({"eval_examples": eval_examples} if eval_examples else {}),
              **({"draws": draws} if draws else {})}
    evals = {t: eval_set(session.tok, session.data[t], preset["eval_examples"], int(cfg.neurons.seed),
                         int(cfg.data.max_prompt_tokens)) for t in names if session.data[t].spec.is_classification}
    numbers = compare_methods(session.model, session.tok, pools, batches, evals, proportions=PROPORTIONS,
                              draws=int(preset["draws"]), ig_steps=int(cfg.neurons.ig_steps),
                              ablation_sample=None if sample is None else int(sample), seed=int(cfg.neurons.seed),
                              n_boot=n_boot)
    caps = {"model": cfg.model.name, "tasks": names, "attribution_examples": int(cfg.neurons.max_examples),
            "eval_examples": preset["eval_examples"], "ablation_sample": sample if sample is not None else "all",
            "ig_steps": int(cfg.neurons.ig_steps), "random_draws": preset["draws"], "dtype": str(session.model.dtype)}
    return {"artefact": "methods", "scale": scale, "title": "Neuron scorers against exact ablation",
            "model": cfg.model.name, "seeds": [int(cfg.neurons.seed)], "caps": caps, "numbers": numbers,
            "tables": tables(numbers), "table_order": ["spearman", "ablation", "specificity", "cost"],
            "notes": NOTES}


NOTES = [
    "spearman: ρ of each scorer's scores with the exact ablation ΔL = L(unit off) − L on the units exact "
    "ablation scored, signed and |ΔL|; [95 % bootstrap over units]. LAPE's units of other tasks (NaN) rank last.",
    "ablation: accuracy (%) on the task's test sample with the scorer's top p % of every (layer, matrix) "
    "off [bootstrap over examples]; random: the mean over draws of same-count random sets [t over draws]; "
    "log p: mean gold-label log-probability.",
    "specificity: own-task accuracy drop minus the mean drop of the other tasks (points) at p = 10 % "
    "[bootstrap over test examples].",
    "cost: the scorer's wall time and peak memory (CUDA allocator peak on a GPU, RSS high-water mark on "
    "the CPU, above the start) on the same attribution examples, relative to grad_x_act.",
]


def _ci(d: dict, digits: int = 1) -> str:
    if d.get("lo") is None or d.get("hi") is None:
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]"


def _rho(d: dict) -> str:
    if d["rho"] is None:
        return "undefined (constant scores)"
    return f"{d['rho']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def tables(n: dict[str, Any]) -> dict[str, dict]:
    sp = {"columns": ["task", "method", "ρ vs ΔL", "ρ vs |ΔL|", "units"],
          "rows": [[t, m, _rho(v["signed"]), _rho(v["abs"]), v["signed"]["n_units"]]
                   for t, per in n["spearman"].items() for m, v in per.items()]}
    ab = {"columns": ["task", "method", "p", "units off", "accuracy", "random accuracy", "log p", "random log p"],
          "rows": [[t, m, c["proportion"], c["count"], _ci(c["accuracy"]), _ci(c["random_accuracy"]),
                    _ci(c["gold_logprob"], 2), _ci(c["random_gold_logprob"], 2)]
                   for t, per in n["curves"].items() for m, curve in per.items() for c in curve]}
    p_last = str(n["proportions"][-1])
    spec = {"columns": ["task", "method", "specificity", "own drop", "others' drop"],
            "rows": [[t, m, f"{v[p_last]['specificity']:.1f} [{v[p_last]['lo']:.1f}, {v[p_last]['hi']:.1f}]",
                      v[p_last]["own_drop"], v[p_last]["other_drop"]]
                     for t, per in n["specificity"].items() for m, v in per.items()]}
    cost = {"columns": ["task", "method", "seconds", "× grad_x_act time", "peak MB", "× grad_x_act memory"],
            "rows": [[t, m, c["seconds"], c["time_vs_grad_x_act"], c["peak_mb"], c["memory_vs_grad_x_act"]]
                     for t, per in n["cost"].items() for m, c in per.items()]}
    return {"spearman": sp, "ablation": ab, "specificity": spec, "cost": cost}


def plot_curves(n: dict[str, Any], path: Path) -> Path:
    from taskneurons.runtime.figures import plt, save_figure

    tasks = [t for t, per in n["curves"].items() if per]  # generation tasks have no accuracy curve
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.5 * max(len(tasks), 1), 3.5), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=False):
        for m, curve in n["curves"][t].items():
            xs = [100 * c["proportion"] for c in curve]
            ax.plot(xs, [c["accuracy"]["mean"] for c in curve], marker="o", label=m)
        first = next(iter(n["curves"][t].values()))
        ax.plot([100 * c["proportion"] for c in first], [c["random_accuracy"]["mean"] for c in first],
                color="grey", linestyle="--", label="random (grad_x_act counts)")
        ax.axhline(n["base"][t]["accuracy"], color="black", linewidth=0.8, label="nothing off")
        ax.set_xscale("log")
        ax.set_xlabel("top p % of each (layer, matrix) off")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(t)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)


def write_methods(scale: str, overrides: list[str], command: list[str] | None = None,
                  root: Path | None = None, n_boot: int = 1000, eval_examples: int | None = None,
                  draws: int | None = None) -> Path:
    from taskneurons.report.artefacts import output_root, results_dir, this_command, write_result

    root = Path(root or output_root())
    out_dir = results_dir("methods", scale, root)
    result = run_methods(scale, overrides, root, n_boot, eval_examples, draws)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(result["numbers"], out_dir / "ablation_curves.png")
    result["figures"] = ["ablation_curves.png"]
    result["commands"] = [*(command or []), this_command()]
    return write_result(result, out_dir)
