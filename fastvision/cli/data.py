"""The DataLoaders of the image-folder commands (`train`, `lr-find`, `interpret`): labels, split, sizes."""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .parser import CLIError, no_images

__all__ = ["make_dls", "valid_images", "bad_images_as_cli_errors"]


def make_dls(args: argparse.Namespace, aug: bool = True) -> Any:
    """Build DataLoaders from the command's folder, label rule, sizes and split.

    `aug`: for training (batch augmentation unless --no-aug, and the checks that training needs: two classes
    or more, one full batch); False for `interpret`.
    """
    from ..data.block import CategoryBlock, DataBlock
    from ..data.items import (
        ColReader,
        ColSplitter,
        RandomSplitter,
        get_image_files,
        parent_label,
    )
    from ..vision.augment import aug_transforms
    from ..vision.block import ImageBlock
    from ..vision.resize import Resize

    path = Path(args.path)
    if path.is_file():
        raise CLIError(f"'{path}' is a file; give the folder that holds your images (e.g. '{path.parent}').")
    if not path.is_dir():
        raise CLIError(f"no such folder '{path}'. Give the folder that holds your images.")
    presize = args.presize or round(args.size * 460 / 224)
    batch_tfms = aug_transforms(size=args.size, min_scale=0.75) if aug and not args.no_aug else []
    item_tfms = [Resize(presize if batch_tfms else args.size)]
    kw: dict[str, Any] = dict(blocks=(ImageBlock, CategoryBlock), item_tfms=item_tfms, batch_tfms=batch_tfms)
    labels = args.labels
    valid_folder = _valid_folder(path, args)
    folders = None if valid_folder is None else _FolderSplit(path, valid_folder)
    split: Any = RandomSplitter(args.valid_pct, args.seed) if folders is None else folders
    get_items: Any = get_image_files if folders is None else folders.items
    if labels == "parent":
        kw.update(get_items=get_items, get_y=parent_label, splitter=split)
        source: Any = path
    elif labels.startswith("re:"):
        _check_regex(labels[3:])
        kw.update(get_items=get_items, get_y=_NameRegex(labels[3:]), splitter=split)
        source = path
    elif labels.startswith("csv:"):
        rows = _read_csv(_csv_file(labels[4:], path), path, getattr(args, "on_bad_image", None))
        splitter = (
            ColSplitter("is_valid") if "is_valid" in rows[0] else RandomSplitter(args.valid_pct, args.seed)
        )
        kw.update(
            get_x=ColReader("fname", pref=f"{path}{os.sep}"), get_y=ColReader("label"), splitter=splitter
        )
        source = rows
    else:
        raise CLIError(f"--labels {labels!r} is not 'parent', 're:PATTERN' or 'csv:FILE'.")
    if labels.startswith("csv:"):
        _check_csv_split(rows, labels[4:], args.valid_pct)
    else:
        files = get_image_files(path)
        if not files:
            raise no_images(path)
        if valid_folder is None:
            _check_valid_pct(args.valid_pct, len(files))
        else:
            _report_folder_split(path, valid_folder, files)
    try:
        dls = DataBlock(**kw).dataloaders(
            source,
            bs=args.bs,
            num_workers=args.num_workers,
            seed=args.seed,
            path=path,
            on_bad_image=getattr(args, "on_bad_image", "raise"),
        )
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    n_train, n_valid = len(dls.train_ds), len(dls.valid_ds)
    vocab = list(dls.vocab or [])
    if aug and len(vocab) < 2:  # training (interpret may evaluate a model on one class's images)
        how = {
            "parent": "put each class's images in a folder of its own under it",
            "re": "check that the pattern's group captures the class part of the names",
            "csv": "check the CSV's label column",
        }[labels.split(":")[0] if ":" in labels else labels]
        raise CLIError(
            f"--labels {labels} gives one class ({vocab[0] if vocab else 'none'!r}) for the {len(dls.train_ds) + n_valid} "
            f"images in '{path}': a classifier needs two or more; {how}."
        )
    if n_valid == 0:
        raise CLIError(
            f"the validation set is empty ({n_train} images, --valid-pct {args.valid_pct}). Raise --valid-pct "
            "or add images."
        )
    if aug and len(dls.train) == 0:
        raise CLIError(
            f"no full training batch: {n_train} training images and --bs {args.bs}. Use a --bs of at most "
            f"{n_train}, or add images."
        )
    return dls


