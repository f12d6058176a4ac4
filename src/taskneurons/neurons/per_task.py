"""Per-task masks for joint neuron-only training (``intervention.combine=per_task``, PAPER.md §12.5 variant):
every batch holds one task's examples, and that batch only updates the rows of that task's neurons.

The trained deltas cover the union of the tasks' sets (``sparse_finetune.NeuronDeltas``); here a
gradient hook multiplies each delta's gradient by the current task's row mask, and after each optimizer
step the rows of tasks not in the step's batches are put back (AdamW's momentum and weight decay would
otherwise move them on zero gradient).
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from taskneurons.neurons.neuronset import NeuronSet


class TaskBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Global batches ``start .. stop-1``; each batch from one task. Per epoch: each task's examples are
    shuffled and cut into batches, and the batches of all tasks shuffled, seeded by (seed, epoch), so a
    batch is a pure function of its index (kill-safe resume)."""

    def __init__(self, sizes: list[int], batch_size: int, seed: int, start: int = 0, stop: int | None = None):
        self.sizes, self.bs, self.seed = list(sizes), int(batch_size), int(seed)
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.per_epoch = sum(math.ceil(n / self.bs) for n in self.sizes)
        self.start, self.stop = start, self.per_epoch if stop is None else stop
        self._cache: dict[int, list[tuple[int, list[int]]]] = {}

    def epoch_batches(self, epoch: int) -> list[tuple[int, list[int]]]:
        if epoch not in self._cache:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            batches = []
            for t, (n, off) in enumerate(zip(self.sizes, self.offsets, strict=True)):
                perm = (torch.randperm(n, generator=g) + off).tolist()
                batches += [(t, perm[i:i + self.bs]) for i in range(0, n, self.bs)]
            order = torch.randperm(len(batches), generator=g).tolist()
            self._cache = {epoch: [batches[i] for i in order]}
        return self._cache[epoch]

    def batch(self, b: int) -> tuple[int, list[int]]:
        epoch, pos = divmod(b, self.per_epoch)
        return self.epoch_batches(epoch)[pos]

    def task_of(self, b: int) -> int:
        return self.batch(b)[0]

    def __iter__(self):
        for b in range(self.start, self.stop):
            yield self.batch(b)[1]

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


class PerTaskMasks(pl.Callback):
    """Restrict each batch's update to its task's rows of the trained union (see module doc)."""

    def __init__(self, task_sets: list[NeuronSet], sampler: TaskBatchSampler):
        self.task_sets, self.sampler = task_sets, sampler
        self.masks: list[dict[str, torch.Tensor]] = []  # task -> "<i>:<kind>" delta -> unit mask
        self.current = 0
        self.window: torch.Tensor | None = None  # tasks seen since the last optimizer step
        self._handles: list = []
        self._saved: dict[str, torch.Tensor] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        deltas = pl_module.neuron_deltas
        units = deltas.delta_params()  # (kind, delta, union indices, pool key)
        params = {f"{i}:{kind}": p for i, (kind, p, _, _) in enumerate(units)}
        self.masks = []
        for s in self.task_sets:
            self.masks.append({f"{i}:{kind}": torch.isin(idx.cpu(), s.indices[key]).to(p.device)
                               for i, (kind, p, idx, key) in enumerate(units)})
        self.params = params
        for pname, p in params.items():
            self._handles.append(p.register_hook(self._grad_hook(pname)))
        self.window = torch.zeros(len(self.task_sets), dtype=torch.bool)

    def _mask(self, pname: str, task: int, p: torch.Tensor) -> torch.Tensor:
        m, kind = self.masks[task][pname], pname.split(":", 1)[1]
        # units on axis 0 of a row delta [n, in] and of a bias delta [n], on axis 1 of a column delta [out, n]
        return {"w": m[:, None], "b": m, "c": m[None, :]}[kind]

    def _grad_hook(self, pname: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad * self._mask(pname, self.current, grad).to(grad.dtype)
        return hook

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.current = self.sampler.task_of(self.sampler.start + batch_idx)
        self.window[self.current] = True

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._saved = {n: p.detach().clone() for n, p in self.params.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._saved is None:
            return  # mid accumulation: no step yet
        with torch.no_grad():
            for n, p in self.params.items():
                keep = torch.zeros_like(self._mask(n, 0, p))
                for t in torch.nonzero(self.window).flatten().tolist():
                    keep = keep | self._mask(n, t, p)
                p.copy_(torch.where(keep, p, self._saved[n]))
        self._saved = None
        self.window[:] = False

    def on_fit_end(self, trainer, pl_module) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def per_task_loader(dm, names: list[str], batch_size: int, seed: int, start: int = 0, stop: int | None = None):
    """Training batches of ``dm`` (a TaskDataModule) from one task each, and their sampler."""
    from functools import partial

    from torch.utils.data import DataLoader

    from taskneurons.data.encoding import collate_sft

    dm.setup()
    data = [e for n in names for e in dm.encoded[n]["train"]]
    sampler = TaskBatchSampler([len(dm.encoded[n]["train"]) for n in names], batch_size, seed, start, stop)
    tok = dm.tokenizer
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=partial(collate_sft, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id))
    return loader, sampler
