"""`DataBlock.summary`: print every step of building one sample and one batch, and diagnose collate errors.

The trace follows fastai's: collecting and splitting the items, each type pipeline applied to the first
training item, the item transforms on the first sample, collation (with the shapes and paths of the
items when they cannot be stacked, then the original error re-raised) and the batch transforms.
Printing is the point of this function, so it writes to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .datasets import _get_item, _name, noop
from .deferred import DeferredBatch, DeferredItem, materialize_all

__all__ = ["describe", "summarize"]


def describe(x: Any) -> str:
    """Return a one-line description: type, mode, shape, dtype (small 1-d tensors in full)."""
    if isinstance(x, Image.Image):
        return f"PILImage mode={x.mode} size={x.size[0]}x{x.size[1]}"
    if isinstance(x, torch.Tensor):
        where = "" if x.device.type == "cpu" else f" on {x.device}"
        if x.ndim <= 1 and x.numel() <= 20:
            return f"tensor({x.tolist()}){where}"
        return f"tensor {str(x.dtype).replace('torch.', '')} {'x'.join(map(str, x.shape))}{where}"
    if isinstance(x, (DeferredItem, DeferredBatch)) or callable(getattr(type(x), "describe", None)):
        return x.describe()  # vision's decoded, pending and encoded images describe themselves
    if isinstance(x, (tuple, list)) and not hasattr(x, "_fields"):
        inner = ", ".join(describe(o) for o in x)
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    if isinstance(x, Path):
        return str(x)
    r = repr(x).replace("\n", " ")
    return r if len(r) <= 120 else r[:117] + "..."


def _apply(t: Any, x: Any, split_idx: int) -> Any:
    """Apply a transform element-wise, materialising pending batches for transforms that need pixels."""
    if isinstance(x, tuple):
        return tuple(_apply(t, o, split_idx) for o in x)
    if isinstance(x, DeferredBatch) and not getattr(t, "accepts_pending", False):
        x = x.materialize()
    return t(x, split_idx) if hasattr(t, "encodes") else t(x)


def _steps(tfms: list, x: Any, split_idx: int) -> Any:
    """Print `x` then the result of each transform; return the final value."""
    print(f"  Pipeline: {' -> '.join(_name(t) for t in tfms)}")
    print(f"    starting from\n      {describe(x)}")
    for t in tfms:
        x = _apply(t, x, split_idx)
        print(f"    applying {_name(t)} gives\n      {describe(x)}")
    return x


def _diagnose(samples: list, idxs: list[int], items: Any) -> None:
    """Print why `samples` do not collate: a type that cannot be stacked or mismatched shapes."""
    print("Error! It's not possible to collate your items in a batch")
    collatable = (torch.Tensor, np.ndarray, Image.Image, DeferredItem, int, float, str, dict, np.number)
    for pos in range(len(samples[0])):
        elems = [s[pos] for s in samples]
        if not isinstance(elems[0], collatable):
            print(f"{type(elems[0]).__name__} is not collatable")
            return
        shapes = [
            o.shape if hasattr(o, "shape") else (o.size[1], o.size[0]) if isinstance(o, Image.Image) else None
            for o in elems
        ]
        if any(s is not None for s in shapes) and len({tuple(s or ()) for s in shapes}) > 1:
            print(f"Could not collate the {pos}-th members of your tuples because got the following shapes")
            print(",".join(str(torch.Size(s or ())) for s in shapes))
            for i, s in zip(idxs, shapes):
                print(f"  {describe(_get_item(items, i))}: {tuple(s or ())}")
            print(
                "Every item of a batch must have the same size: add a resize to the item transforms, "
                "e.g. item_tfms=Resize(224) (or the size your model expects)."
            )
            return
    print("Make sure all parts of your samples are tensors of the same size")


def summarize(dblock: Any, source: Any, bs: int = 4, show_batch: bool = False, **kwargs: Any) -> None:
    """Print the steps of `dblock` on `source`: one sample, one batch of `bs`; kwargs go to the DataLoaders."""
    from ..transform import Pipeline
    from .load import DataLoaders, collate

    print("Setting-up type transforms pipelines")
    dsets = dblock._datasets(source, True, fast_decode=True)  # the decoder dataloaders() uses
    dblock.check_files(dsets, kwargs.get("on_bad_image", "raise"))  # what dataloaders() would refuse

    print("\nBuilding one sample")
    first = dsets.splits[0][0]
    raw = _get_item(dsets.items, first)
    sample = []
    for g, ts in zip(dblock.getters, dsets.type_tfms):
        sample.append(_steps([f for f in [g, *ts] if f is not noop], raw, 0))
    print(f"\nFinal sample: {describe(tuple(sample))}\n")

    kwargs.setdefault("num_workers", 0)
    dls = DataLoaders.from_datasets(
        dsets, after_item=Pipeline(dblock.item_tfms), after_batch=Pipeline(dblock.batch_tfms), bs=bs, **kwargs
    )
    dl = dls.train
    print(f"Setting up after_item: {dl.after_item}")
    print(f"Setting up after_batch: {dl.after_batch}")

    print("\nBuilding one batch")
    idxs = list(range(min(bs, len(dsets.train))))
    samples = [dsets.train[i] for i in idxs]
    item_idxs = [dsets.splits[0][i] for i in idxs]
    if len(dl.after_item):
        print("Applying item_tfms to the first sample:")
        s0 = _steps(list(dl.after_item), samples[0], 0)
        print(f"\nAdding the next {len(samples) - 1} samples")
        samples = [s0] + [dl.after_item(s) for s in samples[1:]]
    else:
        print("No item_tfms to apply")
    print("\nNo before_batch transform to apply")

    print("\nCollating items in a batch")
    try:
        b = collate(samples, item_idxs, dsets.items)
    except Exception:
        _diagnose(samples, item_idxs, dsets.items)
        raise
    b = tuple(o.to(dl.device) if isinstance(o, (torch.Tensor, DeferredBatch)) else o for o in b)
    if len(dl.after_batch):
        print("\nApplying batch_tfms to the batch built")
        b = _steps(list(dl.after_batch), b, 0)
    else:
        print("\nNo batch_tfms to apply")
    if any(isinstance(o, DeferredBatch) for o in b):
        b = materialize_all(b)
        print(f"    applying materialize gives\n      {describe(b)}")
    if show_batch:
        dls.show_batch(b=b)
