"""A finished stage of a continual run as an ordinary model: what NCFT, W-NCFT (for one task), SeqFT,
MIGU, MTL, SeqLoRA and O-LoRA had learnt after stage k, ready for ``save_pretrained``.

The run directory names everything: ``metrics.json`` (method, order, stages done, the job state's folder),
the run's config (``config.yaml``, or ``.hydra/config.yaml`` while the run is unfinished) and
``run_meta.json`` (the dtype the run resolved). The base model is loaded as the run loaded it; the method's
``setup_replay`` and ``restore`` replay stages 1..k from their checkpoints exactly as a resumed run does
(one implementation); peft LoRA adapters are merged into the weights; W-NCFT writes the similarity-weighted
rows of the chosen task, the weights that task was evaluated with. ``verify`` re-scores the result on the
run's own test examples and compares, example by example, with what the run recorded after stage k.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from taskneurons.continual.methods import REGISTRY, Method, build_method
from taskneurons.data.loading import load_tasks
from taskneurons.errors import ConfigError
from taskneurons.lit.evaluation import run_test
from taskneurons.models.loading import load_model_and_tokenizer
from taskneurons.runtime.atomic import read_json_with_checksum
from taskneurons.runtime.resume import JobState
from taskneurons.runtime.session import Session
from taskneurons.runtime.validation import checked_task_specs


@dataclass
class ContinualRunRecord:
    """What a continual run left on disk, read (and checked) without loading any model."""

    run_dir: Path
    metrics: dict[str, Any]
    cfg: DictConfig
    state: JobState

    @property
    def method(self) -> str:
        return str(self.metrics["method"])

    @property
    def order(self) -> list[str]:
        return list(self.metrics["order"])

    @property
    def eval_tasks(self) -> list[str]:
        return list(self.metrics["tasks_evaluated"])

    @property
    def stages_done(self) -> int:
        return int(self.metrics["stages_done"])


@dataclass
class _ReplayContext:
    """The part of the stage loop's Context that ``setup_replay`` and ``restore`` read."""

    cfg: DictConfig
    model: Any
    tok: Any
    state: JobState
    order: list[str]
    eval_tasks: list[str]

    @property
    def model_name(self) -> str:
        return str(self.cfg.model.name)

    @property
    def state_dir(self) -> Path:
        return Path(self.state.dir)


@dataclass
class StageModel:
    """The model of stage ``stage`` (1-based) of a run (for W-NCFT: as it evaluates ``task``)."""

    model: Any
    tok: Any
    stage: int
    task: str | None
    provenance: dict[str, Any] = field(default_factory=dict)


def open_continual_run(run_dir: str | Path) -> ContinualRunRecord:
    """The run's metrics, config and job state; ConfigError naming the file when one is missing or damaged."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"{metrics_path}: no such file; name the folder of a continual run "
                          "(the one with metrics.json, e.g. outputs/runs/continual/...)")
    try:
        metrics = read_json_with_checksum(metrics_path)
    except ValueError as e:
        raise ConfigError(f"{metrics_path}: {e}; rerun the continual job to rewrite it") from None
    if metrics.get("job") != "continual":
        raise ConfigError(f"{metrics_path}: a {metrics.get('job', 'non-continual')} run, not a continual one; "
                          "python -m taskneurons.train save_model=true writes a trained model's folder itself")
    complete = run_dir / "config.yaml"
    cfg_path = complete if complete.is_file() else run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir}: neither config.yaml nor .hydra/config.yaml; the run's config is needed "
                          "to load its base model")
    cfg = OmegaConf.load(cfg_path)
    if cfg_path is not complete and str(cfg.model.get("dtype")) == "auto":  # config.yaml holds the resolved dtype
        meta_path = run_dir / "run_meta.json"
        try:
            resolved = json.loads(meta_path.read_text()).get("precision", {}).get("resolved")
        except (OSError, ValueError, AttributeError):
            resolved = None
        if resolved is None:
            raise ConfigError(f"{meta_path}: the run asked for model.dtype=auto and its run_meta.json (which says "
                              "what it resolved to) is missing; export after the run finishes")
        cfg.model.dtype = resolved  # what the run's stage checkpoints hold
    state_dir = Path(metrics["state_dir"])
    if not state_dir.is_dir():
        raise ConfigError(f"{state_dir}: the run's job state (its stage checkpoints) is gone; set "
                          "TASKNEURONS_OUTPUT as the run had it, or rerun the continual job")
    state = JobState(state_dir.parent.parent.parent, state_dir.parent.name, state_dir.name)
    return ContinualRunRecord(run_dir, metrics, cfg, state)


def choose_stage(run: ContinualRunRecord, stage: int | None, task: str | None) -> tuple[int, str | None]:
    """``(stage, task)`` checked against the run: ``stage`` 1..stages done (default the last), ``task`` one
    of the evaluated tasks, required for W-NCFT and refused elsewhere (one model serves every task)."""
    method = REGISTRY[run.method]
    if not method.keeps_weights:
        raise ConfigError(f"{run.run_dir}: a {run.method} run keeps no weights (every stage starts again from the "
                          "pre-trained model; only its scores are recorded); train the task alone with "
                          "python -m taskneurons.train save_model=true, or export a seqft/migu/mtl/ncft/wncft/"
                          "seqlora/olora run")
    done = run.stages_done
    if done < 1:
        raise ConfigError(f"{run.run_dir}: no stage finished yet; export after stage 1")
    k = done if stage is None else stage
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= done:
        raise ConfigError(f"stage={stage!r}: {run.run_dir} finished stages 1..{done} "
                          f"({', '.join(run.metrics['stage_names'][:done])}); name one of them")
    if method.model_per_task:
        if task is None:
            raise ConfigError(f"task: W-NCFT evaluates every task with its own weighted rows; name the task whose "
                              f"model to export (one of {', '.join(run.eval_tasks)})")
        if task not in run.eval_tasks:
            raise ConfigError(f"task={task!r}: not a task of this run; one of {', '.join(run.eval_tasks)}")
    elif task is not None:
        raise ConfigError(f"task={task!r}: a {run.method} run has one model for every task after a stage; "
                          "leave task out (only W-NCFT has a model per task)")
    return k, task


def stage_model(run: ContinualRunRecord, stage: int | None = None, task: str | None = None) -> StageModel:
    """Load the run's base model and replay its stages 1..``stage`` (default: the last finished one) into
    it; LoRA merged, W-NCFT's rows for ``task`` written. Every check runs before the model loads."""
    k, task = choose_stage(run, stage, task)
    method = build_method(run.cfg)
    payloads = []
    for i in range(k):
        done = run.state.get_tensors(f"stage{i}")
        if done is None:
            raise ConfigError(f"{run.state.dir}/stage{i}.pt: stage {i + 1}'s checkpoint is missing or damaged; "
                              "rerun the continual job (it retrains that stage)")
        payloads.append(done)
    if not payloads[-1]["payload"]:
        raise ConfigError(f"{run.state.dir}/stage{k - 1}.pt: this {run.method} run kept no weights in its stage "
                          "checkpoint (an MTL run from before MTL kept them); rerun it to export its model")
    model, tok = load_model_and_tokenizer(run.cfg.model, run.cfg.paths.get("model_cache"))
    ctx = _ReplayContext(run.cfg, model, tok, run.state, run.order, run.eval_tasks)
    method.setup_replay(ctx)
    for i, stage_obj in enumerate(method.stages(run.order)[:k]):
        method.restore(ctx, stage_obj, payloads[i]["payload"], payloads[i]["row"])
    payloads = None
    model = _plain_model(method, ctx, task)
    model.eval()
    provenance = {
        "run_dir": str(run.run_dir), "method": run.method, "order": run.order, "stage": k,
        "stage_name": run.metrics["stage_names"][k - 1], "task": task, "model": str(run.cfg.model.name),
        "seed": int(run.cfg.seed), "stages_done": run.stages_done, "dtype": str(model.dtype).removeprefix("torch."),
    }
    if method.model_per_task:
        provenance["wncft"] = {"variant": method.variant, "weights_of": task}
    return StageModel(model, tok, k, task, provenance)


