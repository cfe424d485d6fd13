"""`ImageDataLoaders`: one-line factories for image classification data (folders, names, regexes, tables).

Each factory builds a `DataBlock` and returns its `DataLoaders`; extra keyword arguments (bs, val_bs,
num_workers, device, on_bad_image, cache, ...) go to `DataLoaders.from_datasets`. `seed` seeds both the
random split and the loaders (shuffling, workers, augmentation). Labels are
computed once in the main process, so a lambda `label_func` works with any worker start method.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from fastcore.meta import delegates

from ..data.block import CategoryBlock, DataBlock, MultiCategoryBlock, RegressionBlock
from ..data.items import (
    VALID_PCT,
    ColReader,
    ColSplitter,
    GrandparentSplitter,
    ItemGetter,
    RandomSplitter,
    RegexLabeller,
    get_image_files,
    parent_label,
    using_attr,
)
from .block import ImageBlock, PILImage

__all__ = ["ImageDataLoaders"]


def _image_block(
    y_block: Any,
    splitter: Any,
    get_y: Any,
    item_tfms: Any,
    batch_tfms: Any,
    img_cls: type[PILImage],
    **kw: Any,
) -> DataBlock:
    return DataBlock(
        blocks=(ImageBlock(img_cls), y_block),
        splitter=splitter,
        get_y=get_y,
        item_tfms=item_tfms,
        batch_tfms=batch_tfms,
        **kw,
    )


class ImageDataLoaders:
    """Factories returning `DataLoaders` for image classification (fastai's `ImageDataLoaders` methods)."""

    @staticmethod
    @delegates(DataBlock.dataloaders, keep=True)
    def from_dblock(dblock: DataBlock, source: Any, path: str | Path = ".", **kwargs: Any):
        """Return `dblock.dataloaders(source, path=path, **kwargs)` (a `seed=None` is dropped)."""
        if kwargs.get("seed", 0) is None:
            del kwargs["seed"]
        return dblock.dataloaders(source, path=path, **kwargs)

    @classmethod
    @delegates(DataBlock.dataloaders, keep=True, but=["path"])
    def from_folder(
        cls,
        path: str | Path,
        train: str = "train",
        valid: str = "valid",
        valid_pct: float | None = None,
        seed: int | None = None,
        vocab: Sequence[Any] | None = None,
        item_tfms: Any = None,
        batch_tfms: Any = None,
        img_cls: type[PILImage] = PILImage,
        **kwargs: Any,
    ):
        """Label images by their parent folder; split by `path/train` / `path/valid`, or randomly with `valid_pct`."""
        splitter: Callable[[Sequence[Any]], Any]
        get_items: Callable[..., list[Path]]
        if valid_pct is None:
            splitter, get_items = (
                GrandparentSplitter(train, valid),
                partial(get_image_files, folders=[train, valid]),
            )
        else:
            splitter, get_items = RandomSplitter(valid_pct, seed=seed), get_image_files
        dblock = _image_block(
            CategoryBlock(vocab=vocab),
            splitter,
            parent_label,
            item_tfms,
            batch_tfms,
            img_cls,
            get_items=get_items,
        )
        return cls.from_dblock(dblock, path, path=path, seed=seed, **kwargs)

    @classmethod
    @delegates(DataBlock.dataloaders, keep=True, but=["path"])
    def from_path_func(
        cls,
        path: str | Path,
        fnames: Sequence[Any],
        label_func: Callable[[Path], Any],
        valid_pct: float = VALID_PCT,
        seed: int | None = None,
        item_tfms: Any = None,
        batch_tfms: Any = None,
        img_cls: type[PILImage] = PILImage,
        **kwargs: Any,
    ):
        """Label each file with `label_func(path)`; random split of `valid_pct`."""
        dblock = _image_block(
            CategoryBlock, RandomSplitter(valid_pct, seed=seed), label_func, item_tfms, batch_tfms, img_cls
        )
        return cls.from_dblock(dblock, [Path(f) for f in fnames], path=path, seed=seed, **kwargs)

    @classmethod
    @delegates(from_path_func, keep=True)
    def from_name_func(
        cls, path: str | Path, fnames: Sequence[Any], label_func: Callable[[str], Any], **kwargs: Any
    ):
        """Label each file with `label_func(file_name)` (a lambda is fine); other args as `from_path_func`."""
        return cls.from_path_func(path, fnames, using_attr(label_func, "name"), **kwargs)

    @classmethod
    @delegates(from_path_func, keep=True)
    def from_path_re(cls, path: str | Path, fnames: Sequence[Any], pat: str, **kwargs: Any):
        """Label each file with group 1 of the regex `pat` searched in its full path."""
        return cls.from_path_func(path, fnames, RegexLabeller(pat), **kwargs)

    @classmethod
    @delegates(from_path_func, keep=True)
    def from_name_re(cls, path: str | Path, fnames: Sequence[Any], pat: str, **kwargs: Any):
        r"""Label each file with group 1 of `pat` matched on its name (Pets: `r'^(.*)_\d+.jpg$'`)."""
        return cls.from_path_func(path, fnames, using_attr(RegexLabeller(pat), "name"), **kwargs)

    @classmethod
    @delegates(DataBlock.dataloaders, keep=True, but=["path"])
    def from_df(
        cls,
        df: Any,
        path: str | Path = ".",
        valid_pct: float = VALID_PCT,
        seed: int | None = None,
        fn_col: int | str = 0,
        folder: str | None = None,
        suff: str = "",
        label_col: int | str | Sequence[int | str] = 1,
        label_delim: str | None = None,
        y_block: Any = None,
        valid_col: int | str | None = None,
        item_tfms: Any = None,
        batch_tfms: Any = None,
        img_cls: type[PILImage] = PILImage,
        **kwargs: Any,
    ):
        """Read file names from `fn_col` (under `path/folder`) and labels from `label_col` of a DataFrame.

        `y_block` defaults to `MultiCategoryBlock` with several label columns or a `label_delim`, else
        `CategoryBlock`; the split is `ColSplitter(valid_col)` when given, else random `valid_pct`.
        """
        pref = f"{Path(path) if folder is None else Path(path) / folder}{os.sep}"
        if y_block is None:
            multi = (isinstance(label_col, (list, tuple)) and len(label_col) > 1) or label_delim is not None
            y_block = MultiCategoryBlock if multi else CategoryBlock
        splitter = RandomSplitter(valid_pct, seed=seed) if valid_col is None else ColSplitter(valid_col)
        dblock = DataBlock(
            blocks=(ImageBlock(img_cls), y_block),
            get_x=ColReader(fn_col, pref=pref, suff=suff),
            get_y=ColReader(label_col, label_delim=label_delim),
            splitter=splitter,
            item_tfms=item_tfms,
            batch_tfms=batch_tfms,
        )
        return cls.from_dblock(dblock, df, path=path, seed=seed, **kwargs)

    @classmethod
    @delegates(from_df, keep=True, but=["df", "path"])
    def from_csv(
        cls,
        path: str | Path,
        csv_fname: str = "labels.csv",
        header: Any = "infer",
        delimiter: str | None = None,
        quoting: int = csv.QUOTE_MINIMAL,
        **kwargs: Any,
    ):
        """Read `path/csv_fname` with pandas and call `from_df` (kwargs as `from_df`)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError(
                "ImageDataLoaders.from_csv needs pandas to read the CSV file: pip install pandas "
                "(or build the file and label lists yourself and use ImageDataLoaders.from_lists)."
            ) from e
        sep = {} if delimiter is None else {"delimiter": delimiter}
        df = pd.read_csv(Path(path) / csv_fname, header=header, quoting=quoting, **sep)
        return cls.from_df(df, path=path, **kwargs)

    @classmethod
    @delegates(DataBlock.dataloaders, keep=True, but=["path"])
    def from_lists(
        cls,
        path: str | Path,
        fnames: Sequence[Any],
        labels: Sequence[Any],
        valid_pct: float = VALID_PCT,
        seed: int | None = None,
        y_block: Any = None,
        item_tfms: Any = None,
        batch_tfms: Any = None,
        img_cls: type[PILImage] = PILImage,
        **kwargs: Any,
    ):
        """Pair `fnames` with `labels`; y_block inferred: lists -> multi-category, floats -> regression."""
        if len(fnames) != len(labels):
            raise ValueError(
                f"from_lists got {len(fnames)} fnames and {len(labels)} labels; give one label per file."
            )
        if y_block is None and len(labels):
            first = labels[0]
            if isinstance(first, (list, tuple)):
                y_block = MultiCategoryBlock
            else:
                y_block = RegressionBlock if isinstance(first, float) else CategoryBlock
        dblock = DataBlock(
            blocks=(ImageBlock(img_cls), y_block or CategoryBlock),
            get_x=ItemGetter(0),
            get_y=ItemGetter(1),
            splitter=RandomSplitter(valid_pct, seed=seed),
            item_tfms=item_tfms,
            batch_tfms=batch_tfms,
        )
        return cls.from_dblock(dblock, list(zip(fnames, labels)), path=path, seed=seed, **kwargs)
