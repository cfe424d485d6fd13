"""The `Transform` base class and `Pipeline`: ordered, split-aware callables on samples and batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["Transform", "Pipeline", "ToTensor", "image_to_tensor", "TRAIN", "VALID", "tfm_list"]

TRAIN, VALID = 0, 1


class Transform:
    """A step of an item or batch pipeline.

    Subclasses override `encodes(x, split_idx)` (and optionally `decodes(x)` and `setup(dl)`).
    `order` sorts a pipeline; `split_idx` is None to run on every split, 0 for training only, 1 for
    validation only. A transform receives one element of a sample or batch tuple at a time and returns
    anything it does not handle unchanged (e.g. `Resize` passes category indices through).
    Randomness must come from torch's RNG (`torch.rand`, `torch.randint`), which DataLoader workers seed.
    `prefers_workers` marks batch transforms heavy enough (a resample) to run in the DataLoader's workers
    when batches stay on the CPU (see `DataLoader`'s `batch_in_workers`).
    """

    order: int = 0
    split_idx: int | None = None
    prefers_workers: bool = False

    def __call__(self, x: Any, split_idx: int | None = None) -> Any:
        """Apply `encodes` unless this transform is restricted to another split."""
        if self.split_idx is not None and split_idx is not None and split_idx != self.split_idx:
            return x
        return self.encodes(x, split_idx)

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Transform one element; the base class returns it unchanged."""
        return x

    def decodes(self, x: Any) -> Any:
        """Undo `encodes` as far as possible for display; the base class returns `x`."""
        return x

    def setup(self, dl: Any = None) -> None:
        """Prepare from data (e.g. compute statistics); the base class does nothing."""

    @property
    def name(self) -> str:
        """The class name, used in pipeline listings."""
        return type(self).__name__

    def __repr__(self) -> str:
        args = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
        return f"{self.name}({inner})"


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """Convert a PIL image to a uint8 tensor C x H x W (greyscale 'L' gives 1 x H x W)."""
    arr = np.array(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1)  # a channels-last view: collate stacks it with one copy


class ToTensor(Transform):
    """Convert an image to a uint8 tensor C x H x W; anything else passes through.

    PIL images are converted here; any other object with a `to_tensor()` method converts itself (vision's
    decoded images return their pixels, still-encoded JPEG bytes a pending item). Every block starts its
    item transforms with it; an item resize may hand it a tensor or pending window already.
    """

    order = 5

    def encodes(self, x: Any, split_idx: int | None = None) -> Any:
        """Convert images; return anything else unchanged."""
        if isinstance(x, Image.Image):
            return image_to_tensor(x)
        to_tensor = None if isinstance(x, torch.Tensor) else getattr(x, "to_tensor", None)
        return to_tensor() if callable(to_tensor) else x


class Pipeline:
    """Apply transforms in `order` to every element of a tuple (or to a single object)."""

    def __init__(self, tfms: Iterable[Callable] | None = None, split_idx: int | None = None):
        self.tfms = sorted(list(tfms or []), key=lambda t: getattr(t, "order", 0))
        self.split_idx = split_idx

    def __call__(self, x: Any) -> Any:
        """Run every transform on `x` (element-wise when `x` is a tuple)."""
        for t in self.tfms:
            x = self._apply(t, x)
        return x

    def _apply(self, t: Callable, x: Any) -> Any:
        if isinstance(x, tuple):
            return tuple(self._apply(t, o) for o in x)
        if isinstance(t, Transform):
            return t(x, self.split_idx)
        return t(x)

    def decode(self, x: Any) -> Any:
        """Run every transform's `decodes` in reverse order."""
        for t in reversed(self.tfms):
            if isinstance(t, Transform):
                x = tuple(t.decodes(o) for o in x) if isinstance(x, tuple) else t.decodes(x)
        return x

    def setup(self, dl: Any = None) -> None:
        """Call `setup` on every transform that has one."""
        for t in self.tfms:
            if hasattr(t, "setup"):
                t.setup(dl)

    def __len__(self) -> int:
        return len(self.tfms)

    def __iter__(self):
        return iter(self.tfms)

    def __repr__(self) -> str:
        return "Pipeline: " + (" -> ".join(getattr(t, "name", repr(t)) for t in self.tfms) or "(empty)")


def tfm_list(tfms: Any) -> list:
    """Return `tfms` (None, one transform, a list, or a `Pipeline`) as a list of transforms."""
    if tfms is None:
        return []
    if isinstance(tfms, Pipeline):
        return list(tfms.tfms)
    return list(tfms) if isinstance(tfms, (list, tuple)) else [tfms]
