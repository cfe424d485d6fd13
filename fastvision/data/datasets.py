"""`Datasets`: the labelled samples a `DataBlock` builds (targets computed once, images decoded lazily)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .items import label_error_context

__all__ = ["Datasets", "noop", "in_worker"]


def noop(x: Any) -> Any:
    """Return `x` unchanged (the default getter)."""
    return x


def _name(f: Any) -> str:
    """A short name for a getter or transform, used in descriptions and the summary."""
    if hasattr(f, "__self__") and isinstance(f.__self__, type):
        return f"{f.__self__.__name__}.{f.__name__}"
    return getattr(f, "__name__", None) or type(f).__name__


def in_worker(t: Any) -> bool:
    """True when type transform `t` must run per item in the loader workers (image decoding).

    The mark may sit on the callable, or on the class of a bound classmethod such as `PILImage.create`.
    """
    owner = getattr(t, "__self__", None)
    return bool(getattr(t, "in_worker", False) or getattr(owner, "in_worker", False))


def _get_item(items: Any, i: int) -> Any:
    return items.iloc[i] if hasattr(items, "iloc") else items[i]


def _reraise(e: Exception, what: str, item: Any, i: int, n: int) -> Exception:
    """Return `e`'s type with the item position appended (a `ValueError` when the type cannot be rebuilt)."""
    msg = f"{e} [{what} item {i} of {n}: {str(item)!r}]"
    try:
        return type(e)(msg)
    except Exception:
        return ValueError(msg)


