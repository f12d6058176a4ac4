"""The LightningModule around a Hugging Face causal LM: SFT loss on target tokens, task evaluation."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from taskneurons.data.encoding import IGNORE_INDEX, Encoded
from taskneurons.data.tasks import TaskSpec
from taskneurons.errors import NumericalError
from taskneurons.eval.metrics import CLS_SCORERS, TaskMetrics
from taskneurons.eval.scoring import greedy_generate, label_loglik, match_label, nonfinite
from taskneurons.models.loss import target_only_loss
from taskneurons.runtime.distributed import global_batch_loss


class CausalLMModule(pl.LightningModule):
    def __init__(self, model: Any, tokenizer: Any, eval_cfg: Any, optim_cfg: Any | None = None, log_prefix: str = "test"):
        super().__init__()
        self.log_prefix = log_prefix
        self.model = model
        self.tokenizer = tokenizer
        self.eval_cfg = eval_cfg
        self.optim_cfg = optim_cfg
        self.eval_tasks: list[TaskSpec] = []
        self.task_metrics: dict[str, TaskMetrics] = {}
        self.results: dict[str, dict] = {}
        self._label_ids: dict[str, list[list[int]]] = {}

    # --- training -----------------------------------------------------------------------------
    def forward(self, **batch: torch.Tensor) -> Any:
        return self.model(**batch)

    def sft_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss on target tokens only (prompt and padding carry none), LM head run only where needed."""
        loss = target_only_loss(self.model, batch)
        if self._trainer is not None and self.trainer.world_size > 1:
            # DDP: scaled so the averaged gradient is that of one process on the whole global batch
            loss = global_batch_loss(loss, (batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.sft_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cfg = self.optim_cfg
        params = [p for p in self.parameters() if p.requires_grad]  # includes neuron deltas when attached
        return torch.optim.AdamW(params, lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))

    # --- evaluation ---------------------------------------------------------------------------
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Evaluation batches are token lists that the scorers pad and move themselves.
        if isinstance(batch, list) and batch and isinstance(batch[0], Encoded):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def set_eval_tasks(self, specs: list[TaskSpec]) -> None:
        self.eval_tasks = list(specs)

    @property
    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        return sorted(i for i in ids if i is not None)

    def on_test_epoch_start(self) -> None:
        scorers = tuple(s for s in CLS_SCORERS if s in self.eval_cfg.cls_scorers)
        self.task_metrics = {
            t.name: TaskMetrics(t, scorers, self.eval_cfg.primary_cls_scorer) for t in self.eval_tasks
        }
        for t in self.eval_tasks:
            if t.is_classification:
                self._label_ids[t.name] = [
                    self.tokenizer(t.target_prefix + lab, add_special_tokens=False).input_ids for lab in t.labels
                ]

    def test_step(self, batch: list[Encoded], batch_idx: int, dataloader_idx: int = 0) -> None:
        spec = self.eval_tasks[dataloader_idx]
        try:
            self._score_batch(spec, batch)
        except NumericalError as e:  # named here: the scorers do not know the task or the batch
            raise NumericalError(
                f"evaluation of task '{spec.name}', batch {batch_idx + 1} (examples {batch[0].example.id}..): {e}; "
                "usually the model's weights hold nan/inf (a diverged training run, a damaged model file) or float16 "
                "overflow; fix: use model.dtype=bfloat16 or float32, retrain with a lower optim.lr, or re-download "
                "the model; no result was written") from None

    def _score_batch(self, spec: TaskSpec, batch: list[Encoded]) -> None:
        m = self.task_metrics[spec.name]
        prompts = [e.prompt_ids for e in batch]
        pad_id = self.tokenizer.pad_token_id
        ids = [e.example.id for e in batch]
        if spec.is_classification:
            gold = [e.label_index for e in batch]
            if "loglik" in m.scorers:
                with m.timed("loglik"):
                    scores = label_loglik(self.model, prompts, self._label_ids[spec.name], pad_id, self.eval_cfg.loglik_norm)
                bad = nonfinite(scores)
                if bad:  # argmax of nan is an arbitrary label, which would be scored like any answer
                    raise NumericalError(f"label log-likelihood scores are {bad}")
                gold_scores = scores[torch.arange(len(gold)), torch.tensor(gold)].float().tolist()
                m.update_cls("loglik", scores.argmax(-1).tolist(), gold, ids, gold_scores)
            if "generate" in m.scorers:
                with m.timed("generate"):
                    new = greedy_generate(self.model, prompts, int(self.eval_cfg.cls_max_new_tokens), pad_id, self.eos_ids)
                    texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                    pred = [match_label(t, spec.labels, self.eval_cfg.match) for t in texts]
                m.update_cls("generate", pred, gold, ids)
                self._keep_samples(m, batch, texts)
        else:
            with m.timed("generate"):
                new = greedy_generate(self.model, prompts, int(self.eval_cfg.gen_max_new_tokens), pad_id, self.eos_ids)
                texts = [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
            m.update_gen(texts, [e.example.all_references for e in batch], ids)
            self._keep_samples(m, batch, texts)

    def _keep_samples(self, m: TaskMetrics, batch: list[Encoded], texts: list[str]) -> None:
        # A few generations per task, written beside the metrics so a reader can see what was scored.
        room = int(self.eval_cfg.get("keep_samples", 5)) - len(m.samples)
        for e, t in list(zip(batch, texts, strict=True))[: max(room, 0)]:
            m.samples.append({"id": e.example.id, "generated": t, "target": e.example.target})

    def on_test_epoch_end(self) -> None:
        self.results = {name: m.compute() for name, m in self.task_metrics.items()}
        flat = flat_results(self.results, self.log_prefix)
        if self.logger is not None and flat:
            self.logger.log_metrics(flat, step=self.global_step)

    def samples(self) -> dict[str, list[dict]]:
        return {name: m.samples for name, m in self.task_metrics.items()}


def flat_results(results: dict[str, dict], prefix: str) -> dict[str, float]:
    """``{prefix/task/metric: value}``: the scalars of per-task results, as the loggers take them."""
    return {f"{prefix}/{name}/{k}": float(v) for name, res in results.items() for k, v in res.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}
