"""Find items on disk, label them and split them: `get_image_files`, labellers and splitters.

Every getter, labeller and splitter here is a plain class defined at module level, so it pickles and
works in DataLoader workers started with `spawn`. File lists are sorted, so a seeded split is the same
on every filesystem.

Labelling errors: a labeller that cannot label an item raises `LabelError` (a `ValueError`) naming the
value and the pattern or column. It does not know the item's position; the caller that loops over the
items (the `DataBlock`) re-raises `label_error_context(exc, item, index, total, examples)` from the
original error, which adds "(item i of n)" (`i` is the 0-based index into the items) and the first items.
"""

from __future__ import annotations

import inspect
import math
import mimetypes
import os
import re
from collections.abc import Callable, Iterable, Sequence, Sized
from pathlib import Path
from typing import Any

import torch

from ..utils import listify

PathLike = str | Path
Names = str | Iterable[str] | None  # one name or several
Split = tuple[list[int], list[int]]

# fastai's validation share, the default of every random or end split (and of `ImageDataLoaders.from_*`).
VALID_PCT = 0.2

__all__ = [
    "image_extensions", "get_files", "get_image_files", "FileGetter", "ImageGetter",
    "LabelError", "label_error_context", "parent_label", "RegexLabeller", "UsingAttr", "using_attr",
    "ColReader", "ItemGetter", "AttrGetter",
    "RandomSplitter", "IndexSplitter", "EndSplitter", "GrandparentSplitter",
    "FuncSplitter", "MaskSplitter", "FileSplitter", "ColSplitter", "RandomSubsetSplitter",
]  # fmt: skip

_ALWAYS_IMAGE = {".webp", ".tif", ".tiff", ".jpg", ".jpeg", ".png", ".gif", ".bmp"}
_VECTOR = {".svg", ".svgz"}  # image/* MIME types PIL cannot decode: get_image_files must not return them
image_extensions: set[str] = (
    {ext for ext, typ in mimetypes.types_map.items() if typ.startswith("image/")} | _ALWAYS_IMAGE
) - _VECTOR


class _Callable:
    """Give callables a repr built from their constructor arguments (shown by `DataBlock.summary`)."""

    def __repr__(self) -> str:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        args = [(n, repr(getattr(self, n, None))) for n in names]
        shown = [f"{n}={r if len(r) <= 60 else r[:56] + ' ...'}" for n, r in args]  # long masks, lists
        return f"{type(self).__name__}({', '.join(shown)})"


# ---------------------------------------------------------------------------------------------- files
def _filter_names(folder: PathLike, names: Iterable[str], extensions: set[str]) -> list[Path]:
    folder = Path(folder)
    return [
        folder / f
        for f in names
        if not f.startswith(".") and (not extensions or f".{f.split('.')[-1].lower()}" in extensions)
    ]


def _is_loop(dirpath: str, top: str, real_of: dict[str, str]) -> bool:
    """Tell whether `dirpath` resolves to the same folder as one of its ancestors (a symlink loop)."""
    real = real_of[dirpath] = os.path.realpath(dirpath)
    parent = dirpath
    while parent != top:
        parent = os.path.dirname(parent)
        if real_of.get(parent) == real:
            return True
    return False