class _Split(torch.utils.data.Dataset):
    """One split of a `Datasets`: `ds[i]` is the sample tuple; `split_idx` 0 train, 1 valid."""

    def __init__(self, dsets: Datasets, idxs: Sequence[int], split_idx: int | None):
        self.dsets, self.idxs, self.split_idx = dsets, list(idxs), split_idx

    def __len__(self) -> int:
        return len(self.idxs)

    def __getitem__(self, i: int) -> tuple:
        return self.dsets[self.idxs[i]]

    @property
    def items(self) -> Any:
        """The items of this split."""
        its = self.dsets.items
        return its.iloc[self.idxs] if hasattr(its, "iloc") else [its[i] for i in self.idxs]

    def target_labels(self, idxs: Sequence[int] | None = None) -> list:
        """The decoded targets of this split's items (all, or positions `idxs`), without loading inputs."""
        return self.dsets.target_labels(self.idxs if idxs is None else [self.idxs[i] for i in idxs])

    def __getattr__(self, name: str) -> Any:
        if name in ("vocab", "c", "n_inp", "loss_func", "decode", "type_tfms", "test_set"):
            return getattr(self.dsets, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<{['train', 'valid'][self.split_idx] if self.split_idx in (0, 1) else 'split'}: {len(self)} items>"


class Datasets:
    """Samples of a DataBlock: `ds[i]` is a tuple (one element per block) after getters and type transforms.

    Args:
        items: the items (a list, or a pandas DataFrame whose rows are items).
        getters: one callable per block turning an item into that block's raw value.
        type_tfms: one list of type transforms per block.
        splits: lists of item indices, (train, valid); default: every item in one training split.
        n_inp: how many leading elements are inputs (default all but the last).

    Getters run eagerly for every item; the type transforms of a block run eagerly too (with `setup` on the
    training values first) unless one is marked `in_worker` (image decoding), in which case they run in
    `__getitem__`, i.e. in the loader workers: a `Datasets` of images holds paths, never pixels.
    """

    def __init__(self, items, getters, type_tfms, splits=None, n_inp: int | None = None):
        self.items = items if hasattr(items, "iloc") else list(items)
        n = len(self.items)
        self.splits = [list(s) for s in splits] if splits is not None else [list(range(n)), []]
        self.n_inp = n_inp if n_inp is not None else max(1, len(getters) - 1)
        self.type_tfms = [list(t) for t in type_tfms]
        self._getters = list(getters)
        self.in_worker = [any(in_worker(t) for t in ts) for ts in self.type_tfms]
        raw = [_get_item(self.items, i) for i in range(n)]
        self._cols = [self._column(b, g, raw) for b, g in enumerate(self._getters)]

    def _column(self, b: int, getter: Callable, raw: list) -> list:
        n, vals = len(raw), []
        for i, o in enumerate(raw):
            try:
                vals.append(getter(o))
            except Exception as e:
                if b >= self.n_inp:
                    raise label_error_context(e, o, i, n, [str(x) for x in raw[:3]]) from e
                raise _reraise(e, f"get_x/getter of block {b} on", o, i, n) from e
        if self.in_worker[b]:
            return vals
        for t in self.type_tfms[b]:
            if hasattr(t, "setup"):
                t.setup([vals[i] for i in self.splits[0]])
            out = []
            for i, v in enumerate(vals):
                try:
                    out.append(t(v))
                except Exception as e:
                    raise _reraise(e, f"{_name(t)} on", raw[i], i, n) from e
            vals = out
        return vals

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_getters"}  # workers never need getters

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        out = []
        for b, col in enumerate(self._cols):
            v = col[i]
            if self.in_worker[b]:
                for t in self.type_tfms[b]:
                    v = t(v)
            out.append(v)
        return tuple(out)

    def subset(self, i: int) -> _Split:
        """Return split `i` (0 train, 1 valid) as a torch Dataset."""
        return _Split(self, self.splits[i], i)

    @property
    def train(self) -> _Split:
        """The training split."""
        return self.subset(0)

    @property
    def valid(self) -> _Split:
        """The validation split."""
        return self.subset(1)

    def _target_attr(self, name: str) -> Any:
        for ts in reversed(self.type_tfms):
            for t in ts:
                v = getattr(t, name, None)
                if v is not None:
                    return v
        return None

    @property
    def vocab(self) -> list | None:
        """The vocab of the last block that has one (the target), or None."""
        return self._target_attr("vocab")

    @property
    def c(self) -> int | None:
        """The number of classes / outputs of the target."""
        return self._target_attr("c")

    @property
    def loss_func(self) -> Any:
        """A new loss instance inferred from the target block, or None."""
        return self._target_attr("loss_func")

    @property
    def tfms(self) -> list[str]:
        """One description per block: 'getter -> type tfm -> ...'."""
        getters = getattr(self, "_getters", [noop] * len(self.type_tfms))  # dropped when pickled
        steps = [[f for f in [g, *ts] if f is not noop] for g, ts in zip(getters, self.type_tfms)]
        return [" -> ".join(_name(f) for f in fs) or "(none)" for fs in steps]

    def target_labels(self, idxs: Sequence[int] | None = None) -> list:
        """The decoded target (e.g. the class name) of every item, or of items `idxs`, without loading inputs.

        Targets are built when the `Datasets` is, so this reads no image (`decode(ds[i])` would decode one).
        """
        b, idxs = self.n_inp, range(len(self)) if idxs is None else idxs
        if self.in_worker[b]:  # a target made in the workers: only a full sample has it
            return [self.decode(self[i])[b] for i in idxs]
        return [self._decode_block(b, self._cols[b][i]) for i in idxs]

    def missing_files(self) -> list[tuple[int, str]]:
        """The `(index, path)` of every input that names a file which does not exist (one `stat` each).

        Only inputs decoded in the loader workers (image paths) are looked at; they are never opened here.
        """
        out = []
        for b in range(self.n_inp):
            if self.in_worker[b]:
                out += [
                    (i, str(v))
                    for i, v in enumerate(self._cols[b])
                    if isinstance(v, (str, os.PathLike)) and not os.path.exists(v)
                ]
        return sorted(out)

    def _decode_block(self, b: int, x: Any) -> Any:
        for t in reversed(self.type_tfms[b]):
            x = t.decodes(x) if hasattr(t, "decodes") else x
        return x

    def decode(self, sample: Sequence[Any]) -> tuple:
        """Decode a sample tuple element-wise (category index -> label); images are returned unchanged."""
        return tuple(self._decode_block(b, x) for b, x in enumerate(sample[: len(self.type_tfms)]))

    def test_set(self, items: Sequence[Any], with_labels: bool = False) -> Datasets:
        """Return a `Datasets` of new items (all in the validation split) with the same type transforms.

        File paths, images, arrays and tensors go straight to the type transforms; other items (rows) go
        through the getters first. Without labels only the input blocks are kept.
        """
        nb = len(self.type_tfms) if with_labels else self.n_inp
        first = items[0] if len(items) else None
        direct = isinstance(first, (str, Path, bytes, Image.Image, torch.Tensor)) or hasattr(
            first, "__array_interface__"
        )
        getters = [noop if direct and b < self.n_inp else g for b, g in enumerate(self._getters[:nb])]
        return Datasets(items, getters, self.type_tfms[:nb], [[], list(range(len(items)))], n_inp=self.n_inp)

    def __repr__(self) -> str:
        return f"Datasets: {len(self)} items, splits {[len(s) for s in self.splits]}, blocks {self.tfms}"
