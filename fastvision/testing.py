"""Helpers that build tiny synthetic datasets for tests, docs and the demo's fallback (no network)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["CLASS_COLOURS", "make_image_folder", "make_tensor_data"]

CLASS_COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 200, 30), (200, 40, 200), (30, 200, 210)]


def make_image_folder(
    path: str | Path,
    classes: Sequence[str] = ("cat", "dog"),
    n_per_class: int = 4,
    layout: str = "parent",
    sizes: Sequence[tuple[int, int]] = ((48, 40), (40, 56), (64, 64), (36, 30)),
    ext: str = ".jpg",
    valid_per_class: int = 1,
    seed: int = 0,
) -> Path:
    """Write small images whose colour depends on the class, so a tiny CNN learns them in one epoch.

    Args:
        path: folder to create.
        classes: class names (colours cycle through `CLASS_COLOURS`).
        n_per_class: images per class (per split for `layout='train_valid'`, where valid gets
            `valid_per_class`).
        layout: 'parent' (`path/<class>/<class>_<i>.jpg`), 'name' (`path/<class>_<i>.jpg`, Pets style) or
            'train_valid' (`path/train/<class>/...` and `path/valid/<class>/...`).
        sizes: (width, height) pairs cycled through, so images have mixed sizes.
        ext: file extension, which picks the format ('.jpg', '.png', ...).
        valid_per_class: images per class in `valid/` for `layout='train_valid'`.
        seed: seed of the noise added to each image.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    if layout == "train_valid":
        splits = [("train", n_per_class), ("valid", valid_per_class)]
    elif layout in ("parent", "name"):
        splits = [("", n_per_class)]
    else:
        raise ValueError(f"layout={layout!r} is not one of 'parent', 'name', 'train_valid'.")
    for split, n in splits:
        for ci, cls in enumerate(classes):
            colour = np.array(CLASS_COLOURS[ci % len(CLASS_COLOURS)], dtype=np.float32)
            folder = path / split / cls if layout != "name" else path
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = sizes[(i + ci) % len(sizes)]
                noise = rng.normal(0, 12, (h, w, 3))
                arr = np.clip(colour[None, None] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{cls}_{i}{ext}")
    return path


def make_tensor_data(
    n: int = 64, n_classes: int = 3, size: int = 28, channels: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(x, y)`: float images N x C x size x size whose mean brightness encodes the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    base = (y.float() + 0.5) / n_classes
    x = base[:, None, None, None] + 0.05 * torch.randn(n, channels, size, size, generator=g)
    return x.clamp(0, 1), y
