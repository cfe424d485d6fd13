"""`HardExampleSampling`: spend each epoch on the training items the model got most wrong.

Every epoch draws `keep` of the training set without replacement, item `i` with weight `rank_i ** beta`,
where `rank_i` in (0, 1] is the percentile of the item's loss the last time the model trained on it
(items not trained on yet rank highest). Those losses cost nothing: they are the per-item losses of the
training batches themselves, read in `after_loss`, so no extra forward pass is made (selective backprop
scores every batch with one before choosing, which on a small CPU model costs about a third of a step).
An epoch then lasts `keep` of a full one, spent on the confusable items rather than on the ones already
right; an item the model gets right is drawn rarely, until it is drawn again, its loss is read again, and
if it was forgotten it ranks high again. With `keep=0.5`, twice as many epochs take the time of the
full ones.

Single-process training only: the sampler replaces `learn.dls.train.batch_sampler` for the fit (put back in
`after_fit`, also after an error), so it does not shard across DDP ranks, and a run resumed from a
`ResumableCheckpoint` starts the loss table anew.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import torch

from ..losses import unreduced
from .core import Callback

__all__ = ["LossWeightedSampler", "HardExampleSampling"]


class LossWeightedSampler(torch.utils.data.Sampler):
    """Yield index batches of `keep` of `n` items per epoch, drawn with weight `rank(loss) ** beta`.

    `record(idxs, losses)` stores the losses seen for those items. The batches yielded are kept in order
    (`pending`) until their losses are recorded, so the loader may prefetch.

    Args:
        n: number of items.
        bs: batch size.
        keep: fraction of the items drawn each epoch (0.5).
        beta: sharpness of the preference for high losses (2.0; 0 draws uniformly).
        drop_last: leave out the last partial batch.
        generator: the random draws' generator (None: a new one seeded from torch's global RNG).
    """

    def __init__(
        self,
        n: int,
        bs: int,
        keep: float = 0.5,
        beta: float = 2.0,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ):
        if not 0 < keep <= 1:
            raise ValueError(f"keep={keep}: pass the fraction of the items drawn each epoch, in (0, 1].")
        if beta < 0:
            raise ValueError(f"beta={beta}: pass 0 (uniform draws) or a positive sharpness, e.g. 2.")
        self.n, self.bs, self.beta, self.drop_last = n, bs, beta, drop_last
        self.k = max(1, round(n * keep))
        if drop_last and self.k < bs:
            raise ValueError(
                f"keep={keep} of {n} items is {self.k}, less than one batch of {bs} with drop_last: raise keep "
                "or lower the batch size."
            )
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        self.gen = generator
        self.losses = torch.full((n,), float("inf"))
        self.pending: deque[list[int]] = deque()

    def __len__(self) -> int:
        return self.k // self.bs if self.drop_last else -(-self.k // self.bs)

    def weights(self) -> torch.Tensor:
        """Return each item's draw weight: its loss's percentile rank in (0, 1], to the power `beta`."""
        rank = torch.ones(self.n)  # items without a loss yet rank highest
        seen = self.losses.isfinite().nonzero().squeeze(1)
        order = seen[self.losses[seen].argsort()]
        rank[order] = torch.arange(1, len(order) + 1, dtype=torch.float) / self.n
        return rank**self.beta

    def __iter__(self) -> Iterator[list[int]]:
        idx = torch.multinomial(self.weights(), self.k, replacement=False, generator=self.gen)
        idx = idx[torch.randperm(self.k, generator=self.gen)]
        self.pending.clear()  # batches of an epoch cut short were never trained on
        for b in range(len(self)):
            batch = idx[b * self.bs : (b + 1) * self.bs].tolist()
            self.pending.append(batch)
            yield batch

    def record(self, losses: torch.Tensor) -> None:
        """Store the per-item `losses` of the oldest batch yielded and not yet recorded."""
        if not self.pending:
            return
        idxs = self.pending.popleft()
        if losses.ndim == 1 and len(idxs) == len(
            losses
        ):  # the loader drops unreadable items: then the batch cannot be matched
            self.losses[idxs] = losses.detach().float().cpu()


class HardExampleSampling(Callback):
    """Train each epoch on `keep` of the training items, drawn by how high their last loss was (see module).

    Args:
        keep: fraction of the training set in each epoch (0.5: epochs take half the time).
        beta: preference for high losses: item weight `rank ** beta`, rank in (0, 1] (2.0).
    """

    def __init__(self, keep: float = 0.5, beta: float = 2.0):
        self.keep, self.beta = keep, beta
        self.sampler: LossWeightedSampler | None = None

    def before_fit(self) -> None:
        """Put a `LossWeightedSampler` in the training loader for the fit."""
        dl = self.learn.dls.train
        if not hasattr(dl, "batch_sampler") or not hasattr(dl, "bs"):
            raise TypeError(
                f"HardExampleSampling needs a fastvision DataLoader for training (one with `batch_sampler` and "
                f"`bs`); got {type(dl).__name__}. Build the loaders with DataLoaders.from_dsets or a DataBlock."
            )
        old = dl.batch_sampler
        self._old = old
        self.sampler = LossWeightedSampler(
            len(dl.dataset), dl.bs, self.keep, self.beta, drop_last=bool(getattr(old, "drop_last", False))
        )
        dl.batch_sampler = self.sampler

    def after_loss(self) -> None:
        """Record the training batch's per-item losses."""
        if not self.learn.training or self.sampler is None or not self.learn.yb:
            return
        with torch.no_grad(), unreduced(self.learn.loss_func) as per_item:
            losses = per_item(self.learn.pred, *self.learn.yb)
        self.sampler.record(losses.reshape(len(losses), -1).mean(1) if losses.ndim > 1 else losses)

    def after_fit(self) -> None:
        """Put the training loader's own sampler back."""
        if self.sampler is not None:
            self.learn.dls.train.batch_sampler = self._old

    def __repr__(self) -> str:
        return f"HardExampleSampling(keep={self.keep}, beta={self.beta})"
