"""The continual-learning methods, each a small class behind one interface.

A stage loop (``loop.py``) calls, per stage: ``prepare`` (choose what trains), ``callbacks`` /
``regularizer`` (how it trains), ``finish`` (what the stage changed: the checkpoint payload), then
``evaluate`` (every task, each through ``model_for(task)``). ``restore`` replays a finished stage from
its payload when a killed run resumes, and when a finished stage is exported (``setup_replay`` instead of
``setup``: no identification, no task vectors computed; continual/export.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from taskneurons.continual import features, lora
from taskneurons.continual.migu import MIGUMasking, block_linears
from taskneurons.continual.rows import (
    Rows,
    rows_written,
    similarity_weights,
    snapshot,
    weighted_rows,
    write_rows,
)
from taskneurons.errors import ConfigError
from taskneurons.neurons.ddp_attribution import attribute_on_ranks
from taskneurons.neurons.identify import control_set, identify_task, set_summary
from taskneurons.neurons.neuronset import NeuronSet
from taskneurons.neurons.pools import neuron_pools
from taskneurons.neurons.sparse_finetune import NeuronFinetuning
from taskneurons.runtime.distributed import gather_dict, shard

METHODS = ("seqft", "seqlora", "olora", "ncft", "wncft", "pertask", "mtl", "migu")


@dataclass
class Stage:
    index: int
    name: str               # the task trained (or "all" for mtl)
    train_tasks: list[str]


class Method:
    name = "base"
    keeps_weights = True  # its stage checkpoints replay the trained model (False: only the scores are kept)
    model_per_task = False  # True: after a stage each task is evaluated with weights of its own (W-NCFT)

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.mcfg = cfg.continual.method

    def stages(self, order: list[str]) -> list[Stage]:
        return [Stage(i, t, [t]) for i, t in enumerate(order)]

    def steps_factor(self, stage: Stage) -> int:
        return 1

    def setup(self, ctx: Any) -> None:
        """Once, on the pre-trained model, before any stage (also before replaying finished ones)."""

    def setup_replay(self, ctx: Any) -> None:
        """Before replaying finished stages outside a run (export): what ``restore`` needs, nothing trained
        or identified."""
        self.setup(ctx)

    def prepare(self, ctx: Any, stage: Stage) -> None:
        raise NotImplementedError

    def callbacks(self, ctx: Any, stage: Stage) -> list:
        return []

    def regularizer(self, ctx: Any, stage: Stage) -> Callable[[], torch.Tensor] | None:
        return None

    def finish(self, ctx: Any, stage: Stage) -> dict:
        """After training: the payload that replays this stage (only what it changed)."""
        raise NotImplementedError

    def restore(self, ctx: Any, stage: Stage, payload: dict, row: dict[str, dict]) -> None:
        raise NotImplementedError

    def model_for(self, ctx: Any, task: str) -> Any:
        """A context in which ``ctx.model`` is the model that evaluates ``task``."""
        return nullcontext()

    def evaluate(self, ctx: Any, stage: Stage) -> tuple[dict[str, dict], dict]:
        return ctx.test(ctx.eval_tasks)[0], {}

    def extra_summary(self, matrix: list[list[float]]) -> dict[str, Any]:
        """The method's own numbers in a finished run's summary (``matrix``: stage x order task)."""
        return {}


def _all_trainable(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


class SeqFT(Method):
    """Full fine-tuning, one task after another."""

    name = "seqft"

    def prepare(self, ctx, stage):
        _all_trainable(ctx.model)

    def finish(self, ctx, stage):
        # written to the stage checkpoint at once, before anything trains again: no copy needed on the CPU
        return {"params": {n: p.detach().cpu() for n, p in ctx.model.named_parameters()}}

    @torch.no_grad()
    def restore(self, ctx, stage, payload, row):
        own = dict(ctx.model.named_parameters())
        for n, v in payload["params"].items():
            own[n].copy_(v)


class MIGU(SeqFT):
    """Full fine-tuning whose every step moves only each block linear layer's high-magnitude output rows
    (``continual.method.quantile``; continual/migu.py)."""

    name = "migu"

    def callbacks(self, ctx, stage):
        self.masking = MIGUMasking(block_linears(ctx.model), float(self.mcfg.quantile))
        return [self.masking]


class MTL(SeqFT):
    """Every task of the order jointly in one stage (full fine-tuning, N x the per-task steps)."""

    name = "mtl"

    def stages(self, order):
        return [Stage(0, "all", list(order))]

    def steps_factor(self, stage):
        return len(stage.train_tasks)


class PerTask(Method):
    """A fresh copy of the pre-trained model per task (A_i of the FG metric); task j is evaluated on
    its own model once seen, on the pre-trained model before."""

    name = "pertask"
    keeps_weights = False  # every stage restarts from the pre-trained model; N full copies are not kept

    def setup(self, ctx):
        self.pretrained = {n: t.detach().cpu().clone() for n, t in ctx.model.state_dict().items()}
        self.own: dict[str, dict] = {}
        self.zero_shot: dict[str, dict] = {}

    def _reset(self, ctx):
        ctx.model.load_state_dict(self.pretrained)

    def prepare(self, ctx, stage):
        self._reset(ctx)
        _all_trainable(ctx.model)

    def finish(self, ctx, stage):
        return {}  # later stages start from the pre-trained model; the own score is in the row

    def restore(self, ctx, stage, payload, row):
        self.own[stage.name] = row[stage.name]

    def evaluate(self, ctx, stage):
        self.own[stage.name] = ctx.test([stage.name])[0][stage.name]
        self._reset(ctx)
        todo = [t for t in ctx.eval_tasks if t not in self.own and t not in self.zero_shot]
        if todo:
            self.zero_shot.update(ctx.test(todo)[0])
        return {t: self.own.get(t, self.zero_shot.get(t)) for t in ctx.eval_tasks}, {}

    def extra_summary(self, matrix):
        return {"per_task_scores": list(matrix[-1])}  # each task on its own model: the A_i of FG retention


class SeqLoRA(Method):
    """One LoRA (peft) trained through all stages."""

    name = "seqlora"
    adapter = "seq"

    def check_targets(self, ctx):
        missing = lora.missing_targets(ctx.model, list(self.cfg.continual.lora.target_modules))
        if missing:
            raise ConfigError(f"continual.lora.target_modules: {missing} match no module of {ctx.cfg.model.name}; "
                              "name its attention projections (e.g. [q_proj,v_proj] for Llama, [c_attn] for GPT-2, "
                              "[query_key_value] for Bloom)")

    def setup(self, ctx):
        self.check_targets(ctx)
        self.peft = lora.wrap(ctx.model, self.cfg.continual.lora, self.adapter, int(self.cfg.seed))

    def prepare(self, ctx, stage):
        for n, p in ctx.model.named_parameters():
            p.requires_grad_("lora_" in n)

    def finish(self, ctx, stage):
        return {"adapters": lora.adapter_state(self.peft, [self.adapter])}

    def restore(self, ctx, stage, payload, row):
        lora.load_adapter_state(self.peft, payload["adapters"])


class OLoRA(SeqLoRA):
    """A new LoRA per task, earlier ones frozen (still active), O-LoRA's orthogonality loss."""

    name = "olora"

    def _name(self, i: int) -> str:
        return f"task{i}"

    def setup(self, ctx):
        self.check_targets(ctx)
        self.peft = None

    def prepare(self, ctx, stage):
        i, lcfg, seed = stage.index, self.cfg.continual.lora, int(self.cfg.seed) + stage.index
        if self.peft is None:
            self.peft = lora.wrap(ctx.model, lcfg, self._name(0), seed)
        lora.add_frozen_history(self.peft, lcfg, self._name(i), seed, [self._name(k) for k in range(i)])

    def regularizer(self, ctx, stage):
        if stage.index == 0:
            return None
        old = [self._name(k) for k in range(stage.index)]
        new, l1, l2 = self._name(stage.index), float(self.mcfg.lambda1), float(self.mcfg.lambda2)
        return lambda: lora.olora_regularizer(ctx.model, old, new, l1, l2)

    def finish(self, ctx, stage):
        return {"adapters": lora.adapter_state(self.peft, [self._name(stage.index)])}

    def restore(self, ctx, stage, payload, row):
        self.prepare(ctx, stage)
        lora.load_adapter_state(self.peft, payload["adapters"])


