"""Addressable training batches: the data order is a pure function of (seed, global batch index).

A resumed run continues with exactly the batches an uninterrupted one would have seen, and under a
distributed strategy every rank reads its share of the same global batch, so W ranks together see what
one process sees.
"""

from __future__ import annotations

import math

import torch


def _rank_and_world() -> tuple[int, int]:
    # read at iteration time: Lightning starts the process group after the loader is built
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Global batches ``start .. stop-1`` of a per-epoch seeded shuffle of ``n`` examples.

    With a process group of W ranks, rank r yields examples ``r, r+W, ...`` of each global batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, stop: int | None = None):
        self.n, self.bs, self.seed = n, batch_size, seed
        self.per_epoch = math.ceil(n / batch_size)
        self.start, self.stop = start, self.per_epoch if stop is None else stop

    def _perm(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self):
        rank, world = _rank_and_world()
        cache: dict[int, torch.Tensor] = {}
        for b in range(self.start, self.stop):
            epoch, pos = divmod(b, self.per_epoch)
            perm = cache.setdefault(epoch, self._perm(epoch))
            yield perm[pos * self.bs : (pos + 1) * self.bs][rank::world].tolist()

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def short_batch(self, ranks: int) -> int | None:
        """The size of a global batch in ``start .. stop-1`` too small to give each of ``ranks`` ranks an
        example (the last, partial batch of an epoch), or None when every batch can be split."""
        tail = self.n - (self.per_epoch - 1) * self.bs
        if ranks <= 1 or tail >= ranks or self.stop <= self.start:
            return None
        last = self.per_epoch - 1  # index of the partial batch within an epoch
        hits = self.stop - self.start >= self.per_epoch or (last - self.start) % self.per_epoch < self.stop - self.start
        return tail if hits else None