def get_files(
    path: PathLike,
    extensions: Names = None,
    recurse: bool = True,
    folders: Names = None,
    followlinks: bool = True,
) -> list[Path]:
    """Return the files under `path` with one of `extensions`, sorted by path.

    Args:
        path: the folder to search.
        extensions: wanted extensions ('.jpg' or 'jpg'), compared case-insensitively; None keeps all.
        recurse: descend into sub-folders (default True); hidden files and folders are skipped.
        folders: names of the sub-folders of `path` to descend into (first level only); include '.'
            to also keep the files lying directly in `path`. Ignored when `recurse=False`.
        followlinks: follow symbolic links to folders (default True); symlink loops are not re-entered.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"get_files: folder '{path}' does not exist (working directory '{os.getcwd()}'). "
            "Check the path, or download the data first, e.g. with untar_data(...)."
        )
    if not path.is_dir():
        raise NotADirectoryError(
            f"get_files expects a folder, got the file '{path}'. Pass its parent folder."
        )
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in listify(extensions)}
    folders = [str(f) for f in listify(folders)]
    res: list[Path] = []
    if recurse:
        top = str(path)
        real_of: dict[str, str] = {}
        for i, (p, d, f) in enumerate(os.walk(top, followlinks=followlinks)):
            if followlinks and i > 0 and _is_loop(p, top, real_of):
                d[:] = []
                continue
            if i == 0 and followlinks:
                real_of[p] = os.path.realpath(p)
            if folders and i == 0:
                d[:] = [o for o in d if o in folders]
            else:
                d[:] = [o for o in d if not o.startswith(".")]
            if folders and i == 0 and "." not in folders:
                continue
            res += _filter_names(p, f, exts)
    else:
        res = _filter_names(path, [e.name for e in os.scandir(path) if e.is_file()], exts)
    return sorted(res, key=str)


def get_image_files(path: PathLike, recurse: bool = True, folders: Names = None) -> list[Path]:
    """Return the image files under `path` (extensions in `image_extensions`), sorted by path."""
    return get_files(path, extensions=image_extensions, recurse=recurse, folders=folders)


class FileGetter(_Callable):
    """Callable that lists the files in `o/suf` with `get_files` (a DataBlock `get_items`)."""

    def __init__(self, suf: str = "", extensions: Names = None, recurse: bool = True, folders: Names = None):
        self.suf, self.extensions, self.recurse, self.folders = suf, extensions, recurse, folders

    def __call__(self, o: PathLike) -> list[Path]:
        """List the matching files under `o/suf`."""
        return get_files(Path(o) / self.suf, self.extensions, self.recurse, self.folders)


class ImageGetter(_Callable):
    """Callable that lists the image files in `o/suf` with `get_image_files`."""

    def __init__(self, suf: str = "", recurse: bool = True, folders: Names = None):
        self.suf, self.recurse, self.folders = suf, recurse, folders

    def __call__(self, o: PathLike) -> list[Path]:
        """List the image files under `o/suf`."""
        return get_image_files(Path(o) / self.suf, self.recurse, self.folders)


# ------------------------------------------------------------------------------------------ labellers
class LabelError(ValueError):
    """A labeller could not label an item; `label_error_context` adds the item's position.

    Attributes: `what` (what went wrong), `item`, `index` (0-based), `total`, `examples` (first items),
    `fix` (how to fix it; a default pointing at the first items is used when None).
    """

    def __init__(
        self,
        what: str,
        item: Any = None,
        index: int | None = None,
        total: int | None = None,
        examples: Sequence[Any] | None = None,
        fix: str | None = None,
    ):
        self.what, self.item, self.index, self.total = what, item, index, total
        self.examples, self.fix = (list(examples) if examples is not None else None), fix
        where = f" (item {index} of {total})" if index is not None else ""
        if fix is None:
            shown = ", ".join(repr(str(e)) for e in self.examples[:3]) if self.examples else ""
            fix = f"Check the pattern against the first items: {shown or '`items[:5]`'}."
        super().__init__(f"{what}{where}. {fix}")

    def __reduce__(self):
        return (type(self), (self.what, self.item, self.index, self.total, self.examples, self.fix))


def label_error_context(
    exc: BaseException, item: Any, index: int, total: int, examples: Sequence[Any] | None = None
) -> LabelError:
    """Return a `LabelError` for `exc` raised while labelling `item` (item `index` of `total`).

    Use as `raise label_error_context(e, o, i, len(items), items[:3]) from e`. A `LabelError` keeps its
    message and gains the position; any other exception becomes a `LabelError` that names its type.
    """
    if isinstance(exc, LabelError):
        return LabelError(exc.what, exc.item, index, total, examples, exc.fix)
    what = f"Labelling {str(item)!r} raised {type(exc).__name__}: {exc}"
    return LabelError(
        what, item, index, total, examples, "Check the labelling function (get_y) on that item."
    )


def parent_label(o: PathLike) -> str:
    """Return the name of the folder that contains `o`."""
    return Path(o).parent.name


class RegexLabeller(_Callable):
    """Label an item with capture group 1 of `pat` matched against `str(o)` ('/' as separator).

    Args:
        pat: regular expression with at least one capture group.
        match: use `re.match` (anchored at the start) instead of `re.search` (default False).

    Raises `LabelError` when nothing matches; see the module docstring for the item position.
    """

    def __init__(self, pat: str, match: bool = False):
        self.pat, self.match = pat, match
        try:
            self._re = re.compile(pat)
        except re.error as e:
            raise ValueError(f"RegexLabeller pattern {pat!r} is not a valid regular expression: {e}.") from e
        if self._re.groups < 1:
            raise ValueError(
                f"RegexLabeller pattern {pat!r} has no capture group; the label is group 1. "
                r"Wrap the label part in parentheses, e.g. r'^(.+)_\d+\.jpg$'."
            )

    def __call__(self, o: Any) -> str:
        """Return group 1 of the pattern matched against `o`."""
        s = str(o).replace(os.sep, "/")
        m = self._re.match(s) if self.match else self._re.search(s)
        if m is None or m.group(1) is None:
            how = "matched nothing" if m is None else "matched but left group 1 empty"
            raise LabelError(f"RegexLabeller pattern '{self.pat}' {how} in {s!r}", item=o)
        return m.group(1)


class UsingAttr(_Callable):
    """Callable computing `f(getattr(o, attr))`, e.g. a labeller applied to a file name only."""

    def __init__(self, f: Callable[[Any], Any], attr: str):
        self.f, self.attr = f, attr

    def __call__(self, o: Any) -> Any:
        """Apply `f` to attribute `attr` of `o`."""
        return self.f(getattr(o, self.attr))


def using_attr(f: Callable[[Any], Any], attr: str) -> UsingAttr:
    """Return a picklable callable that applies `f` to `getattr(o, attr)`."""
    return UsingAttr(f, attr)


def _get_field(o: Any, col: int | str, who: str) -> Any:
    """Read column `col` of a pandas row, dict, namedtuple or sequence."""
    try:
        if isinstance(col, int) and hasattr(o, "iloc"):
            return o.iloc[col]
        if isinstance(col, str) and hasattr(o, "_fields"):
            return getattr(o, col)
        return o[col]
    except (KeyError, IndexError, AttributeError, TypeError) as e:
        names = list(o._fields) if hasattr(o, "_fields") else list(o.keys()) if hasattr(o, "keys") else None
        have = (
            names if names is not None else f"positions 0..{len(o) - 1}" if hasattr(o, "__len__") else "none"
        )
        raise KeyError(f"{who} column {col!r} not found in {type(o).__name__}; available: {have}.") from e


class ColReader(_Callable):
    """Read column(s) `cols` of a row: pandas row, dict, namedtuple or sequence.

    Args:
        cols: column name or position, or a list of them (then a list of values is returned).
        pref: when given, return the string `f'{pref}{value}{suff}'` (a `Path` pref gets a separator).
        suff: when given, appended the same way.
        label_delim: when given, split the cell into a list of labels (an empty or NaN cell gives []).
    """

    def __init__(
        self,
        cols: int | str | Sequence[int | str],
        pref: PathLike = "",
        suff: str = "",
        label_delim: str | None = None,
    ):
        self.cols, self.pref, self.suff, self.label_delim = cols, pref, suff, label_delim
        self._cols = listify(cols)
        self._pref = f"{pref}{os.sep}" if isinstance(pref, Path) else pref

    def _one(self, o: Any, col: int | str) -> Any:
        v = _get_field(o, col, "ColReader")
        if self._pref or self.suff:
            v = f"{self._pref}{v}{self.suff}"
        if self.label_delim is not None:
            if v is None or (isinstance(v, float) and math.isnan(v)) or len(v) == 0:
                return []
            v = v.split(self.label_delim)
        return v

    def __call__(self, o: Any) -> Any:
        """Return the value(s) of the configured column(s) in row `o`."""
        vals = [self._one(o, c) for c in self._cols]
        return vals[0] if len(vals) == 1 else vals


class ItemGetter(_Callable):
    """Callable returning `o[i]`."""

    def __init__(self, i: Any):
        self.i = i

    def __call__(self, o: Any) -> Any:
        """Return element `i` of `o`."""
        return o[self.i]


class AttrGetter(_Callable):
    """Callable returning `getattr(o, nm, default)`."""

    def __init__(self, nm: str, default: Any = None):
        self.nm, self.default = nm, default

    def __call__(self, o: Any) -> Any:
        """Return attribute `nm` of `o`, or `default`."""
        return getattr(o, self.nm, self.default)


# ------------------------------------------------------------------------------------------ splitters
def _check_frac(who: str, name: str, v: float) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1:
        raise ValueError(
            f"{who}: {name}={v!r}, expected a fraction strictly between 0 and 1, e.g. {name}=0.2."
        )


def _perm(n: int, seed: int | None) -> list[int]:
    """Random permutation from a private generator when seeded (global RNG untouched), else the global RNG."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randperm(n, generator=g).tolist()