class NCFT(Method):
    """Train only the current task's neurons (delta rows, fresh optimizer), merge after the stage."""

    name = "ncft"
    keep_before = False

    def setup(self, ctx):
        self._empty(ctx)
        if self.mcfg.neurons_from == "pretrained":
            for t in ctx.order:  # every set on the pre-trained weights, before anything trains
                self.sets[t] = self._identify(ctx, t, self.cfg.neurons.store_dir)

    def setup_replay(self, ctx):
        self._empty(ctx)

    def _empty(self, ctx) -> None:
        self.pools = neuron_pools(ctx.model, self.cfg.neurons.definition)
        self.sets: dict[str, NeuronSet] = {}
        self.after: list[Rows] = []
        self.before: list[Rows] = []
        self.set_info: dict[str, dict] = {}

    def _identify(self, ctx, task: str, store_dir: str | Path) -> NeuronSet:
        ncfg = OmegaConf.merge(self.cfg.neurons, {"store_dir": str(store_dir)})
        # under trainer=ddp the attribution batches are split over the ranks and the scores summed
        ref, info = identify_task(ctx.model, ctx.tok, ctx.model_name, ctx.session.data[task], ncfg, self.cfg.data,
                                  self.pools, attribute_fn=attribute_on_ranks,
                                  peers={t: ctx.session.data[t] for t in ctx.order})
        nset = control_set(ncfg.set, ref, self.pools, ctx.model_name, ncfg)
        self.set_info[task] = {**info, **set_summary(nset)}
        return nset

    def prepare(self, ctx, stage):
        if stage.name not in self.sets:
            # identified on the current model: its own store under the run's state, keyed by stage
            self.sets[stage.name] = self._identify(ctx, stage.name, ctx.state_dir / "neurons" / f"stage{stage.index}")
        self._before = snapshot(self.pools, self.sets[stage.name]) if self.keep_before else None

    def callbacks(self, ctx, stage):
        return [NeuronFinetuning(self.pools, self.sets[stage.name])]

    def finish(self, ctx, stage):
        after = snapshot(self.pools, self.sets[stage.name])
        self._record(after, self._before)
        payload = {"after": after, "set_info": self.set_info.get(stage.name, {})}
        if self.keep_before:
            payload["before"] = self._before
        return payload

    def _record(self, after: Rows, before: Rows | None) -> None:
        self.after.append(after)
        self.before.append(before or {})

    def restore(self, ctx, stage, payload, row):
        write_rows(self.pools, payload["after"])
        self.set_info[stage.name] = payload.get("set_info", {})
        self._record(payload["after"], payload.get("before"))


