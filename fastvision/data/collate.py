"""`collate`: stack a list of samples into one batch tuple, with errors that name the mismatched items."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..memory import batch_empty
from .deferred import DeferredItem

__all__ = ["collate", "item_path"]


def item_path(items: Any, i: int | None) -> str | None:
    """The path of item `i` when the dataset exposes a sized `.items`, else None."""
    if items is None or i is None:
        return None
    try:
        item = items[i]
    except Exception:
        return None
    return str(item) if isinstance(item, (str, os.PathLike)) else None


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(np.array(arr.transpose(2, 0, 1), order="C"))  # a writable copy


def _shape_mismatch(pos: int, shapes: list, idxs: Sequence[int] | None, items: Any) -> RuntimeError:
    groups: dict[tuple, list[int]] = {}
    for k, s in enumerate(shapes):
        groups.setdefault(tuple(s), []).append(k)
    lines = []
    for shape, ks in groups.items():
        where = []
        for k in ks[:3]:
            i = idxs[k] if idxs is not None else k
            path = item_path(items, i)
            where.append(f"{i} ({path})" if path else str(i))
        more = f" and {len(ks) - 3} more" if len(ks) > 3 else ""
        lines.append(f"  shape {tuple(shape)}: item{'s' if len(ks) > 1 else ''} {', '.join(where)}{more}")
    return RuntimeError(
        f"Cannot collate the items of a batch at tuple position {pos}: they have {len(groups)} different "
        "shapes.\n" + "\n".join(lines) + "\nEvery item of a batch must have the same size: add a resize to "
        "the item transforms, e.g. `item_tfms=Resize(224)` (or `after_item=[Resize(224), ToTensor()]`)."
    )


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack into one tensor (in shared memory inside a worker, as torch does; huge-paged elsewhere).

    Items that are C x H x W views of H x W x C memory (a `permute` without `.contiguous()`) are
    stacked as B x H x W x C, a plain copy, and returned as a B x C x H x W channels_last view.
    """
    elem = tensors[0]
    hwc = (
        elem.ndim == 3
        and not elem.is_contiguous()
        and all(t.permute(1, 2, 0).is_contiguous() for t in tensors)
    )
    if hwc:
        tensors = [t.permute(1, 2, 0) for t in tensors]
        elem = tensors[0]
    out = None
    if elem.device.type == "cpu":
        out = batch_empty((len(tensors), *elem.shape), elem.dtype, like=elem)
    b = torch.stack(tensors, 0, out=out)
    return b.permute(0, 3, 1, 2) if hwc else b


def _collate_one(pos: int, elems: list, idxs: Sequence[int] | None, items: Any) -> Any:
    e = elems[0]
    if isinstance(e, DeferredItem):
        return type(e).collate(elems)
    if isinstance(e, Image.Image):
        elems = [_pil_to_tensor(o) for o in elems]
        e = elems[0]
    if isinstance(e, np.ndarray):
        shapes = [o.shape for o in elems]
        if any(s != shapes[0] for s in shapes):
            raise _shape_mismatch(pos, shapes, idxs, items)
        return torch.from_numpy(np.stack(elems))
    if isinstance(e, torch.Tensor):
        shapes = [o.shape for o in elems]
        if any(s != shapes[0] for s in shapes):
            raise _shape_mismatch(pos, shapes, idxs, items)
        return _stack(elems)
    if isinstance(e, bool):
        return torch.tensor(elems, dtype=torch.bool)
    if isinstance(e, (int, np.integer)):
        return torch.tensor(elems, dtype=torch.long)
    if isinstance(e, (float, np.floating)):
        return torch.tensor(elems, dtype=torch.float32)
    if isinstance(e, (tuple, list)) and not isinstance(e, str):
        return type(e)(_collate_one(pos, list(z), idxs, items) for z in zip(*elems))
    if isinstance(e, dict):
        return {k: _collate_one(pos, [o[k] for o in elems], idxs, items) for k in e}
    return list(elems)  # strings, paths, None: kept as a list


def collate(samples: Sequence[Any], idxs: Sequence[int] | None = None, items: Any = None) -> tuple:
    """Stack a list of sample tuples into one batch tuple.

    Tensors, numpy arrays and PIL images are stacked (dtypes kept, so uint8 stays uint8; PIL images
    become uint8 C x H x W), ints become a long tensor, floats a float32 tensor, `DeferredItem`s whatever
    their class's `collate` makes (vision's `PendingImage`s: a `PendingBatch`). Items of different shapes
    raise a `RuntimeError` naming the tuple position, the shapes, the item indices `idxs` (and their paths
    from `items`) and the fix.
    """
    if len(samples) == 0:
        raise ValueError("collate received an empty list of samples; a batch needs at least one item.")
    samples = [s if isinstance(s, tuple) else (s,) for s in samples]
    lengths = {len(s) for s in samples}
    if len(lengths) != 1:
        raise RuntimeError(f"Cannot collate samples with different numbers of elements {sorted(lengths)}.")
    return tuple(_collate_one(p, list(col), idxs, items) for p, col in enumerate(zip(*samples)))