def _mask_split(mask: Iterable[Any]) -> Split:
    mask = [bool(m) for m in mask]
    return [i for i, m in enumerate(mask) if not m], [i for i, m in enumerate(mask) if m]


class RandomSplitter(_Callable):
    """Put a random `valid_pct` of the items in the validation set; the same split on every call when seeded.

    A seed uses a private `torch.Generator` (same permutation as `torch.manual_seed(seed)` would give,
    without touching the global RNG); `seed=None` draws from the global RNG.
    """

    def __init__(self, valid_pct: float = VALID_PCT, seed: int | None = None):
        _check_frac("RandomSplitter", "valid_pct", valid_pct)
        self.valid_pct, self.seed = valid_pct, seed

    def __call__(self, items: Sized) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        idxs, cut = _perm(len(items), self.seed), int(self.valid_pct * len(items))
        return idxs[cut:], idxs[:cut]


class IndexSplitter(_Callable):
    """Put the items at `valid_idx` in the validation set and the rest, in order, in training."""

    def __init__(self, valid_idx: Iterable[int]):
        self.valid_idx = [int(i) for i in valid_idx]

    def __call__(self, items: Sized) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        n = len(items)
        bad = [i for i in self.valid_idx if not -n <= i < n]
        if bad:
            raise IndexError(f"IndexSplitter: valid_idx {bad[:5]} out of range for {n} items (0..{n - 1}).")
        valid = [i % n for i in self.valid_idx]
        vs = set(valid)
        return [i for i in range(n) if i not in vs], valid


