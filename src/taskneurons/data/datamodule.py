"""LightningDataModule over a set of tasks: joint SFT training data, one test loader per task."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from taskneurons.data.encoding import Encoded, LengthSortedBatches, collate_eval, collate_sft, encode_example
from taskneurons.data.loading import TaskData
from taskneurons.data.sampling import StepBatchSampler
from taskneurons.errors import ConfigError


class TaskDataModule(pl.LightningDataModule):
    def __init__(self, tokenizer: Any, tasks: dict[str, TaskData], cfg: Any, seed: int = 0):
        super().__init__()
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.cfg = cfg
        self.seed = seed
        self.encoded: dict[str, dict[str, list[Encoded]]] = {}

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def setup(self, stage: str | None = None) -> None:
        if self.encoded:
            return
        enc = partial(
            encode_example,
            self.tokenizer,
            max_prompt_tokens=int(self.cfg.max_prompt_tokens),
            max_target_tokens=int(self.cfg.max_target_tokens),
        )
        for name, td in self.tasks.items():
            self.encoded[name] = {s: [enc(td.spec, ex) for ex in td.split(s)] for s in ("train", "test")}

    def train_examples(self) -> list[Encoded]:
        self.setup()
        return [e for name in self.tasks for e in self.encoded[name]["train"]]

    def batches_per_epoch(self) -> int:
        return -(-len(self.train_examples()) // int(self.cfg.batch_size))

    def train_dataloader(self, start: int = 0, stop: int | None = None, ranks: int = 1) -> DataLoader:
        """Global batches ``start .. stop-1`` (default: one epoch) of a seeded per-epoch shuffle, so a
        resumed run continues with exactly the batches an uninterrupted one would have seen; ``ranks``:
        how many ranks split each global batch (each needs at least one example of every batch)."""
        data = self.train_examples()
        sampler = StepBatchSampler(len(data), int(self.cfg.batch_size), self.seed, start, stop)
        short = sampler.short_batch(ranks)
        if short is not None:
            raise ConfigError(
                f"data.batch_size={self.cfg.batch_size} on {len(data)} training examples leaves a last batch of "
                f"{short} per epoch, fewer than the {ranks} ranks that split it; choose data.max_train or "
                f"data.batch_size so that {len(data)} % batch_size is 0 or at least {ranks}")
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=partial(collate_sft, pad_id=self.tokenizer.pad_token_id, eos_id=self.tokenizer.eos_token_id),
            num_workers=int(self.cfg.num_workers),
        )

    def test_loader(self, name: str) -> DataLoader:
        self.setup()
        data = self.encoded[name]["test"]
        sampler = LengthSortedBatches([len(e.prompt_ids) for e in data], int(self.cfg.eval_batch_size))
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate_eval, num_workers=int(self.cfg.num_workers))

    def test_dataloader(self) -> list[DataLoader]:
        return [self.test_loader(name) for name in self.tasks]