def _check_regex(pat: str) -> None:
    """Refuse an invalid pattern, or one without the capture group that holds the label."""
    try:
        groups = re.compile(pat).groups
    except re.error as e:
        raise CLIError(f"--labels 're:{pat}' is not a valid regular expression: {e}.") from None
    if groups < 1:
        raise CLIError(
            f"--labels 're:{pat}' has no capture group: put the label part in parentheses, e.g. "
            "'re:(.+)_\\d+\\.jpg$'."
        )


class _NameRegex:
    """Label = group 1 of a regex on the file name (picklable, for worker processes)."""

    def __init__(self, pat: str):
        from ..data.items import RegexLabeller

        self.labeller = RegexLabeller(pat)

    def __call__(self, o: Path) -> str:
        return self.labeller(Path(o).name)


class _FolderSplit:
    """The images under `root/train` (training) and `root/<valid>` (validation), as items and as a splitter.

    Picklable (worker processes); images in other folders are not items at all, so their labels are not read.
    """

    def __init__(self, root: Path, valid: str):
        self.root, self.valid = root, valid

    def items(self, source: Any = None) -> list[Path]:
        """The image files of both folders, training first."""
        from ..data.items import get_image_files

        return [*get_image_files(self.root / "train"), *get_image_files(self.root / self.valid)]

    def __call__(self, items: list) -> tuple[list[int], list[int]]:
        top = [Path(o).relative_to(self.root).parts[0] for o in items]
        return [i for i, t in enumerate(top) if t == "train"], [
            i for i, t in enumerate(top) if t == self.valid
        ]

    def __repr__(self) -> str:
        return f"the folders train/ and {self.valid}/"


def _valid_folder(path: Path, args: argparse.Namespace) -> str | None:
    """The validation folder of a by-folder split (`--valid-folder`), or None for a random split."""
    name = getattr(args, "valid_folder", "none")
    if name == "none":
        return None
    if args.labels.startswith("csv:"):
        if name == "auto":
            return None  # the CSV's is_valid column, or --valid-pct
        raise CLIError(
            f"--valid-folder {name} and --labels {args.labels} both set the split: use the CSV's is_valid column "
            "(or --valid-pct), or label by folder or name."
        )
    if name == "auto":
        found = [n for n in ("valid", "val") if (path / n).is_dir()]
        return found[0] if (path / "train").is_dir() and found else None
    missing = [f"{n}/" for n in ("train", name) if not (path / n).is_dir()]
    if missing:
        have = sorted(p.name for p in path.iterdir() if p.is_dir())[:8]
        raise CLIError(
            f"--valid-folder {name}: '{path}' has no {' and no '.join(missing)} folder (it has: "
            f"{', '.join(have) or 'no folders'}). Name the validation folder, or --valid-folder none to split at "
            "random."
        )
    return name


def _report_folder_split(path: Path, valid: str, files: list) -> None:
    """Say how the folders split the images; refuse a split that leaves a side empty."""
    split = _FolderSplit(path, valid)(files)
    n_train, n_valid = len(split[0]), len(split[1])
    if not n_train or not n_valid:
        empty = "train/" if not n_train else f"{valid}/"
        raise CLIError(
            f"'{path / empty}' holds no images: the split by folder needs images in both train/ and {valid}/."
        )
    rest = len(files) - n_train - n_valid
    other = f"; {rest} image{'s' * (rest != 1)} in other folders not used" if rest else ""
    from ..distributed import rank_distrib

    if rank_distrib() == 0:  # under torchrun every process builds the loaders; one reports
        print(
            f"split by folder: {n_train} training images in train/, {n_valid} validation images in {valid}/{other}"
        )


def valid_images(dls: Any, args: argparse.Namespace) -> list[Path]:
    """The image files of the validation set `make_dls` built (a CSV's items are its lines, not paths)."""
    items = list(dls.valid_ds.items)
    if args.labels.startswith("csv:"):
        return [Path(args.path) / r["fname"] for r in items]
    return [Path(o) for o in items]


def _check_valid_pct(valid_pct: float, n: int) -> None:
    """Refuse a --valid-pct that leaves no validation image among `n` (the split rounds down)."""
    if int(valid_pct * n) == 0:
        need = math.ceil(100 / n) / 100
        raise CLIError(
            f"--valid-pct {valid_pct} of {n} images leaves no validation image (the split rounds down): use "
            f"--valid-pct {need:g} or more, or add images."
        )


def _check_csv_split(rows: list[dict[str, Any]], name: str, valid_pct: float) -> None:
    """Refuse an is_valid column that leaves the training or the validation set empty."""
    if "is_valid" not in rows[0]:
        _check_valid_pct(valid_pct, len(rows))
        return
    n_valid = sum(r["is_valid"] for r in rows)
    if n_valid in (0, len(rows)):
        which = "validation" if n_valid == 0 else "training"
        raise CLIError(
            f"'{name}' puts all {len(rows)} images in the {'training' if n_valid == 0 else 'validation'} set "
            f"(is_valid is {'false' if n_valid == 0 else 'true'} on every line), so the {which} set is empty. "
            "Mark some lines the other way, or drop the is_valid column to split at random with --valid-pct."
        )


