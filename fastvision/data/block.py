"""Blocks and `DataBlock`: from a source to labelled samples and DataLoaders.

Split across modules to stay small, all re-exported here: target encoders (`CategoryMap`, `Categorize`,
...) in `data/category.py`, `Datasets` in `data/datasets.py`, the `summary` tracer in `data/summary.py`.

A `DataBlock` turns a source (a folder, a DataFrame, a list) into a `Datasets`: `get_items` lists the
items, `splitter` splits them, each block's getter and type transforms turn an item into one element of
the sample tuple. Targets (every block whose type transforms are not marked `in_worker`) are computed
once, eagerly, in the main process: label errors surface when the `Datasets` is built, the category vocab
comes from the training split, and DataLoader workers never need to pickle a user's `get_y` lambda. Image
decoding (`PILImage.create`) stays lazy and runs per item in the workers.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from fastcore.meta import delegates

from ..transform import Pipeline, ToTensor, Transform
from ..utils import listify
from .category import (
    Categorize,
    CategoryMap,
    EncodedMultiCategorize,
    MultiCategorize,
    RegressionSetup,
)
from .datasets import Datasets, _name, in_worker, noop
from .items import RandomSplitter
from .load import DataLoaders

__all__ = [
    "TransformBlock", "CategoryMap", "Categorize",
    "MultiCategorize", "EncodedMultiCategorize", "RegressionSetup", "CategoryBlock", "MultiCategoryBlock",
    "RegressionBlock", "Datasets", "DataBlock",
]  # fmt: skip


def _loader_decoders(type_tfms: list[list], item_tfms: list, on_device: bool = False) -> list[list]:
    """Let each block's decoder choose what decodes inside the loaders, given the item transforms.

    A block whose only type transform is a bound classmethod of a class with `loader_decoder` (vision's
    `PILImage`) gets `cls.loader_decoder(tfm, item_tfms, on_device)` instead, unless that returns None.
    """
    out, replaced = [], False
    for ts in type_tfms:
        owner = getattr(ts[0], "__self__", None) if len(ts) == 1 else None
        hook = getattr(owner, "loader_decoder", None) if isinstance(owner, type) else None
        new = hook(ts[0], item_tfms, on_device) if hook is not None else None
        replaced = replaced or new is not None
        out.append(ts if new is None else [new])
    if on_device and not replaced:
        raise ValueError(
            "decode_on_device=True needs an image block decoding files (ImageBlock()): no block of this "
            "DataBlock reads images. Pass decode_on_device=False."
        )
    return out


def _copy_with(t: Transform, **attrs: Any) -> Transform:
    """A shallow copy of `t` with `attrs` set."""
    t = copy.copy(t)
    for k, v in attrs.items():
        setattr(t, k, v)
    return t


def _refuse_missing_files(dsets: Datasets) -> None:
    """Raise before training when inputs name files that do not exist (instead of failing mid-epoch)."""
    missing = dsets.missing_files()
    if missing:
        listed = ", ".join(f"{p!r} (item {i})" for i, p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise FileNotFoundError(
            f"{len(missing)} of {len(dsets)} items name files that do not exist: {listed}{more}. Check get_x (or "
            "the table's file names and the path/folder they are joined to), or pass on_bad_image='skip' to "
            "leave them out."
        )


def _lazy_resizes(item_tfms: list) -> list:
    """Copies of the item resizes with `lazy=True`: the batch stage resamples them (on the device)."""
    out = []
    for t in item_tfms:
        if isinstance(t, Transform) and hasattr(t, "lazy") and not t.lazy:
            t = _copy_with(t, lazy=True, to_tensor=False)
        out.append(t)
    return out


# ------------------------------------------------------------------------------------------ blocks
class TransformBlock:
    """Hold the type, item and batch transforms a kind of data needs; `ToTensor` is always an item tfm.

    Args:
        type_tfms: turn the getter's output into a sample element (e.g. `PILImage.create`, `Categorize`).
        item_tfms: default item transforms merged into the DataBlock's.
        batch_tfms: default batch transforms merged into the DataBlock's.
        dl_type: a DataLoader class for this kind of data (the last block's wins).
        dls_kwargs: extra keyword arguments for `dataloaders`.
    """

    def __init__(
        self,
        type_tfms: Any = None,
        item_tfms: Any = None,
        batch_tfms: Any = None,
        dl_type: type | None = None,
        dls_kwargs: dict | None = None,
    ):
        self.type_tfms = listify(type_tfms)
        self.item_tfms = [ToTensor()] + listify(item_tfms)
        self.batch_tfms = listify(batch_tfms)
        self.dl_type, self.dls_kwargs = dl_type, dict(dls_kwargs or {})

    @property
    def in_worker(self) -> bool:
        """True when a type transform must run per item in the workers (image decoding)."""
        return any(in_worker(t) for t in self.type_tfms)

    def __repr__(self) -> str:
        return f"TransformBlock(type_tfms=[{', '.join(_name(t) for t in self.type_tfms)}])"


# ------------------------------------------------------------------------------------------ target blocks
def CategoryBlock(
    vocab: Iterable[Any] | None = None, sort: bool = True, add_na: bool = False
) -> TransformBlock:
    """Return a block for single-label classification targets (`Categorize`)."""
    return TransformBlock(type_tfms=Categorize(vocab=vocab, sort=sort, add_na=add_na))


def MultiCategoryBlock(encoded: bool = False, vocab: Iterable[Any] | None = None, add_na: bool = False):
    """Return a block for multi-label targets: a float one-hot vector per item."""
    if encoded:
        if vocab is None:
            raise ValueError("MultiCategoryBlock(encoded=True) needs vocab=[...] naming the one-hot columns.")
        return TransformBlock(type_tfms=EncodedMultiCategorize(vocab))
    return TransformBlock(type_tfms=MultiCategorize(vocab=vocab, add_na=add_na))


def RegressionBlock(n_out: int | None = None) -> TransformBlock:
    """Return a block for float regression targets (`n_out` outputs, inferred when None)."""
    return TransformBlock(type_tfms=RegressionSetup(c=n_out))


# ------------------------------------------------------------------------------------------ DataBlock
def _merge_key(o: Any) -> Any:
    """Group key for de-duplication: classes by themselves, functions by identity, methods by name."""
    if isinstance(o, type):
        return o
    if isinstance(o, types.FunctionType):
        return id(o)
    if inspect.ismethod(o):
        return o.__qualname__
    return type(o)


def _merge_tfms(*tfm_lists: Any) -> list:
    """Merge transform lists, keeping the last of each class (at the first one's place), sorted by order."""
    groups: dict[Any, Any] = {}
    for t in (t for tl in tfm_lists for t in listify(tl)):
        groups[_merge_key(t)] = t
    res = [t() if isinstance(t, type) else t for t in groups.values()]
    return sorted(res, key=lambda t: getattr(t, "order", 0))


def _set_lazy(item_tfms: list, batch_tfms: list) -> list:
    """Copy item resizes with `lazy=True` when a batch transform resamples and nothing after them needs pixels;
    otherwise with `to_tensor=True` (resize straight to a uint8 tensor) when only `ToTensor` follows them."""
    resampled = any(getattr(t, "resamples", None) is True for t in batch_tfms)
    out = []
    for t in item_tfms:
        later = [u for u in item_tfms if getattr(u, "order", 0) > getattr(t, "order", 0)]
        only_to_tensor = all(isinstance(u, ToTensor) for u in later)
        safe = all(isinstance(u, ToTensor) or getattr(u, "accepts_pending", False) for u in later)
        if hasattr(t, "lazy") and isinstance(t, Transform) and resampled and safe:
            t = _copy_with(t, lazy=True)
        elif hasattr(t, "to_tensor") and isinstance(t, Transform) and only_to_tensor and later:
            t = _copy_with(t, to_tensor=True)
        out.append(t)
    return out


def _no_items_error(get_items: Any, source: Any) -> ValueError:
    from .items import image_extensions

    exts = sorted(image_extensions)
    shown = ", ".join(exts[:12]) + (f", ... ({len(exts)} in all)" if len(exts) > 12 else "")
    where = Path(source).resolve() if isinstance(source, (str, Path)) else source
    return ValueError(
        f"{_name(get_items)}({str(source)!r}) found no items in '{where}': check the path and extensions; "
        f"get_image_files looks for {shown}."
    )


class DataBlock:
    """Describe how to turn a source into labelled samples and DataLoaders (the fastai DataBlock API).

    Args:
        blocks: one block per sample element (default two `TransformBlock`s); classes/functions are called.
        dl_type: DataLoader class (default: the last block's).
        getters: one getter per block (default identity); `get_x` / `get_y` replace the input / target ones.
        n_inp: number of inputs (default all blocks but the last).
        item_tfms: item transforms, merged with the blocks' defaults, de-duplicated by class (the last wins).
        batch_tfms: batch transforms, merged like `item_tfms`.
        get_items: `source -> items` (default: the source is the items).
        splitter: `items -> (train_idxs, valid_idxs)` (default `RandomSplitter()`).
        get_x: getter of the inputs (one function per input block, or a `Pipeline`).
        get_y: getter of the targets (one function per target block, or a `Pipeline`).
    """

    get_items = splitter = get_x = get_y = None  # also overridable as methods of a subclass

    def __init__(
        self,
        blocks: Any = None,
        dl_type: type | None = None,
        getters: Sequence[Callable] | None = None,
        n_inp: int | None = None,
        item_tfms: Any = None,
        batch_tfms: Any = None,
        get_items: Callable | None = None,
        splitter: Callable | None = None,
        get_x: Callable | None = None,
        get_y: Callable | None = None,
        **kwargs: Any,
    ):
        if kwargs:
            valid = [
                p for p in inspect.signature(DataBlock.__init__).parameters if p not in ("self", "kwargs")
            ]
            hints = [
                f"{k!r} (did you mean {m[0]!r}?)"
                if (m := difflib.get_close_matches(k, valid, 1))
                else repr(k)
                for k in kwargs
            ]
            raise TypeError(
                f"DataBlock got invalid keyword arguments {', '.join(hints)}; valid ones: {', '.join(valid)}."
            )
        blocks = [TransformBlock, TransformBlock] if blocks is None else listify(blocks)
        self.blocks = [b() if callable(b) else b for b in blocks]
        self.n_inp = n_inp if n_inp is not None else max(1, len(self.blocks) - 1)
        for name, f in (("get_items", get_items), ("splitter", splitter), ("get_x", get_x), ("get_y", get_y)):
            if f is not None:
                setattr(self, name, f)
        self.getters = list(getters) if getters is not None else [noop] * len(self.blocks)
        if len(self.getters) != len(self.blocks):
            raise ValueError(
                f"getters has {len(self.getters)} functions for {len(self.blocks)} blocks; give one per block."
            )
        n_out = len(self.blocks) - self.n_inp
        for name, fs, lo, n in (
            ("get_x", self.get_x, 0, self.n_inp),
            ("get_y", self.get_y, self.n_inp, n_out),
        ):
            if fs is None:
                continue
            fs = listify(fs)
            if len(fs) != n:
                raise ValueError(
                    f"{name} has {len(fs)} functions for {n} {'input' if lo == 0 else 'target'} block(s); give one "
                    "per block, or chain several steps into one with Pipeline([f, g])."
                )
            self.getters[lo : lo + n] = fs
        self.dl_type = dl_type or next(
            (b.dl_type for b in reversed(self.blocks) if b.dl_type is not None), None
        )
        self.dls_kwargs = {k: v for b in self.blocks for k, v in b.dls_kwargs.items()}
        self._build_tfms(item_tfms, batch_tfms)

    def _build_tfms(self, item_tfms: Any, batch_tfms: Any) -> None:
        self.default_item_tfms = [t for b in self.blocks for t in b.item_tfms]
        self.default_batch_tfms = [t for b in self.blocks for t in b.batch_tfms]
        self.batch_tfms = _merge_tfms(self.default_batch_tfms, batch_tfms)
        self.item_tfms = _set_lazy(_merge_tfms(self.default_item_tfms, item_tfms), self.batch_tfms)

    def new(self, item_tfms: Any = None, batch_tfms: Any = None) -> DataBlock:
        """Return a copy with the blocks' default transforms merged with new `item_tfms` / `batch_tfms`."""
        res = copy.copy(self)
        res._build_tfms(item_tfms, batch_tfms)
        return res

    def datasets(self, source: Any, verbose: bool = False) -> Datasets:
        """Collect the items of `source`, split them and build the labelled `Datasets` (images stay paths)."""
        return self._datasets(source, verbose, fast_decode=False)

    def _datasets(self, source: Any, verbose: bool, fast_decode: bool, on_device: bool = False) -> Datasets:
        """Build the `Datasets`; with `fast_decode`, images decode straight to tensors when the item
        transforms allow it (what `dataloaders` uses; `datasets` keeps fastai's PIL images), and with
        `on_device` the workers only read JPEG bytes."""
        if verbose:
            print(f"Collecting items from {source}")
        items = self.get_items(source) if self.get_items is not None else source
        if len(items) == 0:
            if self.get_items is None:
                raise ValueError(
                    "The source has no items: pass a non-empty list, or set get_items= (e.g. get_image_files)."
                )
            raise _no_items_error(self.get_items, source)
        splitter = self.splitter if self.splitter is not None else RandomSplitter()
        splits = [[int(i) for i in s] for s in splitter(items)]
        if verbose:
            print(f"Found {len(items)} items")
            print(f"{len(splits)} datasets of sizes {','.join(str(len(s)) for s in splits)}")
        self._check_splits(splits, splitter, len(items))
        type_tfms = [copy.deepcopy(b.type_tfms) for b in self.blocks]
        if fast_decode:
            item_tfms = _lazy_resizes(self.item_tfms) if on_device else self.item_tfms
            type_tfms = _loader_decoders(type_tfms, item_tfms, on_device)
        dsets = Datasets(items, self.getters, type_tfms, splits, n_inp=self.n_inp)
        if verbose:
            for g, ts in zip(self.getters, type_tfms):
                print("Setting up Pipeline: " + " -> ".join(_name(t) for t in [g, *ts] if t is not noop))
        return dsets

    @staticmethod
    def _check_splits(splits: list, splitter: Any, n: int) -> None:
        sizes = f"{splitter!r} gave {len(splits[0])} training and {len(splits[1]) if len(splits) > 1 else 0} validation items of {n}"
        if len(splits[0]) == 0:
            raise ValueError(
                f"The training split is empty: {sizes}. Check the splitter: valid_pct must be below 1, and "
                "GrandparentSplitter's train_name must match a folder name."
            )
        if len(splits) < 2 or len(splits[1]) == 0:
            pct = getattr(splitter, "valid_pct", None)
            if isinstance(pct, float) and 0 < pct * n < 1:  # RandomSplitter rounds its share down
                fix = (
                    f"valid_pct={pct} of {n} items rounds down to none: use valid_pct={math.ceil(100 / n) / 100:g} "
                    "or more, or more items"
                )
            else:
                fix = (
                    "Use a splitter that returns validation items (e.g. RandomSplitter(valid_pct=0.2); "
                    "GrandparentSplitter's valid_name must match a folder)"
                )
            raise ValueError(f"The validation split is empty: {sizes}. {fix}.")

    @delegates(DataLoaders.from_datasets, keep=True, but=["after_item", "after_batch"])
    def dataloaders(
        self,
        source: Any,
        path: str | Path = ".",
        verbose: bool = False,
        decode_on_device: bool = False,
        **kwargs: Any,
    ):
        """Build the `Datasets` of `source` and return `DataLoaders` with this block's item and batch tfms.

        Args:
            source: passed to `get_items` (a folder, a DataFrame, a list).
            path: the `DataLoaders.path` (where a Learner saves models).
            verbose: print the collecting steps.
            decode_on_device: workers only read JPEG bytes; each batch is decoded on the loaders' device
                (nvJPEG on a GPU, libjpeg-turbo on the CPU) and its crop windows folded into the one batch
                resample. Other formats, and files the device decoder refuses, are decoded on the CPU.
                Needs item_tfms made of one `Resize`/`RandomResizedCrop` (False).
            **kwargs: for `DataLoaders.from_datasets` (bs, val_bs, shuffle, num_workers, device,
                on_bad_image, cache, seed, drop_last) with its defaults.
        """
        dsets = self._datasets(source, verbose, fast_decode=True, on_device=decode_on_device)
        kw = {**self.dls_kwargs, **kwargs}
        self.check_files(dsets, kw.get("on_bad_image", "raise"))
        item_tfms = _lazy_resizes(self.item_tfms) if decode_on_device else self.item_tfms
        return DataLoaders.from_datasets(
            dsets, after_item=Pipeline(item_tfms), after_batch=Pipeline(self.batch_tfms), path=path, **kw
        )

    def check_files(self, dsets: Datasets, on_bad_image: str = "raise") -> None:
        """Raise a `FileNotFoundError` when input file names that come from a table or a function (not a
        listing of the disk by `get_items`) name missing files; nothing to do with `on_bad_image='skip'`."""
        if on_bad_image == "raise" and (self.get_items is None or self.get_x is not None):
            _refuse_missing_files(dsets)

    def summary(self, source: Any, bs: int = 4, show_batch: bool = False, **kwargs: Any) -> None:
        """Print each step of building one sample and one batch from `source`, diagnosing collate errors."""
        from .summary import summarize

        summarize(self, source, bs=bs, show_batch=show_batch, **kwargs)

    def __repr__(self) -> str:
        return (
            f"DataBlock(blocks={self.blocks}, n_inp={self.n_inp},\n  item_tfms={Pipeline(self.item_tfms)},\n"
            f"  batch_tfms={Pipeline(self.batch_tfms)})"
        )
