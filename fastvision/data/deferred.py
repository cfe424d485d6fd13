"""Items and batches whose tensor is made later: the protocol the loader drives and a data kind implements.

The loader knows nothing about how such a tensor is made. Vision's presizing implements it: an item is a
window of native pixels (`vision.lazy.PendingImage`), a batch is one canvas plus per-item geometry
(`PendingBatch`), and the batch's single resample makes the tensor.

- `collate` gives a list of `DeferredItem`s to their class's `collate` (in the worker).
- The loader moves a `DeferredBatch` to its device (`to`), lets it `finish` the work that must happen there
  (decoding on the device), runs the batch transforms that declare `accepts_pending = True` on it, and
  `materialize`s it for the first transform that does not (and at the end of the pipeline).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DeferredItem", "DeferredBatch", "materialize_all"]


class DeferredItem:
    """An item whose pixels the batch stage produces; its class collates a list of them."""

    def describe(self) -> str:
        """One line for `DataBlock.summary`."""
        return type(self).__name__

    @classmethod
    def collate(cls, items: list[Any]) -> DeferredBatch:
        """Collate `items` (all of this class) into one batch."""
        raise NotImplementedError(f"{cls.__name__} must define collate(items)")


class DeferredBatch:
    """A batch whose tensor is made on its device, once, by `materialize`."""

    def describe(self) -> str:
        """One line for `DataBlock.summary`."""
        return type(self).__name__

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DeferredBatch:
        """Move the batch to `device`."""
        raise NotImplementedError(f"{type(self).__name__} must define to(device)")

    def pin_memory(self) -> DeferredBatch:
        """Pin its host tensors (torch's DataLoader calls this with `pin_memory=True`)."""
        return self

    def finish(self) -> DeferredBatch:
        """Do what must happen on the batch's device before the batch transforms (nothing by default)."""
        return self

    def materialize(self) -> torch.Tensor:
        """Return the batch tensor at its promised size."""
        raise NotImplementedError(f"{type(self).__name__} must define materialize()")


def materialize_all(x: Any) -> Any:
    """Materialize every deferred batch in `x` (a tuple or one element); return the rest unchanged."""
    if isinstance(x, DeferredBatch):
        return x.materialize()
    if isinstance(x, tuple):
        return tuple(materialize_all(o) for o in x)
    return x