def _csv_file(spec: str, folder: Path) -> Path:
    """The CSV `--labels csv:FILE` names: as given when absolute, else in the image folder, else here."""
    given = Path(spec)
    if given.is_absolute():
        candidates = [given]
    else:
        candidates = [folder / given, given]
    for c in candidates:
        if c.is_file():
            return c
    where = (
        ""
        if given.is_absolute()
        else f" (looked in the image folder '{folder}' and in the current directory)"
    )
    raise CLIError(f"no such CSV file '{spec}'{where}.")


_TRUE, _FALSE = ("1", "true", "yes", "y"), ("0", "false", "no", "n", "")


def _read_csv(file: Path, folder: Path, on_bad_image: str | None = None) -> list[dict[str, Any]]:
    """Read and check a labels CSV: header `fname,label[,is_valid]`, one row per image of `folder`.

    Refuses empty names or labels, `is_valid` values other than yes/no words, an image named twice with
    different labels or splits, and names of missing files (left out with one warning when `on_bad_image`
    is 'skip'; None: the command has no --on-bad-image). A UTF-8 byte-order mark (spreadsheet exports) is
    ignored.
    """
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, r) for r in reader]  # the line a row ends on (blank lines are skipped)
            header = [h.strip() for h in reader.fieldnames or []]
    except (UnicodeDecodeError, csv.Error) as e:
        raise CLIError(f"cannot read '{file}' as a UTF-8 CSV: {e}. Save it as CSV (UTF-8).") from None
    if not {"fname", "label"} <= set(header):
        raise CLIError(
            f"'{file}' needs a header with columns fname,label (and optionally is_valid); its header is "
            f"{','.join(header) if header else 'empty'}."
        )
    if not rows:
        raise CLIError(f"'{file}' has a header and no rows: add one row per image.")
    seen: dict[str, tuple[int, Any, Any]] = {}
    missing: list[str] = []
    kept = []
    for line, raw in rows:
        r: dict[str, Any] = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not r["fname"] or not r["label"]:
            empty = "fname" if not r["fname"] else "label"
            raise CLIError(f"'{file}' line {line}: the {empty} is empty. Fill it in or remove the line.")
        if "is_valid" in r:
            v = r["is_valid"].lower()
            if v not in _TRUE + _FALSE:
                raise CLIError(
                    f"'{file}' line {line}: is_valid is {r['is_valid']!r}; expected 1/0, true/false or yes/no."
                )
            r["is_valid"] = v in _TRUE
        first = seen.setdefault(r["fname"], (line, r["label"], r.get("is_valid")))
        if first[0] != line and first[1:] != (r["label"], r.get("is_valid")):
            raise CLIError(
                f"'{file}' names {r['fname']!r} on lines {first[0]} and {line} with different labels or splits "
                f"({first[1]!r}, {r['label']!r}). Keep one line per image."
            )
        if not (folder / r["fname"]).is_file():
            missing.append(f"line {line} '{r['fname']}'")
            continue
        kept.append(r)
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        if on_bad_image != "skip" or not kept:
            raise CLIError(
                f"'{file}' names {len(missing)} file(s) not in '{folder}': {listed}. fname is relative to the "
                "image folder; fix the names or remove those lines"
                + (", or add --on-bad-image skip to leave them out." if on_bad_image == "raise" else ".")
            )
        warnings.warn(
            f"left out {len(missing)} CSV line(s) naming files not in '{folder}': {listed}.", stacklevel=2
        )
    return kept


@contextmanager
def bad_images_as_cli_errors(then: Callable[[], str] = str, skip_option: bool = True) -> Iterator[None]:
    """Turn an undecodable image met while loading batches into a one-line `CLIError` with the command's fix.

    `then()` is appended to the message (e.g. how to continue the interrupted run; called when it fails);
    `skip_option`: the command has `--on-bad-image skip` to offer.
    """
    from ..vision.image import ImageLoadError, ImageNotFoundError

    try:
        yield
    except ImageLoadError as e:
        fix = "Restore it or remove it" if isinstance(e, ImageNotFoundError) else "Replace or remove it"
        if skip_option:
            fix += ", or add --on-bad-image skip to leave unreadable images out (one warning lists them)"
        raise CLIError(f"cannot read image '{e.path}': {e.reason}. {fix}.{then()}") from e
