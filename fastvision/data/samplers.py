"""Which items each batch holds: `BatchSampler` (shuffled or in order, optionally sharded for per-worker
caches, leaving out known-bad items) and `BatchRequest`, what the loader sends to a worker."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import torch

__all__ = ["BatchRequest", "BatchSampler"]


@dataclass(frozen=True)
class BatchRequest:
    """One batch to build: its position `k` in the epoch, the dataset indices, and the seed its item
    transforms draw from (so a batch is the same whichever worker, or the main process, builds it)."""

    k: int
    idxs: list[int]
    seed: int


class BatchSampler(torch.utils.data.Sampler):
    """Yield lists of indices: shuffled or in order, the last partial batch kept unless `drop_last`.

    Indices in `exclude` (unreadable images found earlier) are left out before batching, so batches stay
    full and `len` counts the batches really drawn.

    With `n_shards > 1` and shuffling (used by `cache=True` with workers), each index belongs to a
    fixed shard and batch `k` is drawn from shard `k % n_shards`. Torch deals batch `k` to worker
    `k % num_workers`, so every index is always loaded by the same worker and that worker's cache
    serves it from the second epoch on. The cost: a batch mixes items of one shard only (a fixed
    random 1/n_shards of the data), shuffled anew every epoch.
    """

    def __init__(
        self,
        n: int,
        bs: int,
        shuffle: bool,
        drop_last: bool,
        gen: torch.Generator,
        n_shards: int = 1,
        exclude: Collection[int] = (),
    ):
        self.n, self.bs, self.shuffle, self.drop_last, self.gen = n, bs, shuffle, drop_last, gen
        self.exclude = exclude  # the loader's live collection: indices found bad are left out next epoch
        self.n_shards = n_shards if shuffle else 1
        if self.n_shards > 1:  # deal a fixed random permutation's chunks to shards, as batches are dealt
            shards: list[list[torch.Tensor]] = [[] for _ in range(self.n_shards)]
            for k, chunk in enumerate(torch.randperm(n, generator=gen).split(bs)):
                shards[k % self.n_shards].append(chunk)
            self.shards = [torch.cat(s) if s else torch.zeros(0, dtype=torch.long) for s in shards]

    def _keep(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.exclude:
            return idx
        bad = torch.tensor(sorted(self.exclude), dtype=torch.long)
        return idx[~torch.isin(idx, bad)]

    def _n_batches(self, n: int) -> int:
        return n // self.bs if self.drop_last else -(-n // self.bs)

    def __len__(self) -> int:
        if self.n_shards <= 1:
            return self._n_batches(self.n - sum(1 for i in self.exclude if 0 <= i < self.n))
        return self._n_batches(sum(len(self._keep(s)) for s in self.shards))

    def __iter__(self) -> Iterator[list[int]]:
        nb = len(self)
        if self.n_shards <= 1:
            order = torch.randperm(self.n, generator=self.gen) if self.shuffle else torch.arange(self.n)
            order = self._keep(order)
            for k in range(nb):
                yield order[k * self.bs : (k + 1) * self.bs].tolist()
            return
        per_shard = []
        for s, idx in enumerate(self.shards):
            idx = self._keep(idx)
            n_slots = len(range(s, nb, self.n_shards))
            size = min(len(idx), n_slots * self.bs)
            per_shard.append(idx[torch.randperm(len(idx), generator=self.gen)][:size].split(self.bs))
        for k in range(nb):
            shard = per_shard[k % self.n_shards]
            if k // self.n_shards < len(shard):
                yield shard[k // self.n_shards].tolist()