class EndSplitter(_Callable):
    """Put the last (or first, `valid_last=False`) `valid_pct` of the items in the validation set."""

    def __init__(self, valid_pct: float = VALID_PCT, valid_last: bool = True):
        _check_frac("EndSplitter", "valid_pct", valid_pct)
        self.valid_pct, self.valid_last = valid_pct, valid_last

    def __call__(self, items: Sized) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        n = len(items)
        cut = int(self.valid_pct * n)
        idxs = list(range(n))
        return (idxs[: n - cut], idxs[n - cut :]) if self.valid_last else (idxs[cut:], idxs[:cut])


class GrandparentSplitter(_Callable):
    """Split on the grandparent folder name (`path/train/cat/x.jpg`); other items are dropped.

    A list of names gives the items of the first name, then those of the next (fastai's order).
    """

    def __init__(self, train_name: Names = "train", valid_name: Names = "valid"):
        self.train_name, self.valid_name = train_name, valid_name

    def __call__(self, items: Iterable[PathLike]) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        gp = [Path(o).parent.parent.name for o in items]

        def idxs(names: Names) -> list[int]:  # grouped by name, in the order the names are given (fastai's)
            return [i for n in dict.fromkeys(listify(names)) for i, g in enumerate(gp) if g == n]

        return idxs(self.train_name), idxs(self.valid_name)