def _plain_model(method: Method, ctx: _ReplayContext, task: str | None) -> Any:
    """The replayed model as a plain HF model: LoRA adapters (every active one) merged, W-NCFT's rows for
    ``task`` written into the weights."""
    peft = getattr(method, "peft", None)
    if peft is not None:
        return peft.merge_and_unload()
    if task is not None:
        from taskneurons.continual.rows import write_rows

        write_rows(method.pools, method.weighted(ctx, task))
    return ctx.model


def verify(run: ContinualRunRecord, exported: StageModel, tasks: list[str] | None = None) -> dict[str, dict]:
    """Score ``exported`` on the run's own test examples of ``tasks`` (default: every task the run scored
    with this model after the stage) and compare with the run's row: per task the two scores and, for
    classification, the two mean gold-label log-likelihoods (a continuous reading). W-NCFT with inferred task
    identity scored each example with the rows of the task it guessed, so only the chosen task is compared,
    against the oracle reading when recorded."""
    row = run.metrics["results"][exported.stage - 1]
    if tasks is None:
        tasks = [exported.task] if exported.task is not None else list(row)
    reference = {t: row[t] for t in tasks}
    if REGISTRY[run.method].model_per_task and str(run.cfg.continual.wncft.task_identity) != "oracle":
        compare = run.metrics["stage_info"][exported.stage - 1].get("compare", {})
        oracle = compare.get(f"{run.cfg.continual.wncft.variant}/oracle")
        if oracle is None:
            return {t: {"comparable": False, "why": "the run inferred each example's task and recorded no oracle "
                        "reading (continual.wncft.compare=true records one)"} for t in tasks}
        reference = {t: {"score": oracle["scores"][t]} for t in tasks}
    cfg = run.cfg
    specs = [s for s in checked_task_specs(cfg) if s.name in tasks]
    data = load_tasks(specs, cfg.paths.data_dir, max_train=0, max_test=cfg.data.max_test,
                      seed=int(cfg.data.sample_seed), splits=("test",))
    session = Session(cfg, run.run_dir, {}, specs, data, exported.model, exported.tok)
    results, _ = run_test(session, tasks, log_prefix="verify", logger=None)
    out = {}
    for t in tasks:
        ref, new = reference[t], results[t]
        entry = {"comparable": True, "run": ref["score"], "export": new["score"], "n": new["n"]}
        if "gold_loglik" in ref and "gold_loglik" in new:  # continuous: equal accuracies can hide another model
            entry["gold_loglik_run"], entry["gold_loglik_export"] = ref["gold_loglik"], new["gold_loglik"]
        out[t] = entry
    return out