class WNCFT(NCFT):
    """NCFT, and at evaluation the similarity-weighted neuron rows of the trained tasks (PAPER.md §7.2)."""

    name = "wncft"
    keep_before = True
    model_per_task = True

    def setup(self, ctx):
        super().setup(ctx)
        self._task_vectors(ctx, compute=True)

    def setup_replay(self, ctx):
        super().setup_replay(ctx)
        self._task_vectors(ctx, compute=False)

    def _task_vectors(self, ctx, compute: bool) -> None:
        w = self.cfg.continual.wncft
        self.variant, self.identity = str(w.variant), str(w.task_identity)
        cached = ctx.state.get_tensors("task_vectors")
        if cached is None and not compute:
            raise ConfigError(f"W-NCFT: the run's task vectors are missing or damaged ({ctx.state.dir}/task_vectors.pt); "
                              "rerun the continual job (it recomputes them and replays its finished stages)")
        if cached is None:
            mine = {}
            for t in shard(ctx.eval_tasks):  # on the pre-trained model (setup runs before any stage is replayed)
                td = ctx.session.data[t]
                vector = features.task_vector(
                    ctx.model, ctx.tok, td.spec, td.train or td.test, int(w.vector_examples), int(self.cfg.seed),
                    int(self.cfg.data.max_prompt_tokens))
                test_features = None
                if self.identity == "inferred" or w.get("compare"):
                    test_features = features.prompt_features(
                        ctx.model, ctx.tok, td.spec, td.test, int(self.cfg.data.max_prompt_tokens))
                mine[t] = (vector.cpu(), None if test_features is None else test_features.cpu())
            every = gather_dict(mine)  # under trainer=ddp each rank computed its share of the tasks
            cached = {"vectors": {t: every[t][0] for t in ctx.eval_tasks},
                      "test_features": {t: every[t][1] for t in ctx.eval_tasks if every[t][1] is not None}}
            ctx.state.put_tensors("task_vectors", cached)
        self.vectors = cached["vectors"]
        self.test_features = cached["test_features"]

    def weighted(self, ctx, task: str) -> Rows:
        """The rows to evaluate ``task`` with, after the stages trained so far (built once per task)."""
        trained = ctx.order[: len(self.after)]
        weights = similarity_weights(self.vectors[task], [self.vectors[k] for k in trained])
        return weighted_rows(self.after, self.before, weights, self.variant)

    @contextmanager
    def model_for(self, ctx, task: str) -> Iterator[None]:
        with rows_written(self.pools, self.weighted(ctx, task)):
            yield

    def evaluate(self, ctx, stage):
        results, extra = self._evaluate(ctx, self.variant, self.identity)
        if self.cfg.continual.wncft.get("compare"):
            # the other readings of Eq. 12 (oracle identity) and the inferred identity, every stage: "compare"
            others = [(v, "oracle") for v in ("normalized", "literal", "delta") if v != self.variant]
            others.append((self.variant, "inferred" if self.identity == "oracle" else "oracle"))
            extra["compare"] = {}
            for variant, identity in others:
                res, ex = self._evaluate(ctx, variant, identity, log_prefix=f"compare_{variant}_{identity}")
                extra["compare"][f"{variant}/{identity}"] = {
                    "scores": {t: r["score"] for t, r in res.items()}, **ex}
        return results, extra

    def _evaluate(self, ctx, variant: str, identity: str, log_prefix: str = "eval") -> tuple[dict[str, dict], dict]:
        chosen, self.variant = self.variant, variant
        try:
            return self._evaluate_with(ctx, identity, log_prefix)
        finally:
            self.variant = chosen

    def _evaluate_with(self, ctx, identity: str, log_prefix: str) -> tuple[dict[str, dict], dict]:
        # each task evaluated with its own rows; under trainer=ddp the tasks are split over the ranks
        mine: dict[str, tuple[dict, int]] = {}  # task -> (results, examples whose task was inferred right)
        vectors = {t: self.vectors[t] for t in ctx.order}
        for t in shard(ctx.eval_tasks):
            if identity == "oracle":
                with self.model_for(ctx, t):
                    mine[t] = (ctx.test([t], log_prefix=None, local=True)[0][t], 0)
                continue
            guess = features.nearest_task(self.test_features[t], vectors)
            groups: dict[str, list[int]] = {}
            for i, g in enumerate(guess):
                groups.setdefault(g, []).append(i)
            parts = []
            for g, idx in groups.items():
                with self.model_for(ctx, g):
                    parts.append(ctx.test([t], subset={t: idx}, log_prefix=None, local=True)[0][t])
            res = combine_results(parts)
            res["identity_accuracy"] = round(100 * guess.count(t) / max(len(guess), 1), 2)
            mine[t] = (res, guess.count(t))
        merged = gather_dict(mine)
        results = {t: merged[t][0] for t in ctx.eval_tasks}
        ctx.log_results(results, log_prefix)
        extra = {}
        if identity != "oracle":
            right, total = sum(merged[t][1] for t in ctx.eval_tasks), sum(int(r["n"]) for r in results.values())
            extra["identity_accuracy"] = round(100 * right / max(total, 1), 2)
        return results, extra


def combine_results(parts: list[dict]) -> dict:
    """One task's results from disjoint example groups: counts add, rates average weighted by n."""
    n = sum(int(p["n"]) for p in parts)
    out = dict(parts[0])
    out["n"] = n
    for k, v in parts[0].items():
        if k != "n" and isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = round(sum(float(p[k]) * int(p["n"]) for p in parts) / max(n, 1), 2)
    if "per_example" in parts[0]:
        out["per_example"] = {key: [x for p in parts for x in p["per_example"][key]] for key in parts[0]["per_example"]}
    return out


REGISTRY: dict[str, type[Method]] = {m.name: m for m in (SeqFT, SeqLoRA, OLoRA, NCFT, WNCFT, PerTask, MTL, MIGU)}


def build_method(cfg: Any) -> Method:
    return REGISTRY[str(cfg.continual.method.name)](cfg)
