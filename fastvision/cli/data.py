"""The DataLoaders of the image-folder commands (`train`, `lr-find`, `interpret`): labels, split, sizes."""

from __future__ import annotations

import argparse
import csv
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .parser import CLIError

__all__ = ["make_dls", "bad_images_as_cli_errors"]


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
    if labels == "parent":
        kw.update(
            get_items=get_image_files, get_y=parent_label, splitter=RandomSplitter(args.valid_pct, args.seed)
        )
        source: Any = path
    elif labels.startswith("re:"):
        _check_regex(labels[3:])
        kw.update(
            get_items=get_image_files,
            get_y=_NameRegex(labels[3:]),
            splitter=RandomSplitter(args.valid_pct, args.seed),
        )
        source = path
    elif labels.startswith("csv:"):
        rows = _read_csv(Path(labels[4:]) if Path(labels[4:]).is_absolute() else path / labels[4:])
        splitter = (
            ColSplitter("is_valid") if "is_valid" in rows[0] else RandomSplitter(args.valid_pct, args.seed)
        )
        kw.update(
            get_x=ColReader("fname", pref=f"{path}{os.sep}"), get_y=ColReader("label"), splitter=splitter
        )
        source = rows
    else:
        raise CLIError(f"--labels {labels!r} is not 'parent', 're:PATTERN' or 'csv:FILE'.")
    if labels != "csv" and not labels.startswith("csv:") and not get_image_files(path):
        raise CLIError(
            f"no images in '{path}' (looked for .jpg, .png, .gif, .bmp, .tif, .webp, recursively)."
        )
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
            f"no full training batch: {n_train} training images and --bs {args.bs}. Use --bs {max(1, n_train // 2)} "
            "or less."
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


def _read_csv(file: Path) -> list[dict[str, str]]:
    if not file.is_file():
        raise CLIError(f"no such CSV file '{file}'.")
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"fname", "label"} <= set(rows[0]):
        raise CLIError(f"'{file}' needs a header with columns fname,label (and optionally is_valid).")
    for r in rows:
        if "is_valid" in r:
            r["is_valid"] = r["is_valid"].strip().lower() in ("1", "true", "yes")
    return rows


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