class FuncSplitter(_Callable):
    """Put the items for which `func(item)` is truthy in the validation set."""

    def __init__(self, func: Callable[[Any], Any]):
        self.func = func

    def __call__(self, items: Iterable[Any]) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        return _mask_split(self.func(o) for o in items)


class MaskSplitter(_Callable):
    """Put the items where the boolean `mask` is True in the validation set."""

    def __init__(self, mask: Sequence[Any]):
        self.mask = mask

    def __call__(self, items: Sized) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        if len(self.mask) != len(items):
            raise ValueError(
                f"MaskSplitter: mask has {len(self.mask)} entries for {len(items)} items; give one per item."
            )
        return _mask_split(self.mask)


class FileSplitter(_Callable):
    """Put the items whose file name is listed in `fname` (one name per line) in the validation set."""

    def __init__(self, fname: PathLike):
        self.fname = fname

    def __call__(self, items: Iterable[PathLike]) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        p = Path(self.fname)
        if not p.is_file():
            raise FileNotFoundError(f"FileSplitter: list of validation file names '{p}' does not exist.")
        names = {line.strip() for line in p.read_text().splitlines() if line.strip()}
        return _mask_split(Path(o).name in names for o in items)


class ColSplitter(_Callable):
    """Split on column `col`: truthy (on=None), in the list `on`, or equal to `on` means validation.

    Works on a pandas DataFrame or on a list of rows (dicts, namedtuples, pandas rows).
    """

    def __init__(self, col: int | str = "is_valid", on: Any = None):
        self.col, self.on = col, on

    def __call__(self, items: Any) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        if hasattr(items, "iloc") and hasattr(items, "columns"):
            if isinstance(self.col, int):
                vals = items.iloc[:, self.col].tolist()
            elif self.col in items.columns:
                vals = items[self.col].tolist()
            else:
                raise KeyError(
                    f"ColSplitter column {self.col!r} not in the DataFrame; available: {list(items.columns)}."
                )
        else:
            vals = [_get_field(o, self.col, "ColSplitter") for o in items]
        if self.on is None:
            return _mask_split(vals)
        if isinstance(self.on, (list, tuple, set)):
            return _mask_split(v in self.on for v in vals)
        return _mask_split(v == self.on for v in vals)


class RandomSubsetSplitter(_Callable):
    """Take random fractions `train_sz` and `valid_sz` of the items (the rest is unused)."""

    def __init__(self, train_sz: float, valid_sz: float, seed: int | None = None):
        _check_frac("RandomSubsetSplitter", "train_sz", train_sz)
        _check_frac("RandomSubsetSplitter", "valid_sz", valid_sz)
        if train_sz + valid_sz > 1:
            raise ValueError(
                f"RandomSubsetSplitter: train_sz + valid_sz = {train_sz + valid_sz:g} > 1; make them sum to at most 1."
            )
        self.train_sz, self.valid_sz, self.seed = train_sz, valid_sz, seed

    def __call__(self, items: Sized) -> Split:
        """Return `(train_idxs, valid_idxs)`."""
        n = len(items)
        n_tr, n_va = int(n * self.train_sz), int(n * self.valid_sz)
        idxs = _perm(n, self.seed)
        return idxs[:n_tr], idxs[n_tr : n_tr + n_va]
